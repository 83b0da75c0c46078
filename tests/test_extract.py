"""`extract`: feature shards equal whether computed in one run or resumed; the loader joins them to the frames."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from cgstvg.data.augment import TrainAugment
from cgstvg.data.feature_arrays import load_npy
from cgstvg.data.feature_loader import CachedFeatureAugment, FeatureShardLoader
from cgstvg.engine.features import FeatureExtractor, FrozenBackbones, extract_split
from cgstvg.model.motion import build_motion
from pipeline_support import run_stage, tiny_params, write_params


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("extract")
    params = write_params(d, tiny_params())
    for stage in ("synthesize", "normalize", "shard"):
        run_stage(stage, d, params)
    return d / "out" / "shard" / "hcstvg_v1"


def _extractor(seed=0):
    torch.manual_seed(seed)
    motion = build_motion(tiny_params()["model"]["backbones"]["motion"])
    return FeatureExtractor(FrozenBackbones(motion), torch.device("cpu"), batch_frames=32)


class Interrupted(Exception):
    pass


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_resumed_extraction_equals_one_run(shards, tmp_path):
    once = extract_split(shards / "test", tmp_path / "once", _extractor(), "fp")
    assert once["samples"] == 4 and once["reused_shards"] == 0 and once["features"] == ["motion"]

    extractor = _extractor()
    real = extractor.shard_members
    calls = []

    def dying(url):
        calls.append(url)
        if len(calls) == 2:  # killed while computing the second shard
            raise Interrupted
        return real(url)

    extractor.shard_members = dying
    with pytest.raises(Interrupted):
        extract_split(shards / "test", tmp_path / "cut", extractor, "fp")
    assert sorted(p.name for p in (tmp_path / "cut").glob("shard-*")) == ["shard-000000.done.json", "shard-000000.tar"]
    extractor.shard_members = real
    resumed = extract_split(shards / "test", tmp_path / "cut", extractor, "fp")
    assert resumed["reused_shards"] == 1
    assert _files(tmp_path / "cut") == _files(tmp_path / "once")  # byte for byte, manifest included

    # another fingerprint (e.g. other backbone params) recomputes everything
    assert extract_split(shards / "test", tmp_path / "cut", _extractor(), "other")["reused_shards"] == 0
    # a damaged shard is recomputed, the intact one reused
    tar = tmp_path / "cut" / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:-10])
    again = extract_split(shards / "test", tmp_path / "cut", _extractor(), "other")
    assert again["reused_shards"] == 1 and tar.stat().st_size == again["shards"][1]["bytes"]


def test_evaluation_samples_get_one_motion_clip_per_pass(shards, tmp_path):
    extract_split(shards / "test", tmp_path / "f", _extractor(), "fp")
    loader = FeatureShardLoader(shards / "test", tmp_path / "f", features=("motion",), batch_size=4, train=False)
    batch = next(iter(loader))
    feats = batch["features"]
    t = batch["frames"].shape[1]
    assert feats["motion"].shape[:2] == (4, t) and feats["motion"].shape[-2:] == (6, 8)  # 48x64 / stride 8
    assert feats["motion.pass0"].shape[1] == len(range(0, t, 2))
    assert feats["motion.pass1"].shape[1] == len(range(1, t, 2))
    # a pass's Swin saw only its own frames, so its features are not a slice of the whole-clip features
    assert not torch.allclose(feats["motion.pass0"], feats["motion"][:, 0::2], atol=1e-3)
    meta = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert meta["features"] == ["motion"] and meta["samples"] == 4


def test_damaged_feature_member_names_the_file():
    with pytest.raises(ValueError, match="shard-000003.tar: k.motion.npy"):
        load_npy(b"not an npy file", "shard-000003.tar: k.motion.npy")


def test_cached_features_follow_the_crop_and_the_flip():
    n = 10
    frames = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 6).clone()
    frames[..., 0] = 200  # a bright left column, to see the flip
    motion = frames[:, :1].float()  # a "feature" that is the frame itself: (T, 1, 4, 6)
    clip = {
        "frames": frames,
        "frame_ids": torch.arange(100, 100 + n),
        "actioness": torch.zeros(n),
        "gt_indices": torch.tensor([4, 5, 6]),
        "boxes": torch.tensor([[0.25, 0.5, 0.1, 0.1]] * 3),
        "sentence": "the red square moves left",
        "meta": {"sample_id": "s"},
        "features": {"motion": motion, "text": torch.zeros(3, 2), "text.flipped": torch.ones(4, 2)},
    }
    aug = CachedFeatureAugment(TrainAugment(flip_prob=1.0, temporal_crop_prob=1.0, scales=()))
    out = aug(clip, random.Random(3))
    kept = out["frames"].shape[0]
    assert kept < n and out["features"]["motion"].shape[0] == kept
    torch.testing.assert_close(out["features"]["motion"], out["frames"][:, :1].float())  # same frames, same flip
    assert out["frames"][0, 0, 0, -1] == 200 and out["sentence"] == "the red square moves right"
    assert out["features"]["text"].shape == (4, 2) and "text.flipped" not in out["features"]
    with pytest.raises(ValueError, match="train_scales"):
        CachedFeatureAugment(TrainAugment(scales=(32,)))


def test_a_flip_takes_the_motion_of_the_mirrored_frames():
    """Flipping the cached motion would keep every motion's direction while the sentence swaps 'left' and 'right'."""
    n = 10
    frames = torch.zeros(n, 3, 4, 6, dtype=torch.uint8)
    motion = torch.arange(n * 24, dtype=torch.float32).view(n, 1, 4, 6)
    clip = {
        "frames": frames,
        "frame_ids": torch.arange(n),
        "actioness": torch.zeros(n),
        "gt_indices": torch.tensor([4, 5, 6]),
        "boxes": torch.tensor([[0.25, 0.5, 0.1, 0.1]] * 3),
        "sentence": "the red square moves left",
        "meta": {"sample_id": "s"},
        "features": {"motion": motion, "motion.flipped": -motion},
    }
    crop_and_flip = CachedFeatureAugment(TrainAugment(flip_prob=1.0, temporal_crop_prob=1.0, scales=()))
    out = crop_and_flip(clip, random.Random(3))
    kept = out["frames"].shape[0]
    start = int(clip["gt_indices"][0]) - int(out["gt_indices"][0])
    torch.testing.assert_close(out["features"]["motion"], -motion[start : start + kept])  # not mirrored again
    assert "motion.flipped" not in out["features"]
    no_flip = CachedFeatureAugment(TrainAugment(flip_prob=0.0, temporal_crop_prob=0.0, scales=()))
    assert torch.equal(no_flip(clip, random.Random(0))["features"]["motion"], motion)


