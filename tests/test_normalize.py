"""Stage normalize: round trips per raw format, every reject reason, malformed files, determinism."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from cgstvg.data.normalize import normalize, reconciliation, write_outputs
from cgstvg.data.pairs import SplitPairs
from cgstvg.data.raw_json import AnnotationError
from cgstvg.data.schema import REJECT_SCHEMA, SAMPLE_SCHEMA, RejectReason
from pipeline import normalize as stage

# ---------------------------------------------------------------------------------------------- raw-file builders


def put(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def hc_v1(**changes) -> dict:
    """A valid HC-STVG v1 record: 3 boxes from st_frame 11 (1-based) in a 100-frame 64x48 clip."""
    record = {
        "bbox": [[10, 20, 30, 10], [12, 22, 30, 10], [14, 24, 30, 10]],
        "st_time": 2.0,
        "ed_time": 2.6,
        "img_num": 100,
        "caption": "The man in red turns around.",
        "width": 64,
        "height": 48,
        "st_frame": 11,
    }
    record.update(changes)
    return record


def hc_v2_raw(**changes) -> dict:
    """The same record with the raw v2 keys: English, img_size = [height, width]."""
    record = hc_v1()
    record["English"] = record.pop("caption")
    record["img_size"] = [record.pop("height"), record.pop("width")]
    record.update(changes)
    return record


def hc_tree(root: Path, dataset: str, split: str, records: dict, videos: list[str] | None = None) -> None:
    put(root / dataset / "annos" / f"{split}.json", records)
    for key in records if videos is None else videos:
        touch(root / dataset / "videos" / key)


def vid_entry(vid: str = "5000", **changes) -> dict:
    """A valid VidSTG entry: 40 frames, used_segment 5..30, temporal_gt 10..20, target tid 1."""
    entry = {
        "vid": vid,
        "fps": 29.97,
        "frame_count": 40,
        "used_segment": {"begin_fid": 5, "end_fid": 30},
        "width": 64,
        "height": 48,
        "subject/objects": [{"tid": 0, "category": "adult"}, {"tid": 1, "category": "dog"}],
        "used_relation": {"subject_tid": 1, "object_tid": 0, "predicate": "chase", "begin_fid": 10, "end_fid": 20},
        "temporal_gt": {"begin_fid": 10, "end_fid": 20},
        "captions": [{"description": "a dog chases a man.", "type": "object", "target_id": 1}],
        "questions": [{"description": "what chases a man?", "type": "object", "target_id": 1}],
    }
    entry.update(changes)
    return entry


def box_at(tid: int, frame: int) -> dict:
    return {"tid": tid, "bbox": {"xmin": frame, "ymin": 2 * tid, "xmax": frame + 10, "ymax": 2 * tid + 8}}


def vidor_file(frame_count: int = 40, tids=(0, 1), skip: dict | None = None, **extra) -> dict:
    """A VidOR box file with a box for every tid in every frame, except the (tid, frame) pairs in `skip`."""
    skip = skip or {}
    trajectories = [[box_at(tid, f) for tid in tids if f not in skip.get(tid, ())] for f in range(frame_count)]
    return {"version": "VERSION 1.0", "frame_count": frame_count, "trajectories": trajectories, **extra}


def vid_tree(root: Path, split: str, entries: list[dict], box_files: dict | None = None, videos=None) -> None:
    put(root / "vidstg" / "sent_annos" / f"{split}_annotations.json", entries)
    box_files = {e["vid"]: vidor_file() for e in entries} if box_files is None else box_files
    for vid, content in box_files.items():
        put(root / "vidstg" / "bbox_annos" / f"{vid}.json", content)
    for name in {f"{e['vid']}.mp4" for e in entries} if videos is None else videos:
        touch(root / "vidstg" / "videos" / name)


def run(root: Path, datasets: list[str]) -> dict[tuple[str, str], SplitPairs]:
    results = normalize(root, datasets)
    lines, ok = reconciliation(results)
    assert ok, lines
    return {(r.dataset, r.split): r for r in results}


def only_reject(result: SplitPairs) -> dict:
    assert len(result.rejects) == 1, result.rejects
    return result.rejects[0]


# ---------------------------------------------------------------------------------------------------- round trips


def written(tmp_path: Path, results, dataset: str, split: str) -> list[dict]:
    out = tmp_path / "out"
    write_outputs(list(results.values()), out)
    table = pq.read_table(out / dataset / f"{split}.parquet")
    assert table.schema.equals(SAMPLE_SCHEMA)
    return table.to_pylist()


EXPECTED_HC_BOXES = [[10, 20, 40, 30], [12, 22, 42, 32], [14, 24, 44, 34]]  # xywh + xy = xyxy


@pytest.mark.parametrize(
    "dataset, split, record",
    [("hcstvg_v1", "train", hc_v1()), ("hcstvg_v2", "train", hc_v2_raw()), ("hcstvg_v2", "val", hc_v1())],
    ids=["v1", "v2-raw-keys", "v2-v1-style"],
)
def test_hcstvg_round_trip(tmp_path, dataset, split, record):
    root = tmp_path / "raw"
    hc_tree(root, dataset, split, {"55_vfjywN5CN0Y.mp4": record})
    (row,) = written(tmp_path, run(root, [dataset]), dataset, split)
    boxes = row.pop("boxes")
    assert row == {
        "dataset": dataset,
        "split": split,
        "sample_id": "55_vfjywN5CN0Y",
        "video_id": "55_vfjywN5CN0Y",
        "video_path": f"{dataset}/videos/55_vfjywN5CN0Y.mp4",
        "sentence": "The man in red turns around.",
        "qtype": "declar",
        "width": 64,
        "height": 48,
        "fps": 5.0,  # img_num / 20
        "fps_source": "img_num/20",
        "frame_count": 100,
        "segment_start": 0,
        "segment_end": 99,
        "tube_start": 10,  # st_frame 11 is 1-based
        "tube_end": 12,  # inclusive: 3 boxes
        "target_id": None,
        "source": f"{dataset}/annos/{split}.json#55_vfjywN5CN0Y.mp4",
    }
    assert boxes == EXPECTED_HC_BOXES


def test_hcstvg_boxes_clipped_to_frame_and_caption_trimmed(tmp_path):
    root = tmp_path / "raw"
    hc_tree(root, "hcstvg_v1", "test", {"a.mkv": hc_v1(bbox=[[50, 40, 30, 20], [-3, 1, 10, 10]], caption=" hi ")})
    (row,) = written(tmp_path, run(root, ["hcstvg_v1"]), "hcstvg_v1", "test")
    assert row["boxes"] == [[50, 40, 64, 48], [0, 1, 7, 11]]
    assert row["sentence"] == "hi"
    assert (row["sample_id"], row["video_path"]) == ("a", "hcstvg_v1/videos/a.mkv")


def test_vidstg_round_trip(tmp_path):
    """Captions and questions become 'declar'/'inter' pairs; the GT end beyond used_segment is clipped; the video
    path comes from the box file; a missing box on the GT's last frame copies the previous one (release rule)."""
    root = tmp_path / "raw"
    entry = vid_entry(
        temporal_gt={"begin_fid": 25, "end_fid": 36},  # ends after used_segment (5..30): clipped to 30
        questions=[
            {"description": "what chases a man?", "type": "object", "target_id": 1},
            {"description": "who is chased?", "type": "person", "target_id": 0},
        ],
    )
    other = vid_entry("6000", temporal_gt={"begin_fid": 12, "end_fid": 15}, questions=[])
    vid_tree(
        root,
        "val",
        [entry, other],
        box_files={"5000": vidor_file(video_path="0001/5000.mp4"), "6000": vidor_file(skip={1: [15]})},
        videos=["0001/5000.mp4", "6000.mp4"],
    )
    rows = {row["sample_id"]: row for row in written(tmp_path, run(root, ["vidstg"]), "vidstg", "val")}
    assert sorted(rows) == ["5000-0-declar0", "5000-0-inter0", "5000-0-inter1", "6000-1-declar0"]
    row = rows["5000-0-inter1"]
    boxes = row.pop("boxes")
    assert row == {
        "dataset": "vidstg",
        "split": "val",
        "sample_id": "5000-0-inter1",
        "video_id": "5000",
        "video_path": "vidstg/videos/0001/5000.mp4",
        "sentence": "who is chased?",
        "qtype": "inter",
        "width": 64,
        "height": 48,
        "fps": 29.97,
        "fps_source": "annotation",
        "frame_count": 40,
        "segment_start": 5,
        "segment_end": 30,
        "tube_start": 25,
        "tube_end": 30,
        "target_id": 0,
        "source": "vidstg/sent_annos/val_annotations.json#0/questions/1",
    }
    assert boxes == [[f, 0, f + 10, 8] for f in range(25, 31)]  # tid 0's boxes, frames 25..30
    assert [rows[k]["qtype"] for k in sorted(rows)] == ["declar", "inter", "inter", "declar"]
    assert rows["5000-0-declar0"]["target_id"] == 1 and rows["5000-0-declar0"]["boxes"][0] == [25, 2, 35, 10]
    copied = rows["6000-1-declar0"]
    assert (copied["tube_start"], copied["tube_end"]) == (12, 15)
    assert copied["boxes"][-1] == copied["boxes"][-2] == [14, 2, 24, 10]


