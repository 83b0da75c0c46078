"""The shard loader: DDP split, fixed epoch length, decoded content, augmentations and padded batches."""

import random

import pytest
import torch

from cgstvg.data.augment import TrainAugment, hflip, swap_left_right, temporal_crop
from cgstvg.data.collate import IMAGENET_MEAN, IMAGENET_STD, collate_clips
from cgstvg.data.schema import sample_table
from cgstvg.data.shard_reader import ShardLoader
from cgstvg.data.shard_writer import ShardConfig, write_split
from video_samples import sample_row, write_video

CFG = ShardConfig(
    policy={"hcstvg_v1": "hcstvg"},
    sampling={"hcstvg_fps": 3.2, "vidstg_frames": 8, "fixed_frames": 8, "eval_multiplier": 2},
    short_side=24,
    max_long_side=40,
    max_samples=2,
    min_shards=4,
    workers=0,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """12 training samples in 6 shards; samples differ in length (16..32 frames) and size (48x64 or 48x80)."""
    root = tmp_path_factory.mktemp("raw")
    rows = []
    for i in range(12):
        frames, width = 16 + 16 * (i % 2), 64 + 16 * (i % 3 == 0)
        write_video(root / f"v{i:02d}.mp4", frames, width=width)
        rows.append(sample_row(f"s{i:02d}", f"v{i:02d}.mp4", frames=frames, width=width, tube=(4, 10)))
    out = tmp_path_factory.mktemp("shards") / "hcstvg_v1" / "train"
    write_split(sample_table(rows), root, out, CFG, progress=False)
    return out


def _epoch(loader):
    return [[t["sample_id"] for t in batch["targets"]] for batch in loader]


def test_two_ranks_see_disjoint_samples_and_the_same_number_of_batches(shards, monkeypatch):
    seen = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = ShardLoader(shards, batch_size=2, train=True, shuffle_buffer=4, augment=TrainAugment())
        batches = _epoch(loader)
        assert len(batches) == len(loader) == 3  # 12 samples / (2 ranks x 2 per batch)
        assert all(len(b) == 2 for b in batches)
        seen[rank] = {s for b in batches for s in b}
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_epochs_reshuffle_and_are_reproducible(shards):
    loader = ShardLoader(shards, batch_size=3, train=True, shuffle_buffer=6)
    first = _epoch(loader)
    assert first == _epoch(loader)  # same seed and epoch: same order
    loader.set_epoch(1)
    assert _epoch(loader) != first
    assert len(first) == 4


def test_worker_processes_split_the_shards(shards):
    loader = ShardLoader(shards, batch_size=2, train=False, num_workers=2)
    ids = [s for b in _epoch(loader) for s in b]
    assert sorted(ids) == [f"s{i:02d}" for i in range(12)]  # evaluation: every sample exactly once


def test_batches_are_padded_with_masks_and_normalized_frames(shards):
    batch = next(iter(ShardLoader(shards, batch_size=12, train=False)))
    frames, tmask, pmask = batch["frames"], batch["time_mask"], batch["pixel_mask"]
    assert frames.shape == (12, 31, 3, 24, 40) and frames.dtype == torch.float32
    lengths = {t["sample_id"]: int(n) for t, n in zip(batch["targets"], tmask.sum(1))}
    assert lengths["s00"] == 15 and lengths["s01"] == 31  # 16- and 32-frame videos, last frame dropped
    for i, t in enumerate(batch["targets"]):
        h, w = t["size"].tolist()
        assert (h, w) == ((24, 40) if t["sample_id"] in {"s00", "s03", "s06", "s09"} else (24, 32))
        assert pmask[i, :h, :w].all() and pmask[i].sum() == h * w
        assert (frames[i, :, :, :, w:] == 0).all() and (frames[i, tmask[i].sum() :] == 0).all()
        assert t["gt_indices"].tolist() == list(range(4, 11)) and t["start_index"] == 4 and t["end_index"] == 10
        assert t["boxes"].shape == (7, 4) and t["actioness"].sum() == 7
    # pixel values: the red channel of frame f is 8*f, after ImageNet normalization
    t = batch["targets"][0]
    red = frames[0, 5, 0, 20, 2] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert abs(float(red) * 255 - 8 * int(t["frame_ids"][5])) <= 6


def _clip(n=10, gt=(3, 6)):
    frames = torch.arange(n * 3 * 4 * 6, dtype=torch.float32).reshape(n, 3, 4, 6)
    gt_idx = torch.arange(gt[0], gt[1] + 1)
    act = torch.zeros(n)
    act[gt_idx] = 1
    boxes = torch.tensor([[0.25, 0.5, 0.2, 0.4]]).repeat(len(gt_idx), 1)
    return {
        "frames": frames,
        "frame_ids": torch.arange(100, 100 + n),
        "actioness": act,
        "gt_indices": gt_idx,
        "boxes": boxes,
        "boxes_xyxy": torch.tensor([[10.0, 20.0, 30.0, 40.0]]).repeat(len(gt_idx), 1),
        "orig_size": [60, 100],
        "sentence": "The Left man walks left, not right; bright leftovers stay.",
        "meta": {},
    }


def test_flip_mirrors_frames_and_boxes_and_swaps_left_right():
    clip = _clip()
    flipped = hflip(clip)
    assert torch.equal(flipped["frames"], clip["frames"].flip(-1))
    assert torch.allclose(flipped["boxes"][0], torch.tensor([0.75, 0.5, 0.2, 0.4]))
    assert flipped["boxes_xyxy"][0].tolist() == [70.0, 20.0, 90.0, 40.0]  # mirrored in the 100-px original width
    assert flipped["sentence"] == "The Right man walks right, not left; bright leftovers stay."
    assert clip["sentence"].startswith("The Left")  # the input clip is untouched
    assert swap_left_right("LEFT or Right") == "RIGHT or Left"


def test_temporal_crop_keeps_the_whole_gt():
    clip = _clip(n=10, gt=(3, 6))
    starts, ends = set(), set()
    for seed in range(200):
        out = temporal_crop(clip, random.Random(seed))
        ids = out["frame_ids"].tolist()
        assert set(range(103, 107)) <= set(ids) and ids == list(range(ids[0], ids[-1] + 1))
        assert out["frame_ids"][out["gt_indices"]].tolist() == [103, 104, 105, 106]
        assert out["actioness"].sum() == 4 and out["frames"].shape[0] == len(ids)
        starts.add(ids[0])
        ends.add(ids[-1])
    assert starts == {100, 101, 102} and ends == {107, 108, 109}  # uniform over the frames outside the GT


def test_multi_scale_resize_changes_size_not_normalized_boxes():
    aug = TrainAugment(flip_prob=0.0, temporal_crop_prob=0.0, scales=(2,), max_long_side=100)
    clip = _clip()
    out = aug(dict(clip, frames=clip["frames"].to(torch.uint8)), random.Random(0))
    assert out["frames"].shape[-2:] == (2, 3) and torch.equal(out["boxes"], clip["boxes"])


def test_collate_rejects_an_empty_batch():
    with pytest.raises(ValueError, match="empty"):
        collate_clips([])


def test_iter_split_samples_reads_every_shard_in_manifest_order(shards):
    from cgstvg.data.shard_reader import iter_shard_samples, iter_split_samples, read_manifest

    keys = [s["__key__"] for s in iter_split_samples(shards)]
    assert keys == sorted(keys) and len(keys) == 12  # planned by (video, sample id): v00/s00 ... v11/s11
    by_shard = [
        s["__key__"] for shard in read_manifest(shards)["shards"] for s in iter_shard_samples(shards / shard["name"])
    ]
    assert by_shard == keys
