"""The `synthesize` stage: the synthetic default written in the real raw formats (HC-STVG v1/v2, VidSTG)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import decord
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from cgstvg.data.synthetic import (
    COLOURS,
    SceneConfig,
    SynthesizeConfig,
    make_clip,
    write_mp4,
    write_synthetic_dataset,
)
from pipeline import synthesize

TINY = {
    "seed": 7,
    "frames": 16,
    "height": 48,
    "width": 64,
    "clips": {
        "hcstvg_v1": {"train": 4, "test": 2},
        "hcstvg_v2": {"train": 2, "val": 2},
        "vidstg": {"train": 2, "val": 3, "test": 2},
    },
}
T, H, W = TINY["frames"], TINY["height"], TINY["width"]
SCENE = SceneConfig(frames=T, height=H, width=W)


def run_stage(tmp: Path, name: str, workers: int, **overrides) -> Path:
    params = tmp / f"{name}.yaml"
    params.write_text(yaml.safe_dump({"synthesize": {**TINY, **overrides}}))
    out = tmp / name
    synthesize.main(["--out", str(out), "--params", str(params), "--workers", str(workers), "--no-progress"])
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The tiny dataset three times: twice with the same seed (pool and in-process), once with another seed."""
    tmp = tmp_path_factory.mktemp("synth")
    return {
        "a": run_stage(tmp, "a", workers=2),
        "b": run_stage(tmp, "b", workers=1),
        "other_seed": run_stage(tmp, "c", workers=1, seed=8),
    }