# ------------------------------------------------------------------------------------------------------- rejects


def test_reject_missing_video(tmp_path):
    root = tmp_path / "raw"
    hc_tree(root, "hcstvg_v1", "train", {"a.mp4": hc_v1(), "b.mp4": hc_v1()}, videos=["a.mp4"])
    vid_tree(root, "test", [vid_entry()], videos=[])
    results = run(root, ["hcstvg_v1", "vidstg"])
    reject = only_reject(results["hcstvg_v1", "train"])
    assert (reject["reason"], reject["sample_id"]) == ("missing_video", "b")
    assert "hcstvg_v1/videos/b.mp4" in reject["message"]
    assert len(results["hcstvg_v1", "train"].rows) == 1
    assert {r["reason"] for r in results["vidstg", "test"].rejects} == {"missing_video"}
    assert len(results["vidstg", "test"].rejects) == 2  # the caption and the question


def test_reject_missing_box_file(tmp_path):
    root = tmp_path / "raw"
    vid_tree(root, "val", [vid_entry("1"), vid_entry("2")], box_files={"1": vidor_file()})
    result = run(root, ["vidstg"])["vidstg", "val"]
    assert len(result.rows) == 2
    assert sorted((r["sample_id"], r["reason"]) for r in result.rejects) == [
        ("2-1-declar0", "missing_box_file"),
        ("2-1-inter0", "missing_box_file"),
    ]
    assert "vidstg/bbox_annos/2.json" in result.rejects[0]["message"]


