"""The training loop: AdamW groups, warm-up + multistep schedule, EMA, clipping, AMP, DDP, checkpoints, resume.

It is model-agnostic: the caller gives a `loss_fn(model, batch) -> (total, terms)` that runs the forward pass and
the criterion (total: a scalar tensor with grad; terms: name -> scalar tensor, the weighted parts logged as
curves), and `batches(epoch, skip)` that yields this rank's batches of one epoch, deterministically for a given
epoch, leaving out the first `skip` (used on resume). Every rank must yield exactly `steps_per_epoch` batches.

Determinism and resume. Before every step the torch RNG is seeded from (seed, step, rank), so dropout and any
other torch randomness of step k is the same whether the run was interrupted or not; with a deterministic
`batches`, a resumed run reproduces the uninterrupted loss curve. A checkpoint is written every
`checkpoint_every` steps and at the end (rank 0 only; the others wait at a barrier); `train` resumes
automatically from the newest checkpoint with the same fingerprint.

Curves: every `log_every` steps the mean of each term over the interval (averaged over ranks) and the learning rate
each group used in the interval's last step make one curve row; with a `validate` callable, every
`validation_every` steps the EMA weights are scored too. Both are logged (rank 0) through DVCLive
(`cgstvg.engine.live`) and stored in the checkpoints, so that a resumed run logs the whole curve again, row for row.
Validation leaves training as it was: every random state it could draw from and the EMA modules' train/eval flags
are saved before it and restored after it, so the trained weights are the same bytes with it or without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cgstvg.engine import checkpoint as ckpt
from cgstvg.engine.distributed import DistEnv, all_reduce_mean, barrier
from cgstvg.engine.ema import build_ema, unwrap
from cgstvg.engine.live import LiveCurves
from cgstvg.engine.optim import GroupSpec, build_optimizer, build_scheduler

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]
BatchFn = Callable[[int, int], Iterable[Any]]
ValidateFn = Callable[[nn.Module], Mapping[str, float]]  # the EMA model (an AveragedModel) -> scores

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Knobs of the loop (the `train` section of params.yaml with its schedule in steps; see `from_params`)."""

    epochs: int
    steps_per_epoch: int
    warmup_steps: int
    milestones: tuple[int, ...]  # optimizer steps at which the "step" groups are multiplied by gamma
    gamma: float = 0.1
    weight_decay: float = 1e-4
    grad_clip: float = 0.1  # max global grad norm; <= 0 disables clipping
    ema_decay: float = 0.9998
    amp: bool = True  # autocast on CUDA only; the CPU always runs fp32
    amp_dtype: str = "bfloat16"  # "float16" adds a GradScaler
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    validation_every: int = 0  # steps between validations (with a `validate` callable); 0: never
    seed: int = 2021
    find_unused_parameters: bool = False

    def __post_init__(self):
        for name in ("epochs", "steps_per_epoch", "checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.validation_every < 0:
            raise ValueError(f"train.validation.every must be >= 0, got {self.validation_every}")
        if self.checkpoint_every % self.log_every:
            raise ValueError(
                f"train.checkpoint_every ({self.checkpoint_every}) must be a multiple of train.log_every "
                f"({self.log_every}), so that a checkpoint never splits a logging interval"
            )
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"train.amp_dtype must be one of {sorted(AMP_DTYPES)}, got {self.amp_dtype!r}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @classmethod
    def from_params(
        cls, section: dict[str, Any], *, steps_per_epoch: int, seed: int, find_unused_parameters: bool = False
    ) -> TrainSettings:
        """From params.yaml `train`: the schedule's warm-up fraction of all steps and milestone epochs become steps.

        steps_per_epoch: the loader's batches per epoch; seed: `base.seed`; find_unused_parameters: for DDP.
        """
        epochs = int(section["epochs"])
        total = epochs * steps_per_epoch
        schedule = section["schedule"]
        return cls(
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            warmup_steps=round(float(schedule["warmup_fraction"]) * total),
            milestones=tuple(int(e * steps_per_epoch) for e in schedule["milestones_epochs"]),
            gamma=float(schedule["gamma"]),
            weight_decay=float(section["optim"]["weight_decay"]),
            grad_clip=float(section["grad_clip"]),
            ema_decay=float(section["ema_decay"]),
            amp=bool(section["amp"]),
            amp_dtype=str(section["amp_dtype"]),
            checkpoint_every=int(section["checkpoint_every"]),
            keep_checkpoints=int(section["keep_checkpoints"]),
            log_every=int(section["log_every"]),
            validation_every=int(section.get("validation", {}).get("every", 0)),
            seed=seed,
            find_unused_parameters=find_unused_parameters,
        )


@dataclasses.dataclass
class TrainResult:
    step: int  # optimizer steps done in all (including those before a resume)
    resumed_from: int  # 0 for a fresh run
    model: nn.Module  # the trained (unwrapped) model
    ema: nn.Module  # the EMA model (an AveragedModel; `.module` is the averaged copy)
    curve: list[dict[str, float]]
    validation: list[dict[str, float]]  # step and scores of each validation
    validation_seconds: float  # of `seconds`, the validations' (this invocation)
    seconds: float  # wall time of this invocation
    steps_run: int  # steps run in this invocation


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step on one rank (a fixed mix, so it does not depend on where a run resumed)."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


class _RandomState:
    """Every random generator a validation could draw from (torch CPU and CUDA, numpy's and Python's global ones)."""

    def __init__(self):
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.numpy = np.random.get_state()
        self.python = random.getstate()

    def restore(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


def _validate(validate: ValidateFn, ema: nn.Module, step: int) -> dict[str, float]:
    """The scores of the EMA weights at `step`, leaving random states and module modes as they were."""
    state = _RandomState()
    modes = [(m, m.training) for m in ema.modules()]
    try:
        with torch.no_grad():
            scores = dict(validate(ema))
    finally:
        state.restore()
        for m, training in modes:
            m.train(training)
    return {"step": step, **{k: float(v) for k, v in scores.items()}}


def _autocast(env: DistEnv, settings: TrainSettings):
    if settings.amp and env.device.type == "cuda":
        return torch.autocast("cuda", dtype=AMP_DTYPES[settings.amp_dtype])
    return contextlib.nullcontext()


@dataclasses.dataclass
class _Optimization:
    """What a step updates besides the model, and what a checkpoint saves with it."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: Any  # an AveragedModel
    use_scaler: bool
    trainable: list[nn.Parameter]  # the parameters whose gradients are clipped

    @classmethod
    def build(cls, model: nn.Module, groups: Sequence[GroupSpec], settings: TrainSettings, env: DistEnv):
        optimizer = build_optimizer(model, groups, settings.weight_decay)
        scheduler = build_scheduler(
            optimizer, groups, settings.total_steps, settings.warmup_steps, settings.milestones, settings.gamma
        )
        use_scaler = settings.amp and env.device.type == "cuda" and settings.amp_dtype == "float16"
        scaler = torch.amp.GradScaler(env.device.type, enabled=use_scaler)
        ema = build_ema(model, settings.ema_decay)
        return cls(optimizer, scheduler, scaler, ema, use_scaler, [p for p in model.parameters() if p.requires_grad])


def _validate_and_log(
    validate: ValidateFn,
    ema: nn.Module,
    step: int,
    validation: list[dict[str, float]],
    live: LiveCurves | None,
    row: dict[str, float] | None,
) -> float:
    """Validate at `step`, keep the scores and log them with the step's row; returns the seconds it took."""
    t0 = time.perf_counter()
    scores = _validate(validate, ema, step)
    validation.append(scores)
    if live is not None:
        live.log(step, row, scores)
    return time.perf_counter() - t0


def _resume(
    model: nn.Module, opt: _Optimization, checkpoint_dir: Path, fingerprint: str, env: DistEnv
) -> tuple[int, list[dict[str, float]], list[dict[str, float]]]:
    """Load the newest checkpoint with this fingerprint into model and optimization; returns (its step, its curve
    rows, its validation rows), (0, [], []) for a fresh run (whose stale checkpoints are removed)."""
    state = ckpt.latest_checkpoint(checkpoint_dir, fingerprint)
    if state is None:
        if env.is_main:
            removed = ckpt.remove_stale(checkpoint_dir, fingerprint)
            if removed:
                log.warning(
                    "removed %d stale checkpoint(s) from %s (params or data changed)", len(removed), checkpoint_dir
                )
        return 0, [], []
    unwrap(model).load_state_dict(state["model"])
    opt.ema.load_state_dict(state["model_ema"])
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    opt.scaler.load_state_dict(state["scaler"])
    start = int(state["step"])
    if env.is_main:
        log.info("resuming from %s at step %d", checkpoint_dir, start)
    return start, list(state["curve"]), list(state.get("validation", []))


def _optimizer_step(
    model: nn.Module,
    ddp_model: nn.Module,
    opt: _Optimization,
    loss_fn: LossFn,
    batch: Any,
    step: int,
    epoch: int,
    settings: TrainSettings,
    env: DistEnv,
) -> tuple[torch.Tensor, Mapping[str, torch.Tensor], dict[str, float]]:
    """One optimizer step on `batch`; returns the loss, its terms and the learning rate of each group it used."""
    torch.manual_seed(step_seed(settings.seed, step, env.rank))
    with _autocast(env, settings):
        total, terms = loss_fn(ddp_model, batch)
    if not torch.isfinite(total.detach()).item() and not opt.use_scaler:
        raise FloatingPointError(f"training loss is {total.item()} at step {step} (epoch {epoch})")
    opt.scaler.scale(total).backward()
    if settings.grad_clip > 0:
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_(opt.trainable, settings.grad_clip)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.optimizer.zero_grad(set_to_none=True)
    used_lr = {f"lr_{g['name']}": float(g["lr"]) for g in opt.optimizer.param_groups}  # this step's
    opt.scheduler.step()
    opt.ema.update_parameters(unwrap(model))
    return total, terms, used_lr


class _CurveLog:
    """The curve rows: every `log_every` steps the mean of each term over the interval (averaged over ranks) and
    each group's learning rate in the interval's last step."""

    def __init__(self, rows: list[dict[str, float]], settings: TrainSettings, env: DistEnv):
        self.rows, self.settings, self.env = rows, settings, env
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(
        self, step: int, total: torch.Tensor, terms: Mapping[str, torch.Tensor], used_lr: dict[str, float]
    ) -> dict[str, float] | None:
        """Account for the step that just finished (`step` done in all); returns the row when one is due."""
        for k, v in (("total", total), *terms.items()):
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.count += 1
        if step % self.settings.log_every and step != self.settings.total_steps:
            return None
        keys = list(self.sums)
        device = self.env.device if self.env.device.type == "cuda" else None
        means = all_reduce_mean(
            torch.tensor([self.sums[k] / self.count for k in keys], dtype=torch.float64, device=device)
        )
        row: dict[str, float] = {"step": step, "epoch": (step - 1) // self.settings.steps_per_epoch}
        row.update({k: float(m) for k, m in zip(keys, means.tolist())})
        row.update(used_lr)
        self.rows.append(row)
        self.sums, self.count = {}, 0
        return row


def _wrap(model: nn.Module, settings: TrainSettings, env: DistEnv) -> nn.Module:
    """The model DistributedDataParallel when the run is distributed, else itself."""
    if not env.is_distributed:
        return model
    return DistributedDataParallel(
        model,
        device_ids=[env.local_rank] if env.device.type == "cuda" else None,
        find_unused_parameters=settings.find_unused_parameters,
    )


def train(
    model: nn.Module,
    groups: Sequence[GroupSpec],
    loss_fn: LossFn,
    batches: BatchFn,
    settings: TrainSettings,
    env: DistEnv,
    checkpoint_dir: str | os.PathLike,
    fingerprint: str,
    live_dir: str | os.PathLike | None = None,
    validate: ValidateFn | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `model` for `settings.total_steps` optimizer steps, resuming from `checkpoint_dir` if possible.

    live_dir: the DVCLive folder of the curves (None: not logged); validate: scores the EMA model every
    `settings.validation_every` steps (on every rank: it may be collective)."""
    t0 = time.perf_counter()
    checkpoint_dir = Path(checkpoint_dir)
    model.to(env.device)
    opt = _Optimization.build(model, groups, settings, env)
    start, curve, validation = _resume(model, opt, checkpoint_dir, fingerprint, env)
    opt.ema.to(env.device)
    ddp_model = _wrap(model, settings, env)
    curve_log = _CurveLog(curve, settings, env)
    live = LiveCurves(live_dir) if live_dir is not None and env.is_main else None
    if live is not None:
        # Logged again now: DVC deletes a stage's outputs before running it (the persisted checkpoints excepted),
        # and a run resumed at its last step has no step left to log them.
        live.replay(curve, validation)
    due = validate is not None and settings.validation_every > 0
    validation_seconds = 0.0
    bar = None
    if progress and env.is_main:
        from tqdm import tqdm

        bar = tqdm(total=settings.total_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    step = start
    ddp_model.train()
    for epoch in range(start // settings.steps_per_epoch, settings.epochs):
        skip = step - epoch * settings.steps_per_epoch
        n_batches = settings.steps_per_epoch - skip
        got = 0
        for batch in itertools.islice(batches(epoch, skip), n_batches):
            got += 1
            total, terms, used_lr = _optimizer_step(model, ddp_model, opt, loss_fn, batch, step, epoch, settings, env)
            step += 1
            row = curve_log.add(step, total, terms, used_lr)
            if due and step % settings.validation_every == 0:
                validation_seconds += _validate_and_log(validate, opt.ema, step, validation, live, row)  # type: ignore[arg-type]
            elif live is not None:
                live.log(step, row, None)
            if bar is not None and row is not None:
                bar.set_postfix(loss=f"{row['total']:.3f}", epoch=row["epoch"])
            if step % settings.checkpoint_every == 0 or step == settings.total_steps:
                _save_checkpoint(checkpoint_dir, step, fingerprint, model, opt, curve, validation, settings, env)
            if bar is not None:
                bar.update(1)
        if got != n_batches:
            raise RuntimeError(
                f"epoch {epoch} yielded {got} batches on rank {env.rank}, expected {n_batches} "
                f"(steps_per_epoch={settings.steps_per_epoch}, skipped {skip}); every rank must yield the same number"
            )
    if bar is not None:
        bar.close()
    if live is not None:
        live.end()
    seconds = time.perf_counter() - t0
    return TrainResult(
        step=step,
        resumed_from=start,
        model=unwrap(model),
        ema=opt.ema,
        curve=curve,
        validation=validation,
        validation_seconds=validation_seconds,
        seconds=seconds,
        steps_run=step - start,
    )


def _save_checkpoint(
    checkpoint_dir: Path,
    step: int,
    fingerprint: str,
    model: nn.Module,
    opt: _Optimization,
    curve: list[dict[str, float]],
    validation: list[dict[str, float]],
    settings: TrainSettings,
    env: DistEnv,
) -> None:
    """Rank 0 writes the checkpoint of `step` (keeping the newest `keep_checkpoints`); every rank waits for it."""
    if env.is_main:
        ckpt.save_checkpoint(
            checkpoint_dir,
            {
                "step": step,
                "epoch": step // settings.steps_per_epoch,
                "fingerprint": fingerprint,
                "model": unwrap(model).state_dict(),
                "model_ema": opt.ema.state_dict(),
                "optimizer": opt.optimizer.state_dict(),
                "scheduler": opt.scheduler.state_dict(),
                "scaler": opt.scaler.state_dict(),
                "curve": curve,
                "validation": validation,
            },
            keep=settings.keep_checkpoints,
        )
    barrier()


__all__ = ["AMP_DTYPES", "TrainResult", "TrainSettings", "ValidateFn", "step_seed", "train"]