def load(path: Path):
    return json.loads(path.read_text())


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def frames_of(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def assert_xywh_inside(box, width, height):
    x, y, w, h = box
    assert all(isinstance(v, int) for v in box)
    assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width and y + h <= height, box


def test_layout(built):
    root = built["a"]
    assert sorted(p.name for p in root.iterdir()) == ["clips.parquet", "hcstvg_v1", "hcstvg_v2", "meta.json", "vidstg"]
    assert sorted(p.name for p in (root / "hcstvg_v1" / "annos").iterdir()) == ["test.json", "train.json"]
    assert sorted(p.name for p in (root / "hcstvg_v2" / "annos").iterdir()) == ["train.json", "val.json"]
    assert sorted(p.name for p in (root / "vidstg" / "sent_annos").iterdir()) == [
        "test_annotations.json",
        "train_annotations.json",
        "val_annotations.json",
    ]
    assert len(list((root / "hcstvg_v1" / "videos").glob("*.mp4"))) == 6
    assert len(list((root / "vidstg" / "bbox_annos").glob("*.json"))) == 7
    assert not list(root.parent.glob(".a.*")), "the temporary build folder was left behind"


def test_hcstvg_v1_round_trip(built):
    root = built["a"]
    for split, count in TINY["clips"]["hcstvg_v1"].items():
        annos = load(root / "hcstvg_v1" / "annos" / f"{split}.json")
        assert isinstance(annos, dict) and len(annos) == count
        for index, (key, rec) in enumerate(annos.items()):
            assert key.endswith(".mp4") and (root / "hcstvg_v1" / "videos" / key).is_file()
            assert set(rec) == {"bbox", "st_frame", "st_time", "ed_time", "img_num", "caption", "width", "height"}
            assert (rec["img_num"], rec["width"], rec["height"]) == (T, W, H)
            assert isinstance(rec["st_frame"], int)
            assert isinstance(rec["st_time"], float) and isinstance(rec["ed_time"], float)
            start = rec["st_frame"] - 1  # 1-based in the file
            end = start + len(rec["bbox"]) - 1
            assert 0 <= start <= end < T
            assert 0.3 * T - 1 <= len(rec["bbox"]) <= 0.6 * T + 1
            fps = T / 20  # HC-STVG: every clip lasts 20 s
            assert rec["st_time"] == pytest.approx(start / fps) and rec["ed_time"] == pytest.approx((end + 1) / fps)
            assert rec["caption"][0].isupper() and rec["caption"].endswith(".")
            for box in rec["bbox"]:
                assert_xywh_inside(box, W, H)
            # The file holds exactly the generator's GT: its window and the target's boxes over it.
            clip = make_clip(TINY["seed"], "hcstvg_v1", split, index, SCENE)
            assert clip.gt == (start, end)
            xyxy = clip.target_boxes[start : end + 1]
            assert rec["bbox"] == [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in xyxy.tolist()]


def test_hcstvg_v2_uses_raw_v2_keys(built):
    for split, count in TINY["clips"]["hcstvg_v2"].items():
        annos = load(built["a"] / "hcstvg_v2" / "annos" / f"{split}.json")
        assert len(annos) == count
        for key, rec in annos.items():
            assert set(rec) == {"bbox", "st_frame", "st_time", "ed_time", "img_num", "English", "img_size"}
            assert rec["img_size"] == [H, W]  # [height, width]
            assert rec["English"].endswith(".") and rec["st_frame"] >= 1
            assert rec["st_frame"] - 1 + len(rec["bbox"]) <= rec["img_num"] == T
            for box in rec["bbox"]:
                assert_xywh_inside(box, W, H)
            assert (built["a"] / "hcstvg_v2" / "videos" / key).is_file()


def test_vidstg_round_trip(built):
    root = built["a"]
    for split, count in TINY["clips"]["vidstg"].items():
        entries = load(root / "vidstg" / "sent_annos" / f"{split}_annotations.json")
        assert isinstance(entries, list) and len(entries) == count
        for entry in entries:
            assert set(entry) == {
                "vid", "fps", "frame_count", "width", "height", "subject/objects", "used_segment", "used_relation",
                "temporal_gt", "captions", "questions",
            }  # fmt: skip
            assert (entry["frame_count"], entry["width"], entry["height"], entry["fps"]) == (T, W, H, 10.0)
            seg, gt = entry["used_segment"], entry["temporal_gt"]
            assert 0 <= seg["begin_fid"] <= gt["begin_fid"] <= gt["end_fid"] <= seg["end_fid"] < T
            tids = [o["tid"] for o in entry["subject/objects"]]
            assert tids == sorted(tids) == list(range(len(tids)))
            assert tids
            assert all(o["category"] in ("circle", "square", "triangle") for o in entry["subject/objects"])
            rel = entry["used_relation"]
            assert set(rel) == {"subject_tid", "object_tid", "predicate", "begin_fid", "end_fid"}
            assert (rel["begin_fid"], rel["end_fid"]) == (gt["begin_fid"], gt["end_fid"])
            (cap,), (que,) = entry["captions"], entry["questions"]
            for sentence in (cap, que):
                assert set(sentence) == {"description", "type", "target_id"}
                assert sentence["type"] == "object" and sentence["target_id"] == rel["subject_tid"] in tids
            assert cap["description"].endswith(".") and que["description"].endswith("?")

            box_file = load(root / "vidstg" / "bbox_annos" / f"{entry['vid']}.json")
            assert set(box_file) == {
                "version", "video_id", "video_path", "frame_count", "fps", "width", "height", "subject/objects",
                "trajectories", "relation_instances",
            }  # fmt: skip
            assert box_file["video_id"] == entry["vid"]
            assert (root / "vidstg" / "videos" / box_file["video_path"]).is_file()
            assert (box_file["frame_count"], box_file["width"], box_file["height"]) == (T, W, H)
            assert box_file["subject/objects"] == entry["subject/objects"]
            assert box_file["relation_instances"] == [rel]
            assert len(box_file["trajectories"]) == T
            for frame in box_file["trajectories"]:  # every object in every frame, as in VidOR
                assert sorted(b["tid"] for b in frame) == tids
                for b in frame:
                    assert set(b) == {"tid", "bbox", "generated", "tracker"}
                    x1, y1, x2, y2 = (b["bbox"][k] for k in ("xmin", "ymin", "xmax", "ymax"))
                    assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H

            index = int(entry["vid"].rsplit("_", 1)[1])
            clip = make_clip(TINY["seed"], "vidstg", split, index, SCENE)
            assert clip.gt == (gt["begin_fid"], gt["end_fid"])
            target = [b for b in box_file["trajectories"][gt["begin_fid"]] if b["tid"] == cap["target_id"]][0]["bbox"]
            assert [target[k] for k in ("xmin", "ymin", "xmax", "ymax")] == clip.target_boxes[gt["begin_fid"]].tolist()


def test_videos_decode_to_the_annotated_size(built):
    root = built["a"]
    for dataset in ("hcstvg_v1", "hcstvg_v2"):
        for split in TINY["clips"][dataset]:
            for key, rec in load(root / dataset / "annos" / f"{split}.json").items():
                reader = decord.VideoReader(str(root / dataset / "videos" / key))
                assert len(reader) == rec["img_num"]
                assert reader[0].shape == (H, W, 3)
                assert reader.get_avg_fps() == pytest.approx(rec["img_num"] / 20)
    for split in TINY["clips"]["vidstg"]:
        for entry in load(root / "vidstg" / "sent_annos" / f"{split}_annotations.json"):
            reader = decord.VideoReader(str(root / "vidstg" / "videos" / f"{entry['vid']}.mp4"))
            assert (len(reader), *reader[0].shape) == (entry["frame_count"], entry["height"], entry["width"], 3)
            assert reader.get_avg_fps() == pytest.approx(entry["fps"])


def test_named_colour_is_what_the_video_shows_in_the_gt_box(built):
    """Decode each HC-STVG v1 video; at the centre of the target's box in a GT frame (where no object drawn
    later covers it) the nearest palette colour must be the colour the caption names."""
    root = built["a"]
    palette = {name: np.array(rgb) for name, rgb in COLOURS.items()}
    checked = 0
    for split in TINY["clips"]["hcstvg_v1"]:
        for index, (key, rec) in enumerate(load(root / "hcstvg_v1" / "annos" / f"{split}.json").items()):
            (named,) = [c for c in COLOURS if re.search(rf"\b{c}\b", rec["caption"].lower())]
            clip = make_clip(TINY["seed"], "hcstvg_v1", split, index, SCENE)
            video = frames_of(root / "hcstvg_v1" / "videos" / key)
            scene = clip.scene
            above = scene.z_order[scene.z_order.index(scene.target) + 1 :]
            start = rec["st_frame"] - 1
            for offset, (x, y, w, h) in enumerate(rec["bbox"]):
                cx, cy = x + w // 2, y + h // 2
                covers = clip.boxes[above, start + offset]
                if any(b[0] - 2 <= cx < b[2] + 2 and b[1] - 2 <= cy < b[3] + 2 for b in covers):
                    continue
                pixel = np.median(video[start + offset, cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3), axis=0)
                seen = min(palette, key=lambda c: np.linalg.norm(palette[c] - pixel))
                assert seen == named, f"{key} frame {start + offset}: caption says {named}, video shows {seen} {pixel}"
                checked += 1
                break
    assert checked >= 5


def test_same_seed_is_byte_identical_and_another_seed_differs(built):
    a, b, c = tree(built["a"]), tree(built["b"]), tree(built["other_seed"])
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == []  # also shows the worker count does not matter
    assert a.keys() == c.keys()
    for name in (
        "hcstvg_v1/annos/train.json",
        "vidstg/sent_annos/val_annotations.json",
        "hcstvg_v1/videos/synth_train_00000.mp4",
    ):
        assert a[name] != c[name], name


def test_mp4_bytes_do_not_vary_between_encodes(tmp_path):
    """Encoding the same frames again gives the same bytes, even with another heap layout. (With x264's mbtree
    on, 4 of 8 clips at 48x64 gave two or more different files over 20 encodes.)"""
    rng, ballast = np.random.default_rng(0), []
    for index in range(4):
        frames = make_clip(TINY["seed"], "hcstvg_v1", "train", index, SCENE).frames
        outputs = set()
        for _attempt in range(12):
            ballast.append(np.empty(int(rng.integers(1, 5000)), np.uint8))  # move later allocations around
            write_mp4(tmp_path / "clip.mp4", frames, 0.8)
            outputs.add((tmp_path / "clip.mp4").read_bytes())
        assert len(outputs) == 1, f"clip {index}: {len(outputs)} different encodings"


def test_a_clip_does_not_depend_on_the_split_size(built, tmp_path):
    config = SynthesizeConfig(seed=TINY["seed"], scene=SCENE, clips={"hcstvg_v1": {"train": 2}})
    write_synthetic_dataset(tmp_path, config, workers=1, progress=False)
    for name in ("synth_train_00000.mp4", "synth_train_00001.mp4"):
        video = Path("hcstvg_v1") / "videos" / name
        assert (tmp_path / video).read_bytes() == (built["a"] / video).read_bytes()
    small = load(tmp_path / "hcstvg_v1" / "annos" / "train.json")
    full = load(built["a"] / "hcstvg_v1" / "annos" / "train.json")
    assert small == {k: full[k] for k in small}


def test_clip_table_and_meta(built):
    table = pq.read_table(built["a"] / "clips.parquet").to_pylist()
    assert len(table) == sum(n for splits in TINY["clips"].values() for n in splits.values())
    for row in table:
        assert row["hard"] == (row["same_colour"] and row["same_shape"])
        assert row["colour"] in row["caption"]
        assert 0 <= row["gt_start"] <= row["gt_end"] < T
    meta = load(built["a"] / "meta.json")
    assert meta["seed"] == TINY["seed"] and meta["clips"] == TINY["clips"]


def test_stage_replaces_its_output_and_names_the_params_file_on_bad_keys(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"synthesize": {**TINY, "clips": {"hcstvg_v1": {"test": 1}}}}))
    synthesize.main(["--out", str(out), "--params", str(params), "--workers", "1", "--no-progress"])
    assert not (out / "stale.txt").exists() and (out / "hcstvg_v1" / "annos" / "test.json").is_file()

    params.write_text(yaml.safe_dump({"synthesize": {**TINY, "colour_count": 3}}))
    with pytest.raises(ValueError, match=r"p\.yaml.*colour_count"):
        synthesize.main(["--out", str(out), "--params", str(params)])
    params.write_text(yaml.safe_dump({"synthesize": {**TINY, "width": 63}}))
    with pytest.raises(ValueError, match=r"p\.yaml.*even"):
        synthesize.main(["--out", str(out), "--params", str(params)])
    params.write_text(yaml.safe_dump({"synthesize": {**TINY, "clips": {"vidstg": {"dev": 2}}}}))
    with pytest.raises(ValueError, match=r"p\.yaml.*unknown split 'dev'"):
        synthesize.main(["--out", str(out), "--params", str(params)])
    assert (out / "hcstvg_v1" / "annos" / "test.json").is_file(), "a failed run must leave the old output in place"
