"""What the two pretraining engines share: numeric settings read from a params section, and the schedule."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import torch


def numeric_settings(cls: type, cfg: dict, where: str) -> Any:
    """An instance of the dataclass `cls` (int and float fields only) from a params section.

    Unknown keys, booleans, strings and non-integral values for int fields are errors naming `where` and the key.
    """
    known = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise KeyError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
    values = {}
    for name, value in cfg.items():
        kind = float if known[name] == "float" else int
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise TypeError(f"{where}.{name}: expected a number ({known[name]}), got {value!r}")
        values[name] = kind(value)
    return cls(**values)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then a cosine to 0 at `steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
