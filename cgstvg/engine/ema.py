"""Exponential moving average of the weights (the release keeps one with decay 0.9998 and evaluates it).

Built on `torch.optim.swa_utils.AveragedModel` with its EMA update, over parameters AND buffers (BatchNorm
statistics follow the EMA too, so the averaged model needs no separate BN recalibration). The first update
copies the weights; every later one does `ema = decay * ema + (1 - decay) * weights`.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel (or AveragedModel) wrapper."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of `model` (unwrapped from DDP first). Call `.update_parameters(model)` after each step."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
    base = unwrap(model)
    return AveragedModel(base, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


__all__ = ["build_ema", "unwrap"]