def test_reject_trajectory_hole(tmp_path):
    """A box missing inside the tube drops the pair ('spoiled'); the other target's pair survives."""
    root = tmp_path / "raw"
    entry = vid_entry(questions=[{"description": "who is chased?", "type": "person", "target_id": 0}])
    vid_tree(root, "val", [entry], box_files={"5000": vidor_file(skip={1: [14]})})
    result = run(root, ["vidstg"])["vidstg", "val"]
    reject = only_reject(result)
    assert (reject["reason"], reject["sample_id"]) == ("trajectory_hole", "5000-0-declar0")
    assert "frame 14" in reject["message"]
    assert [row["sample_id"] for row in result.rows] == ["5000-0-inter0"]


@pytest.mark.parametrize(
    "where, says",
    [
        ("subject/objects", "not in subject/objects [0, 1]"),
        ("trajectories", "never appears in vidstg/bbox_annos/5000.json"),
    ],
)
def test_reject_unknown_target(tmp_path, where, says):
    root = tmp_path / "raw"
    if where == "subject/objects":
        entry = vid_entry(captions=[{"description": "a cat.", "type": "object", "target_id": 7}])
        box = vidor_file()
    else:
        entry = vid_entry(**{"subject/objects": [{"tid": t, "category": "dog"} for t in (0, 1, 2)]})
        entry["captions"][0]["target_id"] = 2
        box = vidor_file(tids=(0, 1))
    vid_tree(root, "val", [entry], box_files={"5000": box})
    result = run(root, ["vidstg"])["vidstg", "val"]
    reject = only_reject(result)
    assert (reject["reason"], reject["sample_id"]) == ("unknown_target", "5000-0-declar0")
    assert says in reject["message"]
    assert len(result.rows) == 1


