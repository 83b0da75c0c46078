"""Decoded videos cross-checked against their annotation, and annotation records against each other (issue #16,
item 3): every record ends in the output or in a rejects table with its reason, never silently altered.

- shard: decoded width x height must be the annotated one (`size_mismatch`), the decodable frame count the annotated
  one within `frame_count_slack` (`frame_count_mismatch`);
- normalize: two different VidOR boxes for the target in one tube frame (`duplicate_box`), a VidSTG entry repeated
  verbatim (`duplicate_entry`, the first copy kept), distinct non-ASCII keys keep distinct sample ids.
"""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from cgstvg.data.normalize import write_outputs
from cgstvg.data.pairs import safe_id
from cgstvg.data.schema import sample_table
from cgstvg.data.shard_reader import iter_shard_samples
from cgstvg.data.shard_writer import ShardConfig, frame_count_slack, write_split
from pipeline import shard as shard_stage
from test_normalize import box_at, hc_tree, hc_v1, hc_v2_raw, only_reject, run, vid_entry, vid_tree, vidor_file
from video_samples import sample_row, write_video

CFG = ShardConfig(
    policy={"hcstvg_v1": "hcstvg", "hcstvg_v2": "hcstvg", "vidstg": "vidstg"},
    sampling={"hcstvg_fps": 3.2, "vidstg_frames": 8, "fixed_frames": 8, "eval_multiplier": 2},
    short_side=24,
    max_long_side=40,
    jpeg_quality=90,
    max_samples=8,
    max_bytes=1 << 30,
    min_shards=1,
    workers=0,
)

