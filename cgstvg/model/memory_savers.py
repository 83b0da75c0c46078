"""Training-memory savers: activation checkpointing of the appearance CNN, the encoder and the decoder stages.

`params.yaml` `train.memory` holds the switches (`MemorySavers.from_params`); `apply_memory_savers` sets them on a
built model. Each saver keeps the inputs of a part and recomputes its activations in the backward pass
(`torch.utils.checkpoint`, use_reentrant=False), so the gradients are those of the plain model up to float rounding:

* `checkpoint_appearance_frames` N > 0: the appearance CNN runs over chunks of N frames, each chunk checkpointed, so
  the backward holds one chunk's activations instead of every frame's (the ResNet-101's largest cost in training:
  about 0.2 GB per 420x588 frame). Only for the ResNet (FrozenBatchNorm2d): a training-mode BatchNorm (the small
  CNN) would see per-chunk batch statistics and update its running statistics twice, so it is refused there.
* `checkpoint_encoder`: each encoder layer is checkpointed; its per-frame attention probabilities, dropout masks and
  FFN activations (about 2 GB per layer at 64 frames of 420x588) are recomputed one layer at a time.
* `checkpoint_decoder`: each temporal and spatial decoding stage is checkpointed (the spatial stage projects the
  whole memory into keys and values every layer).

Dropout under recomputation: torch.utils.checkpoint saves the RNG state at the forward of each checkpointed part
and restores it for the recomputation (`preserve_rng_state`, default True), so the recomputed dropout masks are the
forward's (tests/test_memory_savers.py checks the gradients with dropout active).
The savers only act when autograd records (`torch.is_grad_enabled()`); evaluation and `extract` are unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

T = TypeVar("T")


def maybe_checkpoint(enabled: bool, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, checkpointed when `enabled` and autograd is recording."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


@dataclass(frozen=True)
class MemorySavers:
    """The switches of `train.memory` (see the module docstring); all off by default."""

    checkpoint_appearance_frames: int = 0
    checkpoint_encoder: bool = False
    checkpoint_decoder: bool = False

    def __post_init__(self) -> None:
        if self.checkpoint_appearance_frames < 0:
            raise ValueError(
                f"train.memory.checkpoint_appearance_frames must be >= 0, got {self.checkpoint_appearance_frames}"
            )

    @classmethod
    def from_params(cls, section: dict[str, Any] | None, where: str = "params.yaml:train.memory") -> MemorySavers:
        section = dict(section or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise KeyError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
        return cls(**section)

    @property
    def any(self) -> bool:
        return bool(self.checkpoint_appearance_frames or self.checkpoint_encoder or self.checkpoint_decoder)


def apply_memory_savers(model: nn.Module, savers: MemorySavers) -> nn.Module:
    """Switch the savers on `model` (a CGSTVG or BatchModel: `appearance` and `head`), in place; returns it."""
    appearance = cast(Any, model.appearance)
    if savers.checkpoint_appearance_frames:
        has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in appearance.modules())
        if has_batchnorm:
            raise ValueError(
                "train.memory.checkpoint_appearance_frames: the appearance CNN has training-mode BatchNorm (the "
                "small CNN), whose batch statistics would differ per chunk and whose running statistics a "
                "recomputation would update twice; use it with the ResNets (frozen BatchNorm) only"
            )
    appearance.checkpoint_frames = savers.checkpoint_appearance_frames
    head = cast(Any, model.head)
    head.encoder.checkpoint = savers.checkpoint_encoder
    head.checkpoint_decoder = savers.checkpoint_decoder
    return model


__all__ = ["MemorySavers", "apply_memory_savers", "maybe_checkpoint"]