def test_reject_tube_outside_video(tmp_path):
    root = tmp_path / "raw"
    hc_tree(root, "hcstvg_v1", "train", {"late.mp4": hc_v1(st_frame=99), "zero.mp4": hc_v1(st_frame=0)})
    vid_tree(root, "val", [vid_entry(temporal_gt={"begin_fid": 2, "end_fid": 20}, questions=[])])
    results = run(root, ["hcstvg_v1", "vidstg"])
    hc = results["hcstvg_v1", "train"]
    assert sorted((r["sample_id"], r["reason"]) for r in hc.rejects) == [
        ("late", "tube_outside_video"),  # frames 98..100 of a 100-frame clip
        ("zero", "tube_outside_video"),  # st_frame 0 is before the first (1-based) frame
    ]
    reject = only_reject(results["vidstg", "val"])
    assert reject["reason"] == "tube_outside_video" and "used_segment 5..30" in reject["message"]


def test_reject_start_after_end(tmp_path):
    root = tmp_path / "raw"
    hc_tree(root, "hcstvg_v1", "train", {"a.mp4": hc_v1(bbox=[])})
    vid_tree(root, "val", [vid_entry(temporal_gt={"begin_fid": 20, "end_fid": 12}, questions=[])])
    results = run(root, ["hcstvg_v1", "vidstg"])
    assert only_reject(results["hcstvg_v1", "train"])["reason"] == "start_after_end"
    assert only_reject(results["vidstg", "val"])["reason"] == "start_after_end"


@pytest.mark.parametrize(
    "box", [[10, 20, 0, 10], [70, 10, 5, 5], [10, 20, math.nan, 10], [10, 20, math.inf, 10]], ids=str
)
def test_reject_bad_box(tmp_path, box):
    """Zero width, a box wholly right of the 64-px frame (zero area once clipped), NaN, infinity."""
    root = tmp_path / "raw"
    hc_tree(root, "hcstvg_v1", "train", {"a.mp4": hc_v1(bbox=[[1, 1, 5, 5], box]), "b.mp4": hc_v1()})
    result = run(root, ["hcstvg_v1"])["hcstvg_v1", "train"]
    reject = only_reject(result)
    assert (reject["reason"], reject["sample_id"]) == ("bad_box", "a")
    assert "frame 11" in reject["message"]  # the second box: st_frame 11 -> frames 10, 11


def test_reject_bad_box_vidstg(tmp_path):
    root = tmp_path / "raw"
    box = vidor_file()
    box["trajectories"][13][1]["bbox"].update(xmin=30, xmax=30)
    vid_tree(root, "val", [vid_entry(questions=[])], box_files={"5000": box})
    assert only_reject(run(root, ["vidstg"])["vidstg", "val"])["reason"] == "bad_box"


def test_reject_empty_sentence(tmp_path):
    root = tmp_path / "raw"
    hc_tree(root, "hcstvg_v1", "train", {"a.mp4": hc_v1(caption="  "), "b.mp4": hc_v1()})
    entry = vid_entry()
    entry["questions"][0]["description"] = ""
    vid_tree(root, "val", [entry])
    results = run(root, ["hcstvg_v1", "vidstg"])
    assert only_reject(results["hcstvg_v1", "train"])["reason"] == "empty_sentence"
    reject = only_reject(results["vidstg", "val"])
    assert (reject["reason"], reject["sample_id"]) == ("empty_sentence", "5000-0-inter0")


