"""The real VidSTG validation annotations (../shared/data/vidstg, 3,996 entries) go through normalize.

The VidOR boxes of these videos are not at hand, so the synthetic generator writes box files that match each
entry's frame_count, size and target tids; the videos are empty placeholder files (normalize only checks that
they exist). The expected counts are computed here from the raw files, independently of the readers.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cgstvg.data.normalize import normalize, reconciliation, write_outputs
from cgstvg.data.synthetic import write_vidor_box_files

ENTRIES = 3996


def raw_tree(root: Path, annotations: Path, *, with_boxes: bool) -> list[dict]:
    entries = json.loads(annotations.read_text())
    (root / "vidstg" / "sent_annos").mkdir(parents=True)
    shutil.copy(annotations, root / "vidstg" / "sent_annos" / "val_annotations.json")
    videos = root / "vidstg" / "videos"
    videos.mkdir()
    for vid in {e["vid"] for e in entries}:
        (videos / f"{vid}.mp4").touch()
    if with_boxes:
        write_vidor_box_files(entries, root / "vidstg" / "bbox_annos", seed=0)
    return entries


def expected_outcome(entries: list[dict], box_dir: Path) -> Counter:
    """Count usable pairs per qtype and rejected pairs, by the release's rules, read straight from the files."""
    boxed: dict[str, dict[int, set[int]]] = {}
    counts: Counter = Counter()
    for entry in entries:
        vid = entry["vid"]
        if vid not in boxed:
            boxed[vid] = {}
            for frame, objects in enumerate(json.loads((box_dir / f"{vid}.json").read_text())["trajectories"]):
                for obj in objects:
                    boxed[vid].setdefault(obj["tid"], set()).add(frame)
        seg_begin, seg_end = entry["used_segment"]["begin_fid"], entry["used_segment"]["end_fid"]
        gt_begin, gt_end = entry["temporal_gt"]["begin_fid"], entry["temporal_gt"]["end_fid"]
        tids = {obj["tid"] for obj in entry["subject/objects"]}
        for key, qtype in (("captions", "declar"), ("questions", "inter")):
            for sentence in entry[key]:
                tid = sentence["target_id"]
                frames = boxed[vid].get(tid, set())
                needed = set(range(gt_begin, min(gt_end, seg_end) + 1))
                last = min(gt_end, entry["frame_count"] - 1)
                if last in needed and last - 1 in frames:
                    needed.discard(last)  # the release copies the previous box onto a missing last one
                usable = tid in tids and seg_begin <= gt_begin <= seg_end and needed <= frames
                counts[qtype if usable else "rejected"] += 1
    return counts


@pytest.fixture(scope="module")
def val_annotations(shared_dir) -> Path:
    return shared_dir / "data" / "vidstg" / "val_annotations.json"


@pytest.fixture(scope="module")
def normalized(tmp_path_factory, val_annotations):
    root = tmp_path_factory.mktemp("vidstg_real")
    entries = raw_tree(root, val_annotations, with_boxes=True)
    (result,) = normalize(root, ["vidstg"])
    out = root / "out"
    write_outputs([result], out)
    table = pq.read_table(out / "vidstg" / "val.parquet")
    # Box counts per row instead of the boxes themselves: 2.5 M boxes as Python lists would take seconds.
    columns = table.drop_columns(["boxes"]).to_pydict()
    columns["box_count"] = pc.list_value_length(table["boxes"]).to_pylist()
    return entries, root, result, columns


def test_real_val_pair_count_and_qtypes(normalized):
    entries, root, result, table = normalized
    assert len(entries) == ENTRIES
    captions = sum(len(e["captions"]) for e in entries)
    questions = sum(len(e["questions"]) for e in entries)
    expected = expected_outcome(entries, root / "vidstg" / "bbox_annos")
    assert result.pairs_in == captions + questions
    assert reconciliation([result])[1]
    assert len(table["sample_id"]) == captions + questions - expected["rejected"]
    assert len(result.rejects) == expected["rejected"]
    assert Counter(table["qtype"]) == {"declar": expected["declar"], "inter": expected["inter"]}
    assert len(set(table["sample_id"])) == len(table["sample_id"])


def test_real_val_tubes_follow_the_release(normalized):
    """Tube = temporal_gt clipped to used_segment (744 entries' GT ends lie past it), one box per tube frame."""
    entries, _, _, table = normalized
    clipped = 0
    for i, sample_id in enumerate(table["sample_id"]):
        entry = entries[int(sample_id.split("-")[1])]
        assert table["video_id"][i] == entry["vid"]
        assert table["tube_start"][i] == entry["temporal_gt"]["begin_fid"]
        assert table["tube_end"][i] == min(entry["temporal_gt"]["end_fid"], entry["used_segment"]["end_fid"])
        assert table["box_count"][i] == table["tube_end"][i] - table["tube_start"][i] + 1
        segment = entry["used_segment"]
        assert (table["segment_start"][i], table["segment_end"][i]) == (segment["begin_fid"], segment["end_fid"])
        assert table["fps"][i] == entry["fps"] and table["fps_source"][i] == "annotation"
        clipped += entry["temporal_gt"]["end_fid"] > entry["used_segment"]["end_fid"]
    assert clipped > 0


def test_real_val_without_box_files_rejects_every_pair(tmp_path, val_annotations):
    entries = raw_tree(tmp_path, val_annotations, with_boxes=False)
    (result,) = normalize(tmp_path, ["vidstg"])
    pairs = sum(len(e["captions"]) + len(e["questions"]) for e in entries)
    assert result.pairs_in == pairs and not result.rows
    assert Counter(r["reason"] for r in result.rejects) == {"missing_box_file": pairs}
