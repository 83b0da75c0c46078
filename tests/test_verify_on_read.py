"""Verify on read: every audit case of a damaged or stale input that used to pass silently with exit 0.

- a bit-flipped training checkpoint is never resumed (the next older one is, or a fresh start, with a warning);
- a shard dropped from a manifest, a sample count edited, a sample missing against the normalized table, or a
  deleted manifest: an error naming the manifest (and `extract` deletes no features);
- flipped bytes in a feature shard: an error naming the tar in `train`, a rebuild (said so) in `extract`;
- a changed `shards.min_shards`: the split is rewritten, byte for byte what a clean run writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import struct
import tarfile
import zipfile

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from cgstvg.data.feature_arrays import load_npy
from cgstvg.data.feature_loader import FeatureShardLoader
from cgstvg.data.schema import sample_table
from cgstvg.data.shard_reader import ShardLoader, iter_split_samples, verified_manifest
from cgstvg.data.shard_writer import ShardConfig, write_split
from cgstvg.engine import checkpoint as ckpt
from cgstvg.engine.distributed import init_distributed
from cgstvg.engine.optim import group_specs_from_params
from cgstvg.engine.train_loop import TrainSettings, train
from cgstvg.utils.integrity import IntegrityError
from pipeline_support import prepare_shards, run_stage, tiny_params
from video_samples import sample_row, write_video

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = ShardConfig(
    policy={"hcstvg_v1": "hcstvg"},
    sampling={"hcstvg_fps": 3.2, "vidstg_frames": 8, "fixed_frames": 8, "eval_multiplier": 2},
    short_side=24,
    max_long_side=40,
    max_samples=256,
    min_shards=4,
    workers=0,
)


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _edit_json(path, edit):
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def _drop_last_shard(manifest):
    """Remove the last shard from a manifest and keep its counts consistent, as a careless hand edit would."""
    dropped = manifest["shards"].pop()
    manifest["samples"] -= dropped["samples"]
    manifest["bytes"] -= dropped["bytes"]


# ---------------------------------------------------------------- frame shards (the writer and reader alone)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Eight 16-frame videos, one sample each; the split's table as a Parquet file."""
    root = tmp_path_factory.mktemp("raw")
    rows = []
    for i in range(8):
        write_video(root / f"v{i}.mp4", 16)
        rows.append(sample_row(f"s{i}", f"v{i}.mp4", frames=16, tube=(4, 10)))
    table = sample_table(rows)
    pq.write_table(table, root / "train.parquet")
    return root, table


@pytest.fixture
def split(raw, tmp_path):
    """The eight samples as 4 shards of 2, in a fresh folder per test."""
    root, table = raw
    out = tmp_path / "hcstvg_v1" / "train"
    manifest = write_split(table, root, out, CFG, progress=False)
    assert [s["samples"] for s in manifest["shards"]] == [2, 2, 2, 2]
    return out


def test_a_shard_dropped_from_the_manifest_is_an_error_naming_it(split):
    _edit_json(split / "manifest.json", _drop_last_shard)  # the loader would read 6 of 8 samples
    with pytest.raises(IntegrityError, match=re.escape(f"{split / 'manifest.json'}: does not list shard-000003.tar")):
        ShardLoader(split, batch_size=2, train=True)
    with pytest.raises(IntegrityError, match="manifest.json"):
        list(iter_split_samples(split))


def test_an_edited_sample_count_is_an_error_naming_the_shard(split):
    def one_less(manifest):
        manifest["shards"][1]["samples"] -= 1
        manifest["samples"] -= 1

    _edit_json(split / "manifest.json", one_less)
    with pytest.raises(IntegrityError, match=re.escape(f"{split / 'shard-000001.tar'}: 2 samples")):
        ShardLoader(split, batch_size=2, train=False)


def test_a_flipped_byte_in_a_frame_shard_is_an_error_naming_it(split):
    tar = split / "shard-000002.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(data)
    with pytest.raises(IntegrityError, match=re.escape(f"{tar}: sha256")):
        ShardLoader(split, batch_size=2, train=False)


def test_shards_must_be_complete_against_the_normalized_table(raw, split):
    # a shard removed with its tar and marker and the manifest made consistent: only the table can tell
    for name in ("shard-000003.tar", "shard-000003.done.json"):
        (split / name).unlink()
    _edit_json(split / "manifest.json", _drop_last_shard)
    assert verified_manifest(split)["samples"] == 6
    with pytest.raises(IntegrityError, match=re.escape(f"{split / 'manifest.json'}: 2 of the 8 rows")):
        verified_manifest(split, raw[0] / "train.parquet")