def test_reject_duplicate_key(tmp_path):
    """A key repeated in the JSON text, and two keys that map to the same sample id (a.mp4 / a.mkv)."""
    root = tmp_path / "raw"
    record = json.dumps(hc_v1())
    text = f'{{"d.mp4": {record}, "d.mp4": {record}, "a.mp4": {record}, "a.mkv": {record}}}'
    put(root / "hcstvg_v1" / "annos" / "train.json", text)
    for key in ("d.mp4", "a.mp4", "a.mkv"):
        touch(root / "hcstvg_v1" / "videos" / key)
    result = run(root, ["hcstvg_v1"])["hcstvg_v1", "train"]
    assert result.pairs_in == 4
    assert sorted(row["sample_id"] for row in result.rows) == ["a", "d"]
    assert sorted((r["sample_id"], r["reason"], r["source"]) for r in result.rejects) == [
        ("a", "duplicate_key", "hcstvg_v1/annos/train.json#a.mkv"),
        ("d", "duplicate_key", "hcstvg_v1/annos/train.json#d.mp4"),
    ]


def test_reject_path_escapes_root(tmp_path):
    root = tmp_path / "raw"
    hc_tree(root, "hcstvg_v1", "train", {"../x.mp4": hc_v1(), "/etc/y.mp4": hc_v1(), "ok.mp4": hc_v1()}, videos=[])
    touch(root / "hcstvg_v1" / "videos" / "ok.mp4")
    touch(root / "hcstvg_v1" / "x.mp4")  # exists, but outside the videos folder
    vid_tree(
        root,
        "val",
        [vid_entry("1"), vid_entry("../../escape")],
        box_files={"1": vidor_file(video_path="../../x.mp4")},
    )
    results = run(root, ["hcstvg_v1", "vidstg"])
    hc = results["hcstvg_v1", "train"]
    assert [row["sample_id"] for row in hc.rows] == ["ok"]
    assert sorted(r["reason"] for r in hc.rejects) == ["path_escapes_root"] * 2
    vid = results["vidstg", "val"]
    assert not vid.rows
    assert sorted(r["reason"] for r in vid.rejects) == ["path_escapes_root"] * 4
    assert all("." not in r["sample_id"] for r in hc.rejects + vid.rejects)


def test_reconciliation_reports_a_mismatch():
    broken = SplitPairs("vidstg", "val", pairs_in=3)
    broken.reject("a", "f#0", RejectReason.MISSING_VIDEO, "x")
    lines, ok = reconciliation([broken])
    assert not ok
    assert lines == ["vidstg/val: 3 input pairs = 0 rows + 1 rejects (missing_video 1): MISMATCH"]


# ------------------------------------------------------------------------------------------------ malformed files


@pytest.mark.parametrize(
    "text, record",
    [
        ('{"a.mp4": {"bbox": [}', "line 1 column 21"),
        ("[1, 2]", "top level"),
        (json.dumps({"a.mp4": {k: v for k, v in hc_v1().items() if k != "bbox"}}), "record 'a.mp4'"),
        (json.dumps({"a.mp4": hc_v1(bbox=[[1, 2, 3]])}), "record 'a.mp4'"),
        (json.dumps({"a.mp4": hc_v1(st_frame="3")}), "record 'a.mp4'"),
        (json.dumps({"a.mp4": hc_v2_raw(img_size=[48])}), "record 'a.mp4'"),
        (json.dumps({"a.mp4": hc_v1(img_num=3_000_000_000)}), "record 'a.mp4': key 'img_num': 3000000000 is out"),
        (json.dumps({"a.mp4": hc_v1(width=3e9)}), "record 'a.mp4': key 'width': 3000000000 is out of the int32"),
        ("[" * 200_000 + "]" * 200_000, "top level: JSON nested too deeply"),
    ],
    ids=[
        "invalid-json",
        "top-level-list",
        "missing-bbox",
        "short-box",
        "st_frame-string",
        "img_size",
        "img_num-3e9",
        "width-3e9",
        "200k-deep",
    ],
)
def test_malformed_hcstvg_file_names_file_and_record(tmp_path, text, record):
    root = tmp_path / "raw"
    path = put(root / "hcstvg_v1" / "annos" / "train.json", text)
    with pytest.raises(AnnotationError) as err:
        normalize(root, ["hcstvg_v1"])
    assert err.value.file == str(path)
    assert str(err.value).startswith(f"{path}: {record}")


