"""Read shards for training and evaluation: a webdataset pipeline with DDP splitting, padded batches out.

    loader = ShardLoader("outputs/shard/hcstvg_v1/train", batch_size=2, train=True, num_workers=2,
                         augment=TrainAugment.from_params(params["shard"]["loader"]))
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:  # len(loader) batches, the same count on every rank
            ...

Each batch is the dict documented in `cgstvg.data.collate` (`frames` (B, T, 3, H, W) float32 ImageNet-normalized,
`pixel_mask` (B, H, W), `time_mask` (B, T), `sentences`, `targets`).

Training (`train=True`): the shard list is shuffled per epoch with the same seed on every rank, split by rank
(`wds.split_by_node`) and by DataLoader worker (`wds.split_by_worker`), read endlessly (`repeat`) through a
shuffle buffer, augmented, batched, and cut at `batches_per_epoch` so that every rank sees the same number of
batches (default: floor(samples / (world_size x batch_size))). Rank and world size come from the RANK/WORLD_SIZE
environment variables or an initialized torch.distributed group (webdataset's `pytorch_worker_info`).
Evaluation (`train=False`): the same split by rank and worker, no shuffle, no augmentation, every sample exactly
once (ranks may then see different batch counts; gather the predictions after the loop).

Verify on read: the loader and `iter_split_samples` check a split against its manifest first (`verify_shards`:
every listed shard present with its size, sha256 and sample count, no shard in the folder left out of the
manifest); `verified_manifest` can also check it complete against its normalized table.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pyarrow.parquet as pq
import torch
import webdataset as wds
from torchvision.io import ImageReadMode, decode_jpeg
from webdataset.utils import pytorch_worker_info

from cgstvg.data.augment import TrainAugment
from cgstvg.data.collate import collate_clips
from cgstvg.utils.integrity import IntegrityError, tar_keys, verify_file

Augment = Callable[[dict, random.Random], dict]
"""A clip augmentation: (clip, rng) -> clip."""


def read_manifest(split_dir: str | Path) -> dict:
    path = Path(split_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shard manifest (run the `shard` stage first)")
    return json.loads(path.read_text())


def verify_shards(split_dir: str | Path, manifest: dict) -> dict[str, list[str]]:
    """Check the shards of a split (frame or feature shards) against its manifest before any is read; returns each
    shard's sample keys, in order. Raises IntegrityError naming the file when a listed shard is missing, has
    another size, sha256 or number of samples than listed, the listed counts do not add up to `samples`, or a
    `shard-*.tar` in the folder is not listed (a shard dropped from the manifest)."""
    split_dir = Path(split_dir)
    where = split_dir / "manifest.json"
    listed = [s["name"] for s in manifest["shards"]]
    unlisted = sorted({p.name for p in split_dir.glob("shard-*.tar")} - set(listed))
    if unlisted:
        raise IntegrityError(f"{where}: does not list {unlisted[0]} ({len(unlisted)} shard(s) of the folder left out)")
    total = sum(s["samples"] for s in manifest["shards"])
    if total != manifest["samples"]:
        raise IntegrityError(f"{where}: its shards list {total} samples, its `samples` says {manifest['samples']}")
    keys = {}
    for s in manifest["shards"]:
        tar = split_dir / s["name"]
        verify_file(tar, s["sha256"], where, size=s["bytes"])
        keys[s["name"]] = tar_keys(tar)
        if len(keys[s["name"]]) != s["samples"]:
            raise IntegrityError(f"{tar}: {len(keys[s['name']])} samples, {where} lists {s['samples']}")
    return keys


def verified_manifest(split_dir: str | Path, table: str | Path | None = None) -> dict:
    """The manifest of a frame-shard split after `verify_shards`; with `table` (the split's normalized Parquet
    table) also complete against it: every row is in exactly one of the shards and the split's rejects.parquet,
    and nothing else is (IntegrityError naming the manifest otherwise)."""
    split_dir = Path(split_dir)
    manifest = read_manifest(split_dir)
    keys = verify_shards(split_dir, manifest)
    if table is None:
        return manifest
    where, rejects_path = split_dir / "manifest.json", split_dir / "rejects.parquet"
    rejected = list(read_rejects(split_dir))
    if len(rejected) != manifest["rejected"]:
        raise IntegrityError(f"{rejects_path}: {len(rejected)} rows, {where} records {manifest['rejected']} rejects")
    rows = pq.read_table(table, columns=["sample_id"]).column("sample_id").to_pylist()
    accounted = [k for shard in keys.values() for k in shard] + rejected
    missing, extra = set(rows) - set(accounted), set(accounted) - set(rows)
    if missing:
        raise IntegrityError(
            f"{where}: {len(missing)} of the {len(rows)} rows of {table} are neither in its shards nor in "
            f"rejects.parquet (first: {min(missing)!r}); rerun `shard`"
        )
    if extra or len(accounted) != len(rows):
        raise IntegrityError(f"{where}: its shards and rejects do not match {table} one to one; rerun `shard`")
    return manifest


def read_rejects(split_dir: str | Path) -> dict[str, str]:
    """sample_id -> reason of every sample of a frame-shard split that `shard` rejected (its rejects.parquet)."""
    path = Path(split_dir) / "rejects.parquet"
    if not path.is_file():
        raise IntegrityError(f"{path}: missing (the `shard` stage writes one per split)")
    table = pq.read_table(path, columns=["sample_id", "reason"]).to_pydict()
    return dict(zip(table["sample_id"], table["reason"]))


def iter_shard_samples(url: str | Path) -> Iterator[dict]:
    """The raw webdataset samples of one tar (member suffix -> bytes, plus `__key__` and `__url__`), in file order.

    A tar that stops parsing part way raises IntegrityError naming it and the last sample read whole."""
    last = None
    try:
        for sample in wds.tarfile_to_samples()(iter([{"url": str(url)}])):
            last = sample["__key__"]
            yield sample
    except (tarfile.TarError, OSError, ValueError) as err:
        if isinstance(err, IntegrityError):
            raise
        after = f"after sample {last!r}" if last is not None else "before its first sample"
        raise IntegrityError(f"{url}: not a readable tar {after} ({type(err).__name__}: {err})") from None


def iter_split_samples(split_dir: str | Path) -> Iterator[dict]:
    """The raw samples of every shard of a split, shard by shard in the manifest's order (verified first)."""
    split_dir = Path(split_dir)
    for shard in verified_manifest(split_dir)["shards"]:
        yield from iter_shard_samples(split_dir / shard["name"])


