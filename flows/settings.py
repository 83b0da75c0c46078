"""The `flows` section of params.yaml: how Prefect runs the DVC stages (no stage reads it, so editing it never
invalidates a cached stage)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from cgstvg.utils.params import load_params, section

TASK_RUNNERS = ("threads", "processes", "dask")


@dataclasses.dataclass(frozen=True)
class Torchrun:
    """Launch of the `train` stage: `torchrun --nnodes N --nproc-per-node P` when N * P > 1, else plain DVC."""

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str = "localhost:29500"

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


@dataclasses.dataclass(frozen=True)
class FlowSettings:
    baseline: str = "HEAD"
    retries: dict[str, int] = dataclasses.field(default_factory=dict)
    retry_backoff_s: float = 10.0
    task_runner: str = "threads"
    workers: int = 2
    chunk_size: int = 1
    dask_address: str | None = None
    fanout: tuple[str, ...] = ()
    torchrun: Torchrun = Torchrun()
    sweep: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: expected a positive integer, got {value!r}")
    return value


def load_flow_settings(repo: str | os.PathLike) -> FlowSettings:
    """Read and check `flows` from `<repo>/params.yaml`; every error names the file and the key (`load_params`
    checks types and ranges against the schema first, cgstvg.utils.params_schema)."""
    path = Path(repo) / "params.yaml"
    raw = section(load_params(path), "flows", path)
    where = f"{path}:flows"
    unknown = set(raw) - {f.name for f in dataclasses.fields(FlowSettings)}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    runner = raw.get("task_runner", "threads")
    if runner not in TASK_RUNNERS:
        raise ValueError(f"{where}.task_runner: expected one of {TASK_RUNNERS}, got {runner!r}")
    retries = dict(raw.get("retries") or {})
    for stage, n in retries.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{where}.retries.{stage}: expected a count >= 0, got {n!r}")
    tr = dict(raw.get("torchrun") or {})
    unknown = set(tr) - {f.name for f in dataclasses.fields(Torchrun)}
    if unknown:
        raise ValueError(f"{where}.torchrun: unknown keys {sorted(unknown)}")
    torchrun = Torchrun(
        nproc_per_node=_positive_int(tr.get("nproc_per_node", 1), f"{where}.torchrun.nproc_per_node"),
        nnodes=_positive_int(tr.get("nnodes", 1), f"{where}.torchrun.nnodes"),
        rdzv_endpoint=str(tr.get("rdzv_endpoint", "localhost:29500")),
    )
    sweep = {}
    for name, overrides in (raw.get("sweep") or {}).items():
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ValueError(f"{where}.sweep.{name}: expected a list of `key=value` overrides, got {overrides!r}")
        sweep[str(name)] = overrides
    backoff = raw.get("retry_backoff_s", 10.0)
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
        raise ValueError(f"{where}.retry_backoff_s: expected seconds >= 0, got {backoff!r}")
    return FlowSettings(
        baseline=str(raw.get("baseline", "HEAD")),
        retries=retries,
        retry_backoff_s=float(backoff),
        task_runner=runner,
        workers=_positive_int(raw.get("workers", 2), f"{where}.workers"),
        chunk_size=_positive_int(raw.get("chunk_size", 1), f"{where}.chunk_size"),
        dask_address=raw.get("dask_address"),
        fanout=tuple(raw.get("fanout") or ()),
        torchrun=torchrun,
        sweep=sweep,
    )