@pytest.mark.parametrize("kind", ["directory", "symlink-loop"])
def test_unreadable_annotation_path_is_one_line_naming_it(tmp_path, kind):
    root = tmp_path / "raw"
    path = root / "hcstvg_v1" / "annos" / "train.json"
    path.parent.mkdir(parents=True)
    if kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(path.name)  # points at itself
    with pytest.raises(AnnotationError, match=r"^" + re.escape(f"{path}: file: cannot be read (")):
        normalize(root, ["hcstvg_v1"])


def test_vidstg_frame_count_beyond_int32_names_the_entry(tmp_path):
    root = tmp_path / "raw"
    entries = [vid_entry("1"), vid_entry("2")]
    entries[1]["frame_count"] = 3_000_000_000
    vid_tree(root, "val", entries, box_files={"1": vidor_file(), "2": vidor_file()})
    annotation = root / "vidstg" / "sent_annos" / "val_annotations.json"
    with pytest.raises(
        AnnotationError, match=r"^" + re.escape(f"{annotation}: entry 1: key 'frame_count': 3000000000")
    ):
        normalize(root, ["vidstg"])


@pytest.mark.parametrize(
    "change, record",
    [
        (lambda entries, box: entries[1].pop("temporal_gt"), "entry 1"),
        (lambda entries, box: entries[1]["captions"][0].pop("target_id"), "entry 1 captions[0]"),
        (lambda entries, box: entries[1]["used_segment"].pop("end_fid"), "entry 1 used_segment"),
        (lambda entries, box: box.pop("trajectories"), "top level"),
        (lambda entries, box: box["trajectories"][3][1].pop("bbox"), "trajectories[3][1]"),
        (lambda entries, box: box["trajectories"][3][1]["bbox"].update(xmax="12"), "trajectories[3][1] bbox"),
    ],
    ids=["no-temporal_gt", "no-target_id", "no-end_fid", "no-trajectories", "no-bbox", "string-coordinate"],
)
def test_malformed_vidstg_file_names_file_and_record(tmp_path, change, record):
    root = tmp_path / "raw"
    entries, box = [vid_entry("1"), vid_entry("2")], vidor_file()
    change(entries, box)
    vid_tree(root, "val", entries, box_files={"1": vidor_file(), "2": box})
    annotation = root / "vidstg" / "sent_annos" / "val_annotations.json"
    path = annotation if record.startswith("entry") else root / "vidstg" / "bbox_annos" / "2.json"
    with pytest.raises(AnnotationError, match=r"^" + re.escape(f"{path}: {record}")):
        normalize(root, ["vidstg"])


def test_malformed_vidstg_top_level(tmp_path):
    root = tmp_path / "raw"
    path = put(root / "vidstg" / "sent_annos" / "val_annotations.json", {"vid": "1"})
    with pytest.raises(AnnotationError, match="expected a list of entries, got dict") as err:
        normalize(root, ["vidstg"])
    assert err.value.file == str(path) and err.value.record == "top level"


def test_dataset_without_annotation_files_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="hcstvg_v2/annos/\\*.json"):
        normalize(tmp_path, ["hcstvg_v2"])


# ----------------------------------------------------------------------------------- stage: outputs, determinism


