"""The shard writer: content, bounds, rejects, byte-identical reruns and resumption after an interruption."""

import dataclasses
import hashlib
import json
import os
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torchvision.io import decode_jpeg

from cgstvg.data import shard_writer
from cgstvg.data.schema import sample_table
from cgstvg.data.shard_writer import ShardConfig, write_split
from pipeline import shard as shard_stage
from video_samples import sample_row, write_video

CFG = ShardConfig(
    policy={"hcstvg_v1": "hcstvg", "vidstg": "vidstg"},
    sampling={"hcstvg_fps": 3.2, "vidstg_frames": 8, "fixed_frames": 8, "eval_multiplier": 2},
    short_side=24,
    max_long_side=40,
    jpeg_quality=90,
    max_samples=3,
    max_bytes=1 << 30,
    min_shards=2,
    workers=0,
)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Ten good 32-frame videos (s0..s9), plus one bad video for each reject reason."""
    root = tmp_path_factory.mktemp("raw")
    rows = []
    for i in range(10):
        write_video(root / f"videos/v{i}.mp4", 32)
        rows.append(sample_row(f"s{i}", f"videos/v{i}.mp4"))
    # a second sentence on v3: one decode serves both samples
    rows.append(sample_row("s3b", "videos/v3.mp4", tube=(2, 5), sentence="the dog on the right"))
    (root / "videos/empty.mp4").write_bytes(b"")
    (root / "videos/garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    data = write_video(root / "tmp.mp4", 32).read_bytes()
    (root / "videos/truncated.mp4").write_bytes(data[: len(data) // 2])  # index at the end: cannot open
    data = bytearray(write_video(root / "tmp_fs.mp4", 32, faststart=True).read_bytes())  # index first
    (root / "videos/truncated_fs.mp4").write_bytes(data[: len(data) // 2])  # decord indexes all packets at open
    data[int(0.4 * len(data)) : int(0.7 * len(data))] = bytes(int(0.7 * len(data)) - int(0.4 * len(data)))
    (root / "videos/corrupt_mid.mp4").write_bytes(data)  # opens, then frame data fails to decode
    write_video(root / "videos/short.mp4", 10)  # the annotation says 32 frames
    bad = {
        "empty": "empty_video",
        "garbage": "undecodable_video",
        "truncated": "undecodable_video",
        "truncated_fs": "undecodable_video",
        "corrupt_mid": "decode_error",
        "short": "too_few_frames",
        "missing": "missing_video",
    }
    rows += [sample_row(f"bad_{name}", f"videos/{name}.mp4") for name in bad]
    return root, sample_table(rows), bad


def _shard_bytes(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))}


def test_shards_hold_every_good_sample_with_frames_and_metadata(raw, tmp_path):
    root, table, bad = raw
    manifest = write_split(table, root, tmp_path, CFG, progress=False)
    assert manifest["samples"] == 11 and manifest["rejected"] == len(bad)
    assert len(manifest["shards"]) >= CFG.min_shards
    assert all(s["samples"] <= CFG.max_samples for s in manifest["shards"])
    for s in manifest["shards"]:
        data = (tmp_path / s["name"]).read_bytes()
        assert len(data) == s["bytes"] and hashlib.sha256(data).hexdigest() == s["sha256"]
    with tarfile.open(tmp_path / "shard-000001.tar") as tar:
        members = tar.getmembers()
        assert members
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.mode == 0o444 for m in members)
        names = [m.name for m in members]
        meta = json.loads(tar.extractfile(f"{names[0].split('.')[0]}.json").read())
        jpgs = [n for n in names if n.startswith(meta["sample_id"] + ".") and n.endswith(".jpg")]
        frame = decode_jpeg(torch.frombuffer(bytearray(tar.extractfile(jpgs[5]).read()), dtype=torch.uint8))
    assert len(jpgs) == len(meta["frame_ids"]) == 31  # 1.6 fps video at 3.2 fps: every frame but the last
    assert frame.shape == (3, 24, 32) and meta["size"] == [24, 32] and meta["orig_size"] == [48, 64]
    assert abs(int(frame[0, 12, 2]) - 8 * meta["frame_ids"][5]) <= 6  # red level encodes the frame id
    assert meta["gt_indices"] == list(range(8, 21))


def test_each_bad_video_is_rejected_with_its_reason_and_file(raw, tmp_path):
    root, table, bad = raw
    write_split(table, root, tmp_path, CFG, progress=False)
    rejects = {r["sample_id"]: r for r in pq.read_table(tmp_path / "rejects.parquet").to_pylist()}
    assert {k: v["reason"] for k, v in rejects.items()} == {f"bad_{n}": reason for n, reason in bad.items()}
    for name in bad:
        assert f"{name}.mp4" in rejects[f"bad_{name}"]["message"]
    assert "10 decodable frames" in rejects["bad_short"]["message"]


def test_rerun_is_byte_identical_and_a_worker_pool_or_mapper_changes_nothing(raw, tmp_path):
    root, table, _ = raw
    write_split(table, root, tmp_path / "a", CFG, progress=False)
    write_split(table, root, tmp_path / "b", dataclasses.replace(CFG, workers=2), progress=False)
    mapped = []
    work = shard_writer.plan_shards(table, root, tmp_path / "c", CFG)
    shard_writer.write_shards(
        work, (mapped.append(1) or shard_writer.encode_task(task) for task in work.tasks), progress=False
    )
    first = _shard_bytes(tmp_path / "a")
    assert first == _shard_bytes(tmp_path / "b") == _shard_bytes(tmp_path / "c")
    assert len(mapped) == 17  # one item per video
    assert (tmp_path / "a/manifest.json").read_bytes() == (tmp_path / "b/manifest.json").read_bytes()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("shard-*.tar")}
    write_split(table, root, tmp_path / "a", CFG, progress=False)  # nothing changed: every shard is kept
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("shard-*.tar")} == mtimes
    assert _shard_bytes(tmp_path / "a") == first


def test_output_does_not_depend_on_video_mtimes_but_on_their_content(raw, tmp_path):
    # The shard folder is a DVC output: its hash must be the same in every clone (videos written at other times).
    root, table, _ = raw
    write_split(table, root, tmp_path / "a", CFG, progress=False)
    video = root / table.column("video_path")[0].as_py()
    os.utime(video, ns=(1, 1))
    write_split(table, root, tmp_path / "b", CFG, progress=False)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert files
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    # A changed video is noticed: its shard is rewritten on the next run.
    original = video.read_bytes()
    try:
        video.write_bytes(original[:-16] + bytes(16))
        markers = {p.name: p.read_text() for p in (tmp_path / "a").glob("*.done.json")}
        write_split(table, root, tmp_path / "a", CFG, progress=False)
        after = {p.name: p.read_text() for p in (tmp_path / "a").glob("*.done.json")}
        assert after.keys() == markers.keys() and after != markers
    finally:
        video.write_bytes(original)


def test_interrupted_run_resumes_to_the_same_bytes(raw, tmp_path, monkeypatch):
    root, table, _ = raw
    write_split(table, root, tmp_path / "full", CFG, progress=False)
    real = shard_writer.encode_task
    calls = []

    def counted(task, die_after=None):
        calls.append(task[0])
        if die_after is not None and len(calls) > die_after:
            raise KeyboardInterrupt("simulated interruption")
        return real(task)

    # videos in plan order: the 7 bad ones, then v0..v9; dying at the 13th leaves shard 0 (s0..s2) finished
    monkeypatch.setattr(shard_writer, "encode_task", lambda task: counted(task, die_after=12))
    with pytest.raises(KeyboardInterrupt):
        write_split(table, root, tmp_path / "resumed", CFG, progress=False)
    assert list(_shard_bytes(tmp_path / "resumed")) == ["shard-000000.tar"]
    assert list((tmp_path / "resumed").glob(".shard-000001.tar.tmp"))  # the shard being written when it died
    mtime = (tmp_path / "resumed/shard-000000.tar").stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(shard_writer, "encode_task", counted)
    write_split(table, root, tmp_path / "resumed", CFG, progress=False)
    assert _shard_bytes(tmp_path / "resumed") == _shard_bytes(tmp_path / "full")
    assert (tmp_path / "resumed/shard-000000.tar").stat().st_mtime_ns == mtime  # kept, not rewritten
    assert [c.rsplit("/", 1)[1] for c in calls] == [f"v{i}.mp4" for i in range(3, 10)]  # only the rest decoded
    assert not list((tmp_path / "resumed").glob(".*.tmp"))


def test_changed_params_rewrite_the_shards(raw, tmp_path):
    root, table, _ = raw
    write_split(table, root, tmp_path, CFG, progress=False)
    before = _shard_bytes(tmp_path)
    write_split(table, root, tmp_path, dataclasses.replace(CFG, jpeg_quality=50), progress=False)
    after = _shard_bytes(tmp_path)
    assert before
    assert before.keys() == after.keys() and all(before[k] != after[k] for k in before)


def test_stage_shards_every_normalized_table(raw, tmp_path):
    root, table, _ = raw
    normalized = tmp_path / "normalize"
    (normalized / "hcstvg_v1").mkdir(parents=True)
    pq.write_table(table, normalized / "hcstvg_v1/train.parquet")
    (tmp_path / "out/hcstvg_v1/old_split").mkdir(parents=True)
    summary = shard_stage.shard(normalized, root, tmp_path / "out", CFG, progress=False)
    assert summary["hcstvg_v1/train"]["samples"] == 11
    assert json.loads((tmp_path / "out/summary.json").read_text()) == summary
    assert not (tmp_path / "out/hcstvg_v1/old_split").exists()


def test_sha256_file_is_the_digest_of_the_bytes(tmp_path):
    from cgstvg.utils.hashing import sha256_file

    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 5000)  # more than one read chunk
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_reject_messages_carry_no_wall_clock_time(raw, tmp_path):
    # decord's logger prefixes "[HH:MM:SS] "; in the rejects table it would make reruns differ byte for byte.
    import re

    root, table, _ = raw
    write_split(table, root, tmp_path, CFG, progress=False)
    messages = [r["message"] for r in pq.read_table(tmp_path / "rejects.parquet").to_pylist()]
    assert len(messages) == 7
    assert not [m for m in messages if re.search(r"\[\d{2}:\d{2}:\d{2}\]", m)]