def test_a_changed_min_shards_rewrites_the_split_as_a_clean_run(raw, tmp_path, capsys):
    root, table = raw
    # the audit: shards cut with min_shards 2 (2 shards of 4) were kept after min_shards became 4
    before = write_split(table, root, tmp_path / "resumed", dataclasses.replace(CFG, min_shards=2), progress=False)
    assert [s["samples"] for s in before["shards"]] == [4, 4]
    capsys.readouterr()
    write_split(table, root, tmp_path / "resumed", CFG, progress=False)
    said = capsys.readouterr().out
    write_split(table, root, tmp_path / "clean", CFG, progress=False)
    assert _files(tmp_path / "resumed") == _files(tmp_path / "clean")  # shards, markers, manifest, rejects
    assert "shard-000000.tar: written for another plan" in said
    # and a smaller table after a larger one (the closing sample and the cap changed): still a clean run's bytes
    small = table.slice(0, 3)
    write_split(small, root, tmp_path / "resumed", CFG, progress=False)
    write_split(small, root, tmp_path / "clean_small", CFG, progress=False)
    assert _files(tmp_path / "resumed") == _files(tmp_path / "clean_small")


# ---------------------------------------------------------------- checkpoints


def _flip_tensor_bit(path):
    """Flip one bit in the middle of the largest tensor of a torch checkpoint: it still loads, with a wrong value."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x10
    path.write_bytes(data)


def test_a_bit_flipped_checkpoint_is_never_resumed(tmp_path, caplog):
    for step in (14, 16):
        ckpt.save_checkpoint(tmp_path, {"step": step, "fingerprint": "a", "w": torch.arange(64.0) + step})
    newest = tmp_path / "step_00000016.pt"
    _flip_tensor_bit(newest)
    assert not torch.equal(ckpt.load_checkpoint(newest)["w"], torch.arange(64.0) + 16)  # torch does not notice
    with caplog.at_level(logging.WARNING, logger="cgstvg.engine.checkpoint"):
        state = ckpt.latest_checkpoint(tmp_path, "a")
    assert state["step"] == 14 and torch.equal(state["w"], torch.arange(64.0) + 14)
    assert f"not resuming from {newest}" in caplog.text
    _flip_tensor_bit(tmp_path / "step_00000014.pt")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cgstvg.engine.checkpoint"):
        assert ckpt.latest_checkpoint(tmp_path, "a") is None  # none verifies: a fresh start
    assert "step_00000014.pt" in caplog.text and "step_00000016.pt" in caplog.text
    # a checkpoint without its sidecar (a save that never finished) does not verify either
    ckpt.save_checkpoint(tmp_path, {"step": 18, "fingerprint": "a"}, keep=5)
    (tmp_path / "step_00000018.pt.sha256").unlink()
    assert ckpt.latest_checkpoint(tmp_path, "a") is None


STEPS = 4


def _batches(epoch, skip):
    g = torch.Generator().manual_seed(epoch)
    xs = torch.randn(STEPS, 8, 4, generator=g)
    for x in xs[skip:]:
        yield x, x.sum(1, keepdim=True)


def _train(directory):
    torch.manual_seed(0)
    settings = TrainSettings(
        epochs=2, steps_per_epoch=STEPS, warmup_steps=0, milestones=(), checkpoint_every=2, log_every=2, seed=1
    )
    return train(
        nn.Linear(4, 1),
        group_specs_from_params({"lr": 1e-2}),
        lambda model, batch: (((model(batch[0]) - batch[1]) ** 2).mean(), {}),
        _batches,
        settings,
        init_distributed("cpu"),
        directory,
        fingerprint="fp",
        progress=False,
    )


def test_training_resumes_from_the_older_checkpoint_when_the_newest_is_flipped(tmp_path, caplog):
    whole = _train(tmp_path / "ckpt")
    assert whole.step == 8 and [s for s, _ in ckpt.list_checkpoints(tmp_path / "ckpt")] == [6, 8]
    _flip_tensor_bit(tmp_path / "ckpt" / "step_00000008.pt")
    with caplog.at_level(logging.WARNING, logger="cgstvg.engine.checkpoint"):
        again = _train(tmp_path / "ckpt")
    assert "not resuming from" in caplog.text and "step_00000008.pt" in caplog.text
    assert again.resumed_from == 6 and again.steps_run == 2  # not 8, the flipped one
    for a, b in zip(whole.model.state_dict().values(), again.model.state_dict().values()):
        torch.testing.assert_close(a, b)  # the older checkpoint continues the same run
    ckpt.verify_checkpoint(tmp_path / "ckpt" / "step_00000008.pt")  # rewritten, verified


# ---------------------------------------------------------------- the stages (tiny pipeline)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """synthesize + normalize + shard + extract of the tiny data (12 train, 4 test samples, 2 shards per split)."""
    d = tmp_path_factory.mktemp("verify")
    prepare_shards(d, tiny_params())
    return d


@pytest.fixture
def work(pipeline_dir, tmp_path):
    """A copy of the tiny pipeline's folder that a test may damage."""
    shutil.copytree(pipeline_dir / "out", tmp_path / "out")
    shutil.copy(pipeline_dir / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_extract_stops_on_a_deleted_manifest_and_keeps_that_splits_features(work):
    features = work / "out/extract/hcstvg_v1/test"
    before = _files(features)
    assert "shard-000000.tar" in before
    (work / "out/shard/hcstvg_v1/test/manifest.json").unlink()
    with pytest.raises(SystemExit, match=re.escape("out/shard/hcstvg_v1/test/manifest.json: missing")):
        run_stage("extract", work, work / "params.yaml")
    assert _files(features) == before


def test_extract_and_train_stop_on_a_shard_missing_from_the_manifest(work):
    shards = work / "out/shard/hcstvg_v1/train"
    _edit_json(shards / "manifest.json", _drop_last_shard)
    with pytest.raises(SystemExit, match=re.escape("out/shard/hcstvg_v1/train/manifest.json: does not list")):
        run_stage("train", work, work / "params.yaml")
    # the shard deleted as well: only the normalized table shows the samples are gone
    last = sorted(shards.glob("shard-*.tar"))[-1]
    last.unlink()
    (shards / last.name.replace(".tar", ".done.json")).unlink()
    with pytest.raises(SystemExit, match=r"out/shard/hcstvg_v1/train/manifest.json: \d+ of the 12 rows"):
        run_stage("extract", work, work / "params.yaml")


def test_evaluate_stops_on_shards_missing_samples_of_its_table(work):
    shards = work / "out/shard/hcstvg_v1/test"
    last = sorted(shards.glob("shard-*.tar"))[-1]
    last.unlink()
    (shards / last.name.replace(".tar", ".done.json")).unlink()
    _edit_json(shards / "manifest.json", _drop_last_shard)  # consistent: it would score the other samples only
    with pytest.raises(SystemExit, match=r"out/shard/hcstvg_v1/test/manifest.json: \d+ of the 4 rows"):
        run_stage("evaluate", work, work / "params.yaml")  # before the model is even loaded (none is trained here)


def _flip_motion_payload(tar_path):
    """Flip 8 bytes inside the first `motion.npy` payload of a feature shard; returns the member's name."""
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".motion.npy"))
    data = bytearray(tar_path.read_bytes())
    at = member.offset_data + member.size - 16  # past the npy header: the values themselves
    data[at : at + 8] = bytes(b ^ 0xFF for b in data[at : at + 8])
    tar_path.write_bytes(data)
    return member.name, bytes(data[member.offset_data : member.offset_data + member.size])


def test_flipped_feature_bytes_stop_train_and_are_rebuilt_by_extract(work, capsys):
    features = work / "out/extract/hcstvg_v1/train"
    tar = features / "shard-000000.tar"
    original = tar.read_bytes()
    name, payload = _flip_motion_payload(tar)
    load_npy(payload, name)  # the damaged member still parses: only the sha256 can tell
    with pytest.raises(IntegrityError, match=re.escape(f"{tar}: sha256")):
        FeatureShardLoader(
            work / "out/shard/hcstvg_v1/train", features, features=("motion",), batch_size=2, train=False
        )
    with pytest.raises(SystemExit, match=re.escape("out/extract/hcstvg_v1/train/shard-000000.tar: sha256")):
        run_stage("train", work, work / "params.yaml")
    capsys.readouterr()
    run_stage("extract", work, work / "params.yaml")  # resumable: the bad shard is rebuilt, saying so
    out = capsys.readouterr().out
    assert "shard-000000.tar: its bytes differ from its marker (damaged); recomputing it" in out
    assert out.count("recomputing it") == 1  # the intact shards are reused (the fingerprint is stable)
    assert tar.read_bytes() == original