# ----------------------------------------------------------------------------------------- shard: size and count


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """One split sharded from: a landscape 128x96 and a portrait 96x128 video (32 frames), a 40-frame and a 33-frame
    video annotated as 32 frames; rows annotated right and wrong."""
    root = tmp_path_factory.mktemp("raw")
    write_video(root / "videos/landscape.mp4", 32, width=128, height=96)
    write_video(root / "videos/portrait.mp4", 32, width=96, height=128)
    write_video(root / "videos/long.mp4", 40)
    write_video(root / "videos/one_more.mp4", 33)
    rows = [
        sample_row("landscape_ok", "videos/landscape.mp4", width=128, height=96),
        sample_row("portrait_ok", "videos/portrait.mp4", width=96, height=128),
        sample_row("portrait_as_landscape", "videos/portrait.mp4", width=128, height=96),  # the audit's case
        sample_row("long", "videos/long.mp4"),  # 40 frames, annotated 32
        sample_row("one_more", "videos/one_more.mp4"),  # 33 frames, annotated 32: within the slack
        sample_row("日本", "videos/landscape.mp4", width=128, height=96, sentence="the red square moves"),
    ]
    out = tmp_path_factory.mktemp("shards")
    manifest = write_split(sample_table(rows), root, out, CFG, progress=False)
    rejects = {r["sample_id"]: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    samples = {s["__key__"]: s for s in iter_shard_samples(out / manifest["shards"][0]["name"])}
    return manifest, rejects, samples


def test_decoded_size_other_than_the_annotation_is_rejected(decoded):
    manifest, rejects, samples = decoded
    reject = rejects["portrait_as_landscape"]
    assert reject["reason"] == "size_mismatch"
    message = reject["message"]
    assert "portrait.mp4" in message and "96x128" in message and "128x96" in message  # the video, both sizes
    assert "portrait_as_landscape" in message and reject["source"] in message  # the record
    assert "portrait_ok" in samples and "landscape_ok" in samples  # the same video rightly annotated is kept
    meta = json.loads(samples["portrait_ok"]["json"])
    assert meta["orig_size"] == [128, 96]


def test_frame_count_far_from_the_annotation_is_rejected_within_the_slack_kept(decoded):
    manifest, rejects, samples = decoded
    reject = rejects["long"]
    assert reject["reason"] == "frame_count_mismatch"
    assert "long.mp4: 40 decodable frames" in reject["message"] and "says 32 frames" in reject["message"]
    assert reject["source"] in reject["message"]
    assert frame_count_slack(32) == 2 and frame_count_slack(1000) == 10
    assert "one_more" in samples and "one_more" not in rejects
    assert set(rejects) == {"portrait_as_landscape", "long"}
    assert manifest["samples"] == 4 and manifest["rejected"] == 2


def test_a_non_ascii_sample_id_is_a_webdataset_key(decoded):
    _, _, samples = decoded
    sample = samples["日本"]
    assert json.loads(sample["json"])["sample_id"] == "日本"
    assert sum(k.endswith(".jpg") for k in sample) == 31  # member names split at the first '.', as for ASCII keys


def test_hcstvg_v2_img_size_given_as_width_height_is_rejected_by_the_stage(tmp_path):
    """img_size is [height, width]; given as [128, 96] for a 128x96 video, normalize clips the boxes to a 96-px
    wide frame (it does not decode). The shard stage compares the decoded size and rejects the sample."""
    root = tmp_path / "raw"
    wide_box = [[70, 10, 50, 40]] * 3  # x2 = 120: clipped by 24 px in a 96-px wide frame
    records = {
        "good.mp4": hc_v2_raw(img_num=32, img_size=[96, 128], bbox=wide_box),
        "swapped.mp4": hc_v2_raw(img_num=32, img_size=[128, 96], bbox=wide_box),
    }
    hc_tree(root, "hcstvg_v2", "val", records, videos=[])
    for key in records:
        write_video(root / "hcstvg_v2/videos" / key, 32, width=128, height=96)
    normalized = tmp_path / "normalize"
    write_outputs(list(run(root, ["hcstvg_v2"]).values()), normalized)
    summary = shard_stage.shard(normalized, root, tmp_path / "shard", CFG, progress=False)
    assert summary["hcstvg_v2/val"]["samples"] == 1 and summary["hcstvg_v2/val"]["rejected"] == 1
    (reject,) = pq.read_table(tmp_path / "shard/hcstvg_v2/val/rejects.parquet").to_pylist()
    assert (reject["sample_id"], reject["reason"]) == ("swapped", "size_mismatch")
    assert reject["source"] == "hcstvg_v2/annos/val.json#swapped.mp4"
    assert "hcstvg_v2/videos/swapped.mp4: decoded frames are 128x96" in reject["message"]
    assert "says 96x128" in reject["message"] and reject["source"] in reject["message"]


# -------------------------------------------------------------------------------------- normalize: VidOR boxes


def _with_second_box(box_file: dict, tid: int, frame: int, shift: int) -> dict:
    extra = box_at(tid, frame)
    extra["bbox"] = {k: v + shift for k, v in extra["bbox"].items()}
    box_file["trajectories"][frame].append(extra)
    return box_file


def test_two_different_boxes_for_the_target_in_a_tube_frame_are_rejected(tmp_path):
    root = tmp_path / "raw"
    entry = vid_entry(questions=[{"description": "who is chased?", "type": "person", "target_id": 0}])
    vid_tree(root, "val", [entry], box_files={"5000": _with_second_box(vidor_file(), tid=1, frame=14, shift=5)})
    result = run(root, ["vidstg"])["vidstg", "val"]
    reject = only_reject(result)
    assert (reject["reason"], reject["sample_id"]) == ("duplicate_box", "5000-0-declar0")
    assert reject["message"].startswith("frame 14 of vidstg/bbox_annos/5000.json gives target 1 2 boxes that differ")
    assert "[[14.0, 2.0, 24.0, 10.0], [19.0, 7.0, 29.0, 15.0]]" in reject["message"]
    (row,) = result.rows  # tid 0's pair, on the same frames, is unaffected
    assert row["sample_id"] == "5000-0-inter0" and row["boxes"][4].tolist() == [14, 0, 24, 8]


def test_a_repeated_identical_box_or_a_conflict_outside_the_tube_is_harmless(tmp_path):
    root = tmp_path / "raw"
    box_file = _with_second_box(vidor_file(), tid=1, frame=14, shift=0)  # the same box twice
    box_file = _with_second_box(box_file, tid=1, frame=35, shift=5)  # outside temporal_gt 10..20
    vid_tree(root, "val", [vid_entry()], box_files={"5000": box_file})
    result = run(root, ["vidstg"])["vidstg", "val"]
    assert not result.rejects and len(result.rows) == 2
    assert result.rows[0]["boxes"][4].tolist() == [14, 2, 24, 10]


# ----------------------------------------------------------------------------------- normalize: repeated entries


def test_an_entry_repeated_verbatim_is_rejected_and_the_first_kept(tmp_path):
    root = tmp_path / "raw"
    first = vid_entry("1")
    reordered = json.loads(json.dumps(dict(reversed(list(first.items())))))  # same entry, other key order
    near = vid_entry("1", temporal_gt={"begin_fid": 11, "end_fid": 20})  # same video, another entry
    vid_tree(root, "val", [first, vid_entry("2"), reordered, near])
    result = run(root, ["vidstg"])["vidstg", "val"]
    assert sorted(row["sample_id"] for row in result.rows) == [
        "1-0-declar0",
        "1-0-inter0",
        "1-3-declar0",
        "1-3-inter0",
        "2-1-declar0",
        "2-1-inter0",
    ]
    assert sorted((r["sample_id"], r["reason"], r["source"]) for r in result.rejects) == [
        ("1-2-declar0", "duplicate_entry", "vidstg/sent_annos/val_annotations.json#2/captions/0"),
        ("1-2-inter0", "duplicate_entry", "vidstg/sent_annos/val_annotations.json#2/questions/0"),
    ]
    assert result.rejects[0]["message"] == "entry 2 (vid '1') repeats entry 0 verbatim; the first is kept"


# -------------------------------------------------------------------------------------------- non-ASCII sample ids


def test_distinct_non_ascii_keys_keep_distinct_sample_ids(tmp_path):
    root = tmp_path / "raw"
    hc_tree(root, "hcstvg_v1", "train", {k: hc_v1() for k in ("日本.mp4", "中国.mp4", "🎬.mp4", "🎥.mp4", "ok.mp4")})
    result = run(root, ["hcstvg_v1"])["hcstvg_v1", "train"]
    assert not result.rejects
    ids = sorted(row["sample_id"] for row in result.rows)
    assert ids[2:] == ["ok", "中国", "日本"]
    emoji = ids[:2]  # '_' sorts before letters
    assert len(set(emoji)) == 2 and all(re.fullmatch(r"_-[0-9a-f]{8}", s) for s in emoji)
    entry = vid_entry("日本")
    vid_tree(root, "val", [entry, vid_entry("中国")])
    assert sorted(r["sample_id"] for r in run(root, ["vidstg"])["vidstg", "val"].rows) == [
        "中国-1-declar0",
        "中国-1-inter0",
        "日本-0-declar0",
        "日本-0-inter0",
    ]


def test_ascii_keys_map_to_the_ids_they_always_had():
    old_rule = re.compile(r"[^A-Za-z0-9_-]")
    for code in range(128):
        text = f"a{chr(code)}b"
        assert safe_id(text) == old_rule.sub("_", text)
    assert [safe_id(k) for k in ("a.b c", "sub/d", "55_vfjywN5CN0Y", "synth_train_00001", "", "e\u0301")] == [
        "a_b_c",
        "sub_d",
        "55_vfjywN5CN0Y",
        "synth_train_00001",
        "_",
        safe_id("e\u0301"),
    ]
    assert re.fullmatch(r"e_-[0-9a-f]{8}", safe_id("e\u0301"))  # a combining accent is replaced, so hashed
    assert "." not in safe_id("日本．mp4") and safe_id("日本．mp4") != safe_id("日本_mp4")
