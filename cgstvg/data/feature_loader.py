"""The shard loader with the cached features of `extract` joined to every sample.

`FeatureShardLoader` is `cgstvg.data.shard_reader.ShardLoader` (same shard order, DDP split, shuffle, seeds and
batch cut) whose samples also read the feature shard of the same name in `feature_dir`, in lockstep (both tars
hold the same keys in the same order; a mismatch is an error naming both files). Batches are the dict of
`cgstvg.data.collate` plus `features`:
- `features["motion"]`, `features["appearance"]`: (B, T, C, H', W') float32, zero on padded frames and cells;
- `features["motion.pass{k}"]`: (B, T_k, C_m, H', W') per evaluation pass (evaluation splits only);
- `features["text"]`: (B, L, C_t) and `features["text_mask"]`: (B, L) bool, True = padding token.

Training augmentation is the shard reader's `TrainAugment`, drawn with the same random numbers; the features
follow the frames: a temporal crop slices them, and a flip takes the motion features that `extract` computed on
the mirrored frames (`motion.flipped`: mirroring the cached ones would keep every motion's direction while the
sentence's 'left' and 'right' swap), mirrors the width of the others (appearance: a CNN of a mirrored frame is
close to the mirror of its features) and picks the features of the left/right-swapped sentence. Multi-scale
resizing cannot keep cached features on the frames' grid and is refused.

Before any batch, the feature shards are verified like the frame shards (`verify_shards`: size, sha256 and sample
count of each against the feature manifest), and each one's marker must name the sha256 of the frame shard it is
joined to, so stale or damaged features fail naming the file instead of loading as wrong values.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import cast

import torch
import webdataset as wds

from cgstvg.data.augment import TrainAugment, hflip, temporal_crop
from cgstvg.data.collate import collate_clips
from cgstvg.data.feature_arrays import load_npy

# The shard order must be exactly ShardLoader's, so the feature loader uses its seed mix.
from cgstvg.data.shard_reader import ShardLoader, clip_from_sample, iter_shard_samples, stream_seed, verify_shards
from cgstvg.utils.integrity import IntegrityError

FRAME_ALIGNED = ("motion", "appearance")


class CachedFeatureAugment:
    """`TrainAugment` applied to a clip together with its cached features (see the module docstring)."""

    def __init__(self, augment: TrainAugment):
        if augment.scales:
            raise ValueError(
                "shard.loader.train_scales (multi-scale training) cannot be used with cached features: their grid "
                "is fixed by the frames' extraction size; set train_scales: [] or train on frames"
            )
        self.augment = augment

    def __call__(self, clip: dict, rng: random.Random) -> dict:
        # The order and the random draws are TrainAugment.__call__'s, so a clip gets the same augmentation
        # whether or not its features are cached.
        start = 0
        if rng.random() < self.augment.temporal_crop_prob:
            gt_before = clip["gt_indices"]
            clip = temporal_crop(clip, rng)
            if len(gt_before):  # the crop shifts the GT positions by its first kept frame
                start = int(gt_before[0]) - int(clip["gt_indices"][0])
        flipped = rng.random() < self.augment.flip_prob
        if flipped:
            clip = hflip(clip)
        feats = dict(clip["features"])
        mirrored = {name: feats.pop(f"{name}.flipped", None) for name in FRAME_ALIGNED}
        n = clip["frames"].shape[0]
        for name in FRAME_ALIGNED:
            if name in feats:
                if flipped and mirrored[name] is not None:
                    feats[name] = mirrored[name]  # computed on the mirrored frames
                feats[name] = feats[name][start : start + n]
                if flipped and mirrored[name] is None:
                    feats[name] = feats[name].flip(-1)
        if flipped and "text" in feats:
            feats["text"] = feats.pop("text.flipped", feats["text"])
        feats.pop("text.flipped", None)
        return dict(clip, features=feats)


def _pad_stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Zero-pad tensors of equal rank to the largest size in every dimension and stack them."""
    shape = [max(sizes) for sizes in zip(*(t.shape for t in tensors))]
    out = tensors[0].new_zeros(len(tensors), *shape)
    for i, t in enumerate(tensors):
        out[cast(tuple[int | slice, ...], (i, *(slice(0, s) for s in t.shape)))] = t
    return out


def collate_with_features(clips: list[dict]) -> dict:
    """`collate_clips` plus the padded `features` (see the module docstring)."""
    batch = collate_clips(clips)
    names = sorted(clips[0]["features"])
    feats: dict[str, torch.Tensor] = {}
    for name in names:
        if name == "text.flipped":
            continue
        if any(name not in c["features"] for c in clips):
            missing = [c["meta"]["sample_id"] for c in clips if name not in c["features"]]
            raise ValueError(f"samples {missing} lack the cached feature {name!r} that others in the batch have")
        feats[name] = _pad_stack([c["features"][name] for c in clips])
    if "text" in feats:
        lengths = torch.tensor([c["features"]["text"].shape[0] for c in clips])
        feats["text_mask"] = torch.arange(feats["text"].shape[1])[None] >= lengths[:, None]
    batch["features"] = feats
    return batch