def mixed_tree(root: Path) -> None:
    hc_tree(root, "hcstvg_v1", "train", {f"{i}_clip.mp4": hc_v1(st_frame=1 + i) for i in range(5)})
    hc_tree(root, "hcstvg_v1", "test", {"t.mp4": hc_v1(), "gone.mp4": hc_v1()}, videos=["t.mp4"])
    hc_tree(root, "hcstvg_v2", "val", {"r.mp4": hc_v2_raw(), "c.mp4": hc_v1()})
    entries = [vid_entry("1"), vid_entry("2"), vid_entry("3")]
    vid_tree(root, "val", entries, box_files={"1": vidor_file(), "2": vidor_file()})  # no box file for "3"


def run_stage(root: Path, out: Path, tmp_path: Path, datasets=("hcstvg_v1", "hcstvg_v2", "vidstg")) -> None:
    params = {"normalize": {"raw_root": str(root), "datasets": list(datasets)}}
    path = put(tmp_path / "params.yaml", yaml.safe_dump(params))
    stage.main(["--raw", str(root), "--out", str(out), "--params", str(path)])


def test_stage_outputs_and_reconciliation(tmp_path, capsys):
    root, out = tmp_path / "raw", tmp_path / "out"
    mixed_tree(root)
    run_stage(root, out, tmp_path)
    printed = capsys.readouterr().out
    assert "hcstvg_v1/test: 2 input pairs = 1 rows + 1 rejects (missing_video 1): ok" in printed
    assert "vidstg/val: 6 input pairs = 4 rows + 2 rejects (missing_box_file 2): ok" in printed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "hcstvg_v1/test.parquet",
        "hcstvg_v1/train.parquet",
        "hcstvg_v2/val.parquet",
        "rejects.parquet",
        "vidstg/val.parquet",
    ]
    rejects = pq.read_table(out / "rejects.parquet")
    assert rejects.schema.equals(REJECT_SCHEMA) and rejects.num_rows == 3
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"] == {"pairs_in": 15, "rows": 12, "rejects": 3}
    val = stats["vidstg"]["val"]
    assert val["rows_by_qtype"] == {"declar": 2, "inter": 2}
    assert val["rejects_by_reason"] == {"missing_box_file": 2}
    assert val["tube_length"] == {"min": 11.0, "median": 11.0, "mean": 11.0, "max": 11.0}
    assert stats["hcstvg_v1"]["train"]["box_width"]["max"] == 30.0
    curve = (out / "plots" / "tube_length" / "hcstvg_v1-train.csv").read_text().splitlines()
    assert curve[0] == "quantile,tube_length" and len(curve) == 102 and curve[-1] == "1.0,3"


def test_stage_is_deterministic(tmp_path):
    root = tmp_path / "raw"
    mixed_tree(root)
    run_stage(root, tmp_path / "a", tmp_path)
    run_stage(root, tmp_path / "b", tmp_path)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 10
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_stage_replaces_stale_outputs(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "out"
    mixed_tree(root)
    run_stage(root, out, tmp_path)
    run_stage(root, out, tmp_path, datasets=["vidstg"])
    assert sorted(p.name for p in out.iterdir()) == ["plots", "rejects.parquet", "stats.json", "vidstg"]


def test_stage_stops_on_malformed_file(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "out"
    mixed_tree(root)
    bad = put(root / "hcstvg_v2" / "annos" / "val.json", {"r.mp4": {"English": "x"}})
    with pytest.raises(SystemExit, match=f"normalize: {bad}: record 'r.mp4': missing key 'img_size'"):
        run_stage(root, out, tmp_path)
    assert not out.exists()


def test_sample_ids_are_webdataset_keys(tmp_path):
    root = tmp_path / "raw"
    hc_tree(root, "hcstvg_v1", "train", {"a.b c.mp4": hc_v1(), "sub/d.mp4": hc_v1()})
    rows = run(root, ["hcstvg_v1"])["hcstvg_v1", "train"].rows
    assert sorted(row["sample_id"] for row in rows) == ["a_b_c", "sub_d"]
    assert np.all([row["video_path"].startswith("hcstvg_v1/videos/") for row in rows])