def decode_frames(sample: dict) -> torch.Tensor:
    """The JPEG frames of a raw webdataset sample (`000.jpg`, `001.jpg`, ...) as (T, 3, H, W) uint8.

    Each frame is decoded and copied straight into one (T, H, W, 3) buffer (decode_jpeg's own memory layout, so
    the copy is a memcpy); the result is a channels-last view of it. This keeps one clip-sized uint8 buffer alive
    instead of a list of frames plus their stack.
    """
    names = sorted(k for k in sample if k.endswith(".jpg"))
    if not names:
        raise ValueError(f"{sample.get('__url__')}: sample {sample.get('__key__')!r} has no frames")
    buf = None
    for i, name in enumerate(names):
        try:
            frame = decode_jpeg(torch.frombuffer(bytearray(sample[name]), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError as err:  # a JPEG damaged after the manifest was written, or by its writer
            reason = str(err).strip().splitlines()[-1].split(", ")[-1]
            raise IntegrityError(
                f"{sample.get('__url__')}: sample {sample.get('__key__')!r}: frame {name} does not decode ({reason})"
            ) from None
        if buf is None:
            buf = torch.empty(len(names), *frame.shape[1:], 3, dtype=torch.uint8)
        elif frame.shape[1:] != buf.shape[1:3]:
            raise ValueError(
                f"{sample.get('__url__')}: sample {sample.get('__key__')!r}: frame {name} is "
                f"{tuple(frame.shape[1:])}, the first frame {tuple(buf.shape[1:3])}"
            )
        buf[i].copy_(frame.permute(1, 2, 0))
    return cast(torch.Tensor, buf).permute(0, 3, 1, 2)  # set by the first frame


def clip_from_sample(sample: dict) -> dict:
    """A raw webdataset sample (JPEGs + json) -> a clip dict (see `cgstvg.data.augment`), frames still uint8."""
    meta = json.loads(sample["json"])
    frames = decode_frames(sample)
    if frames.shape[0] != len(meta["frame_ids"]):
        raise ValueError(
            f"{sample.get('__url__')}: sample {meta['sample_id']!r} has {frames.shape[0]} frames, "
            f"its metadata lists {len(meta['frame_ids'])}"
        )
    actioness = torch.zeros(len(meta["frame_ids"]), dtype=torch.float32)
    actioness[meta["gt_indices"]] = 1.0
    return {
        "frames": frames,
        "frame_ids": torch.tensor(meta["frame_ids"], dtype=torch.long),
        "actioness": actioness,
        "gt_indices": torch.tensor(meta["gt_indices"], dtype=torch.long),
        "boxes": torch.tensor(meta["boxes_cxcywh"], dtype=torch.float32).reshape(-1, 4),
        "boxes_xyxy": torch.tensor(meta["boxes_xyxy"], dtype=torch.float32).reshape(-1, 4),
        "orig_size": meta["orig_size"],
        "sentence": meta["sentence"],
        "meta": meta,
    }


def stream_seed(*parts) -> int:
    """A seed from a tuple of ints and strings (stable across processes, unlike hash() of a str)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


class ShardLoader:
    """Batches from the shards of one split (see the module docstring). Iterate it once per epoch."""

    augment: Augment | None  # a TrainAugment here; subclasses may wrap it

    def __init__(
        self,
        split_dir: str | Path,
        *,
        batch_size: int,
        train: bool,
        num_workers: int = 0,
        shuffle_buffer: int = 256,
        augment: TrainAugment | None = None,
        seed: int = 2021,
        batches_per_epoch: int | None = None,
    ):
        self.split_dir = Path(split_dir)
        self.manifest = verified_manifest(split_dir)  # once per loader, not per epoch
        self.urls = [str(self.split_dir / s["name"]) for s in self.manifest["shards"]]
        self.batch_size, self.train, self.num_workers = batch_size, train, num_workers
        self.shuffle_buffer, self.augment, self.seed = shuffle_buffer, augment, seed
        self.epoch = 0
        self._passes: dict[str, int] = {}
        rank, world, _, _ = pytorch_worker_info()
        self.rank, self.world_size = rank, world
        if train:
            readers = world * max(1, num_workers)
            if len(self.urls) < readers:
                raise ValueError(
                    f"{self.split_dir}: {len(self.urls)} shards for {world} ranks x "
                    f"{max(1, num_workers)} workers; raise shard.shards.min_shards to >= {readers}"
                )
            default = self.manifest["samples"] // (world * batch_size)
            self.batches_per_epoch = max(1, batches_per_epoch or default)
        else:
            self.batches_per_epoch = None

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle shards, buffer and augmentations for this epoch (call before iterating, as with DDP samplers)."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("an evaluation loader has no fixed length: each rank reads its shards once")
        return self.batches_per_epoch

    def _worker_rng(self, purpose: str) -> random.Random:
        """A generator per (seed, epoch, rank, worker, purpose, pass over this worker's shards)."""
        rank, _, worker, _ = pytorch_worker_info()
        self._passes[purpose] = self._passes.get(purpose, -1) + 1  # `repeat` restarts the stages each pass
        return random.Random(stream_seed(self.seed, self.epoch, rank, worker, purpose, self._passes[purpose]))

    def _shuffled(self, src):
        yield from wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=self._worker_rng("shuffle"))(src)

    def _clips(self, src):
        rng = self._worker_rng("augment") if self.augment is not None else None
        for sample in src:
            clip = clip_from_sample(sample)
            if rng is not None:
                clip = cast(Augment, self.augment)(clip, rng)  # rng is set only with an augment
            yield clip  # uint8 frames: `collate_clips` normalizes them into the padded batch

    def pipeline(self) -> wds.DataPipeline:
        urls = list(self.urls)
        if self.train:  # the same permutation on every rank, so split_by_node keeps the ranks disjoint
            random.Random(stream_seed(self.seed, self.epoch)).shuffle(urls)
        stages = [wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker, wds.tarfile_to_samples()]
        if self.train:
            stages.append(self._shuffled)
        stages += [self._clips, wds.batched(self.batch_size, collation_fn=collate_clips, partial=not self.train)]
        pipe = wds.DataPipeline(*stages)
        return pipe.repeat() if self.train else pipe

    def __iter__(self):
        self._passes = {}
        loader = torch.utils.data.DataLoader(
            self.pipeline(), batch_size=None, num_workers=self.num_workers, persistent_workers=False
        )
        if self.batches_per_epoch is None:
            return iter(loader)
        return itertools.islice(loader, self.batches_per_epoch)


__all__ = [
    "IntegrityError",
    "ShardLoader",
    "clip_from_sample",
    "decode_frames",
    "iter_shard_samples",
    "iter_split_samples",
    "read_manifest",
    "stream_seed",
    "verified_manifest",
    "verify_shards",
]