def test_training_samples_carry_the_swin_of_their_mirrored_frames(shards, tmp_path):
    extractor = _extractor()
    extract_split(shards / "train", tmp_path / "f", extractor, "fp")
    loader = FeatureShardLoader(shards / "train", tmp_path / "f", features=("motion",), batch_size=1, train=False)
    sample = next(iter(loader))
    assert "motion.flipped" not in sample["features"]  # nothing flips without the training augmentation
    members = extractor.shard_members(str(shards / "train" / "shard-000000.tar"))[0]
    motion = load_npy(members["motion.npy"], "motion")
    mirrored = load_npy(members["motion.flipped.npy"], "motion.flipped")
    frames = sample["frames"][0][: motion.shape[0]]
    direct = extractor._motion([frames.flip(-1)])[0].half().float()
    torch.testing.assert_close(mirrored, direct, atol=2e-3, rtol=1e-2)
    assert not torch.allclose(mirrored, motion.flip(-1), atol=1e-2)  # a mirrored video is not mirrored features


def test_extract_stage_writes_tokenizer_weights_and_summary(shards):
    workdir = shards.parents[2]
    summary = run_stage("extract", workdir, workdir / "params.yaml")
    out = workdir / "out" / "extract"
    assert set(summary) == {"hcstvg_v1/test", "hcstvg_v1/train"}
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    from safetensors.torch import load_file

    keys = load_file(out / "frozen_backbones.safetensors")
    assert keys and all(k.startswith("motion.") for k in keys)
    rerun = run_stage("extract", workdir, workdir / "params.yaml")  # nothing recomputed, same bytes
    assert rerun == summary
    assert np.isfinite(load_npy(next(iter(_members(out / "hcstvg_v1" / "train")))[1], "x").numpy()).all()