class FeatureShardLoader(ShardLoader):
    """`ShardLoader` whose batches carry the cached features of the same split (see the module docstring)."""

    def __init__(self, split_dir: str | Path, feature_dir: str | Path, *, features: tuple[str, ...], **kwargs):
        augment = kwargs.pop("augment", None)
        super().__init__(split_dir, **kwargs)
        self.augment = CachedFeatureAugment(augment) if augment is not None else None
        self.feature_dir = Path(feature_dir)
        self.features = tuple(features)
        manifest_path = self.feature_dir / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: no feature manifest (run the `extract` stage first)")
        fmanifest = json.loads(manifest_path.read_text())
        missing = sorted(set(self.features) - set(fmanifest.get("features", [])))
        if missing:
            raise ValueError(
                f"{manifest_path}: features {missing} were not extracted (have "
                f"{fmanifest.get('features')}); rerun `extract` with train.input: features"
            )
        frame_shards = [(s["name"], s["samples"]) for s in self.manifest["shards"]]
        feature_shards = [(s["name"], s["samples"]) for s in fmanifest["shards"]]
        if frame_shards != feature_shards:
            raise ValueError(
                f"{manifest_path}: its shards do not match {self.split_dir / 'manifest.json'} "
                "(the frame shards changed after extraction; rerun `extract`)"
            )
        verify_shards(self.feature_dir, fmanifest)
        for shard in self.manifest["shards"]:  # each feature shard was computed from the frame shard it joins
            marker_path = self.feature_dir / (shard["name"][: -len(".tar")] + ".done.json")
            marker = json.loads(marker_path.read_text()) if marker_path.is_file() else {}
            if marker.get("input_sha256") != shard["sha256"]:
                frames = self.split_dir / shard["name"]
                raise IntegrityError(f"{marker_path}: missing or computed from another {frames} (rerun `extract`)")

    def _joined_samples(self, src):
        """Frame-tar samples with the members of the feature tar of the same name (a webdataset stage)."""
        for item in src:
            url = item["url"]
            feature_url = str(self.feature_dir / Path(url).name)
            for a, b in zip(iter_shard_samples(url), iter_shard_samples(feature_url), strict=True):
                if a["__key__"] != b["__key__"]:
                    raise ValueError(
                        f"{url} and {feature_url}: sample {a['__key__']!r} meets {b['__key__']!r}; "
                        "the feature shard does not belong to this frame shard (rerun `extract`)"
                    )
                yield {**b, **a, "features_url": feature_url}

    def _clips(self, src):
        rng = self._worker_rng("augment") if self.augment is not None else None
        for sample in src:
            clip = clip_from_sample(sample)
            feats = {}
            for member, data in sample.items():
                if not member.endswith(".npy"):
                    continue
                name = member[: -len(".npy")]
                base = name.split(".")[0]
                if name.endswith(".flipped") and name != "text.flipped" and self.augment is None:
                    continue  # only the training flip reads the features of the mirrored frames
                if base in self.features or (base == "motion" and name.startswith("motion.pass")):
                    feats[name] = load_npy(data, f"{sample['features_url']}: {sample['__key__']}.{member}")
            for name in self.features:
                if name not in feats:
                    raise ValueError(f"{sample['features_url']}: sample {sample['__key__']!r} has no {name}.npy")
            n = clip["frames"].shape[0]
            for name in FRAME_ALIGNED:
                if name in feats and feats[name].shape[0] != n:
                    raise ValueError(
                        f"{sample['features_url']}: sample {sample['__key__']!r} has {n} frames but "
                        f"{feats[name].shape[0]} {name} feature rows"
                    )
            clip["features"] = feats
            if rng is not None:
                clip = cast(CachedFeatureAugment, self.augment)(clip, rng)  # rng is set only with an augment
            yield clip  # uint8 frames: `collate_clips` normalizes them into the padded batch

    def pipeline(self) -> wds.DataPipeline:
        urls = list(self.urls)
        if self.train:  # the same permutation on every rank (ShardLoader.pipeline's rule)
            random.Random(stream_seed(self.seed, self.epoch)).shuffle(urls)
        stages = [wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker, self._joined_samples]
        if self.train:
            stages.append(self._shuffled)
        stages += [
            self._clips,
            wds.batched(self.batch_size, collation_fn=collate_with_features, partial=not self.train),
        ]
        pipe = wds.DataPipeline(*stages)
        return pipe.repeat() if self.train else pipe


__all__ = ["CachedFeatureAugment", "FeatureShardLoader", "collate_with_features"]
