"""AdamW with the release's parameter groups, and its warm-up + multistep learning-rate schedule.

Groups (the release's engine/optimizer.py): parameters are matched by name prefix, first match wins, in the order
given; everything unmatched goes to the group "rest" at the base learning rate. The release's four groups are
  rest (BASE_LR), visual backbone (VIS_BACKBONE_LR), text encoder (TEXT_LR), temporal decoder (TEMP_LR).
Frozen parameters (requires_grad False) are left out. Every named group is kept even when empty, so the group
order (and the logged learning-rate columns) does not depend on which backbones are frozen.

Schedule, per group, as a multiplier of the group's learning rate at optimizer step `step` (0-based):
  warm-up: factor (step + 1) / warmup_steps for step < warmup_steps (groups with `warmup: true`);
  decay "step": times gamma for every milestone <= step (the release's DROP_STEP, given here in steps);
  decay "linear": linearly to 0 at total_steps, after the warm-up (the release's text and temporal-decoder
  groups on HC-STVG, "multistep_with_warmup").
The VidSTG preset ("multistep_with_warmup_all") is every group with warm-up and step decay.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

REST = "rest"
DECAYS = ("step", "linear")


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """One named parameter group: the name prefixes it takes, its learning rate and its schedule shape."""

    name: str
    prefixes: tuple[str, ...]
    lr: float
    warmup: bool = True
    decay: str = "step"

    def __post_init__(self):
        if self.decay not in DECAYS:
            raise ValueError(f"group {self.name!r}: decay must be one of {DECAYS}, got {self.decay!r}")
        if self.lr < 0:
            raise ValueError(f"group {self.name!r}: negative learning rate {self.lr}")


def group_specs_from_params(optim_params: Mapping) -> list[GroupSpec]:
    """Build the group list from a params.yaml `optim` mapping.

    Expected keys: `lr` (the rest), optional `rest_warmup`/`rest_decay`, and `groups`: a mapping
    name -> {prefixes: [...], lr: float, warmup: bool, decay: "step"|"linear"}.
    """
    specs = [
        GroupSpec(
            name=REST,
            prefixes=(),
            lr=float(optim_params["lr"]),
            warmup=bool(optim_params.get("rest_warmup", True)),
            decay=str(optim_params.get("rest_decay", "step")),
        )
    ]
    for name, g in (optim_params.get("groups") or {}).items():
        if name == REST:
            raise ValueError("params.yaml optim.groups: 'rest' is implicit (set optim.lr instead)")
        prefixes = g.get("prefixes")
        if not prefixes:
            raise ValueError(f"params.yaml optim.groups.{name}: 'prefixes' must list at least one name prefix")
        specs.append(
            GroupSpec(
                name=name,
                prefixes=tuple(prefixes),
                lr=float(g["lr"]),
                warmup=bool(g.get("warmup", True)),
                decay=str(g.get("decay", "step")),
            )
        )
    return specs


def assign_groups(model: nn.Module, specs: Sequence[GroupSpec]) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Map each trainable parameter to the first group whose prefix its name starts with (else "rest")."""
    named = [s for s in specs if s.name != REST]
    out: dict[str, list[tuple[str, nn.Parameter]]] = {s.name: [] for s in specs}
    if REST not in out:
        out[REST] = []
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        target = next((s.name for s in named if any(pname.startswith(px) for px in s.prefixes)), REST)
        out[target].append((pname, p))
    return out


def build_optimizer(
    model: nn.Module, specs: Sequence[GroupSpec], weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW with one parameter group per spec, in spec order; each group carries its `name`."""
    assigned = assign_groups(model, specs)
    if not any(assigned.values()):
        raise ValueError("the model has no trainable parameters")
    groups = [
        {"params": [p for _, p in assigned[s.name]], "lr": s.lr, "name": s.name, "weight_decay": weight_decay}
        for s in specs
    ]
    return torch.optim.AdamW(groups, lr=specs[0].lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@dataclasses.dataclass(frozen=True)
class LrFactor:
    """The multiplier of one group's learning rate at a given step (a picklable LambdaLR lambda)."""

    total_steps: int
    warmup_steps: int
    milestones: tuple[int, ...]
    gamma: float
    warmup: bool
    decay: str

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "linear":
            start = self.warmup_steps if self.warmup else 0
            span = max(1, self.total_steps - start)
            return max(0.0, 1.0 - (step - start) / span)
        return self.gamma ** bisect.bisect_right(self.milestones, step)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    specs: Sequence[GroupSpec],
    total_steps: int,
    warmup_steps: int,
    milestones: Sequence[int],
    gamma: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with one `LrFactor` per group; call `.step()` once after every optimizer step."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    ms = tuple(sorted(int(m) for m in milestones))
    factors: list[Callable[[int], float]] = [
        LrFactor(
            total_steps,
            max(1, warmup_steps) if s.warmup and warmup_steps else 0,
            ms,
            gamma,
            s.warmup and warmup_steps > 0,
            s.decay,
        )
        for s in specs
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


__all__ = [
    "DECAYS",
    "REST",
    "GroupSpec",
    "LrFactor",
    "assign_groups",
    "build_optimizer",
    "build_scheduler",
    "group_specs_from_params",
]