def _members(split_dir):
    import webdataset as wds

    for sample in wds.tarfile_to_samples()(iter([{"url": str(split_dir / "shard-000000.tar")}])):
        yield sample["__key__"], sample["motion.npy"]


def test_fanned_out_extract_writes_the_same_bytes(shards):
    """flows/fanout.py maps `extract_shard_job` over worker processes: same files as the in-process run."""
    import concurrent.futures
    import multiprocessing

    import pipeline.extract as extract
    from cgstvg.data.shard_reader import read_manifest

    workdir = shards.parents[2]
    run_stage("extract", workdir, workdir / "params.yaml")  # the in-process run (reused if already there)
    plain = workdir / "out" / "extract" / "hcstvg_v1"
    expected = {split: _files(plain / split) for split in ("train", "test")}

    mapped = []

    def mapper(fn, items):
        items = list(items)
        mapped.extend(item["shard"]["name"] for item in items)
        ctx = multiprocessing.get_context("spawn")  # fresh workers: each rebuilds the extractor from disk
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
            yield from pool.map(fn, items)

    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        argv = ["--shards", "out/shard", "--out", "fanned/extract", "--params", str(workdir / "params.yaml")]
        extract.main(argv, mapper=mapper)
    finally:
        os.chdir(cwd)
    fanned = workdir / "fanned" / "extract" / "hcstvg_v1"
    assert {split: _files(fanned / split) for split in ("train", "test")} == expected
    assert len(mapped) == sum(len(read_manifest(shards / split)["shards"]) for split in ("train", "test"))


def test_features_mode_caches_the_backbones_of_the_grounding_init(shards, tmp_path):
    """With `train.input: features`, the cached appearance and text come from `model.init.grounding` (the weights
    `train` starts from), not from random weights under the head's pretrained input projection."""
    import copy

    from safetensors.torch import load_file

    import pipeline.extract as extract
    from cgstvg.model.cgstvg import build_cgstvg
    from cgstvg.model.convert import to_mdetr_state_dict

    workdir = shards.parents[2]
    params = copy.deepcopy(tiny_params())
    params["train"]["input"] = "features"
    tokenizer = workdir / "out" / "extract" / "tokenizer"
    if not tokenizer.is_dir():
        run_stage("extract", workdir, workdir / "params.yaml")
    torch.manual_seed(123)  # a seed other than base.seed: the pretrained weights differ from extract's own
    pretrained = build_cgstvg(params["model"], tokenizer)
    state, _ = to_mdetr_state_dict(pretrained.state_dict())
    torch.save({"model": state}, tmp_path / "mdetr.pth")

    def cached(init):
        params["model"]["init"] = dict(params["model"].get("init") or {}, grounding=init)
        path = write_params(tmp_path, params)
        out = tmp_path / f"extract_{'init' if init else 'random'}"
        extract.main(["--shards", str(workdir / "out" / "shard"), "--out", str(out), "--params", str(path)])
        return load_file(out / "frozen_backbones.safetensors")

    expected = pretrained.state_dict()
    with_init = cached(str(tmp_path / "mdetr.pth"))
    for prefix in ("appearance.", "text."):
        keys = [k for k in with_init if k.startswith(prefix)]
        assert keys and all(torch.equal(with_init[k], expected[k]) for k in keys), prefix
    without = cached(None)
    key = next(k for k in without if k.startswith("appearance.") and k.endswith("weight"))
    assert not torch.equal(without[key], expected[key])
