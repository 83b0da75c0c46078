"""The periodic held-out validation of `train`: m_tIoU and m_vIoU of the EMA weights on a fixed subset of a split.

Scored by the `evaluate` stage's code (`cgstvg.evaluation.evaluate_loop.evaluate_model`: its test and metric
protocols, the ground truth of the normalized table), with no gradient. The subset is the first shards of the split
(manifest order) that hold at least `samples` samples, so it is the same at every validation, in every run and for
any number of ranks (the evaluation loader splits those shards over the ranks).

It must not change training: `train_loop` saves and restores every random state around it and the EMA modules'
train/eval flags (a DataLoader draws its base seed from torch's generator when iterated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from cgstvg.data.feature_loader import FeatureShardLoader
from cgstvg.data.shard_reader import iter_shard_samples
from cgstvg.engine.batch_model import BatchModel
from cgstvg.engine.distributed import DistEnv
from cgstvg.engine.ema import unwrap
from cgstvg.evaluation.evaluate_loop import GroundTruth, evaluate_model
from cgstvg.evaluation.metrics import MetricProtocol, OnMissing

SCORES = ("m_tIoU", "m_vIoU")


@dataclasses.dataclass(frozen=True)
class ValidationSettings:
    """`train.validation`: every `every` optimizer steps (0: never), on the first shards of `split` with at least
    `samples` samples."""

    every: int
    split: str
    samples: int

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> ValidationSettings:
        return cls(int(section["every"]), str(section["split"]), int(section["samples"]))

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0


def subset_shards(loader: FeatureShardLoader, samples: int) -> list[str]:
    """Keep the first shards of `loader` (manifest order) holding >= `samples` samples; returns their sample ids."""
    kept, count = [], 0
    for shard in loader.manifest["shards"]:
        if count >= samples:
            break
        kept.append(str(loader.split_dir / shard["name"]))
        count += int(shard["samples"])
    loader.urls = kept
    return [s["__key__"] for url in kept for s in iter_shard_samples(url)]


class Validator:
    """Scores an EMA model (an AveragedModel) on `gt`, the samples of `loader`:
    `validator(ema) -> {"m_tIoU": ..., "m_vIoU": ...}`. `build` makes one on the subset of a split."""

    def __init__(
        self,
        loader: FeatureShardLoader,
        gt: Mapping[str, GroundTruth],
        env: DistEnv,
        *,
        protocol: str,
        metric_protocol: MetricProtocol,
        on_missing: OnMissing,
        amp: bool,
    ):
        self.loader, self.env, self.gt = loader, env, dict(gt)
        self.protocol, self.metric_protocol, self.on_missing, self.amp = protocol, metric_protocol, on_missing, amp

    @classmethod
    def build(
        cls,
        settings: ValidationSettings,
        shards: Path,
        features: Path,
        gt: Mapping[str, GroundTruth],
        env: DistEnv,
        *,
        feature_names: tuple[str, ...],
        batch_size: int,
        protocol: str,
        metric_protocol: MetricProtocol,
        on_missing: OnMissing,
        amp: bool,
    ) -> Validator:
        loader = FeatureShardLoader(shards, features, features=feature_names, batch_size=batch_size, train=False)
        ids = subset_shards(loader, settings.samples)
        missing = [sid for sid in ids if sid not in gt]
        if missing:
            raise KeyError(f"{shards}: samples {missing[:3]} are not in the normalized table of the split")
        return cls(
            loader,
            {sid: gt[sid] for sid in ids},
            env,
            protocol=protocol,
            metric_protocol=metric_protocol,
            on_missing=on_missing,
            amp=amp,
        )

    def __len__(self) -> int:
        return len(self.gt)

    def __call__(self, ema: nn.Module) -> dict[str, float]:
        inner = unwrap(ema)  # the averaged copy inside the AveragedModel (a BatchModel in `train`)
        model = inner if isinstance(inner, BatchModel) else BatchModel(inner)  # type: ignore[arg-type]
        summary, _ = evaluate_model(
            model,
            self.loader,
            self.gt,
            self.env,
            protocol=self.protocol,
            metric_protocol=self.metric_protocol,
            on_missing=self.on_missing,
            per_qtype=False,
            amp=self.amp,
        )
        return {k: float(summary[k]) for k in SCORES}


__all__ = ["SCORES", "ValidationSettings", "Validator", "subset_shards"]
