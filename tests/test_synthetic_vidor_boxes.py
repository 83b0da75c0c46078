"""VidOR box files for the REAL VidSTG val annotations (../shared/data/vidstg), so they can go through `normalize`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cgstvg.data.synthetic import write_vidor_box_files


@pytest.fixture(scope="module")
def val_entries(shared_dir):
    return json.loads((shared_dir / "data" / "vidstg" / "val_annotations.json").read_text())


@pytest.fixture(scope="module")
def box_dir(val_entries, tmp_path_factory):
    out = tmp_path_factory.mktemp("bbox_annos")
    assert write_vidor_box_files(val_entries, out, seed=0, source="val_annotations.json") == 602
    return out


def test_one_box_file_per_video_with_every_needed_box(val_entries, box_dir):
    by_vid: dict[str, list[dict]] = {}
    for entry in val_entries:
        by_vid.setdefault(entry["vid"], []).append(entry)
    assert sorted(p.stem for p in box_dir.glob("*.json")) == sorted(by_vid) and len(by_vid) == 602
    needed_total = empty_frames = 0
    for vid, entries in by_vid.items():  # one file at a time keeps the test's memory small
        doc = json.loads((box_dir / f"{vid}.json").read_text())
        boxes = [(f, b["tid"], b["bbox"]) for f, frame in enumerate(doc["trajectories"]) for b in frame]
        present = {(f, tid) for f, tid, _ in boxes}
        assert len(present) == len(boxes), f"{vid}: a tid appears twice in one frame"
        xyxy = np.array([b[k] for _, _, b in boxes for k in ("xmin", "ymin", "xmax", "ymax")]).reshape(-1, 4)
        assert np.all(xyxy[:, :2] >= 0) and np.all(xyxy[:, :2] < xyxy[:, 2:]), vid
        assert np.all(xyxy[:, 2] <= doc["width"]) and np.all(xyxy[:, 3] <= doc["height"]), vid
        empty_frames += sum(not frame for frame in doc["trajectories"])
        needed = set()
        for entry in entries:
            assert (doc["video_id"], doc["frame_count"], doc["fps"]) == (vid, entry["frame_count"], entry["fps"])
            assert (doc["width"], doc["height"]) == (entry["width"], entry["height"])
            assert len(doc["trajectories"]) == entry["frame_count"]
            assert {o["tid"] for o in entry["subject/objects"]} <= {o["tid"] for o in doc["subject/objects"]}
            rel = entry["used_relation"]
            assert rel in doc["relation_instances"]
            tids = {s["target_id"] for s in entry["captions"] + entry["questions"]}
            tids |= {rel["subject_tid"], rel["object_tid"]}
            end = min(entry["temporal_gt"]["end_fid"], entry["frame_count"] - 1)  # the release clips to the video
            needed.update((f, tid) for f in range(entry["temporal_gt"]["begin_fid"], end + 1) for tid in tids)
        # Every needed box (no holes in any GT window) and nothing else, so the files stay small.
        missing = needed - present
        assert not missing, f"{vid}: no box for (frame, tid) {sorted(missing)[:3]}"
        assert present == needed, vid
        needed_total += len(needed)
    assert needed_total > 1_000_000
    assert empty_frames > 100_000  # frames that no entry needs stay empty


def test_boxes_depend_only_on_seed_video_and_tid(val_entries, box_dir, tmp_path):
    vid = val_entries[0]["vid"]
    alone = [e for e in val_entries if e["vid"] == vid]
    write_vidor_box_files(alone, tmp_path / "same", seed=0)
    write_vidor_box_files(alone, tmp_path / "other", seed=1)
    assert (tmp_path / "same" / f"{vid}.json").read_bytes() == (box_dir / f"{vid}.json").read_bytes()
    assert (tmp_path / "other" / f"{vid}.json").read_bytes() != (box_dir / f"{vid}.json").read_bytes()


def test_bad_entries_are_named(val_entries, tmp_path):
    broken = [dict(e) for e in val_entries[:3]]
    del broken[2]["temporal_gt"]
    with pytest.raises(ValueError, match=r"val_annotations\.json\[2\] \(vid \d+\): missing key\(s\) temporal_gt"):
        write_vidor_box_files(broken, tmp_path, seed=0, source="val_annotations.json")
    clash = [dict(val_entries[0]), dict(val_entries[0], frame_count=val_entries[0]["frame_count"] + 1)]
    with pytest.raises(ValueError, match=r"entries\[1\].*differ from another entry"):
        write_vidor_box_files(clash, tmp_path, seed=0)
