"""Process-group helpers for `torchrun` (single process, multi-GPU and multi-node alike).

`torchrun` sets RANK, LOCAL_RANK and WORLD_SIZE (plus MASTER_ADDR/PORT); a plain `python -m ...` sets none of
them and runs as a world of one without a process group. The release read the local rank from a
`--local-rank` argument that torchrun no longer passes, so every rank would pick GPU 0; we read LOCAL_RANK.
Backend: NCCL when CUDA is present, gloo on CPU (so the DDP path is testable on any machine).
Only rank 0 writes files (checkpoints, logs, metrics): callers guard writes with `DistEnv.is_main`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistEnv:
    """Read the torchrun environment, pick the device and, for a world larger than one, start the process group.

    `device`: "auto" (CUDA if present, else CPU), "cpu" or "cuda". Under "cuda" each process takes
    `cuda:LOCAL_RANK`. Calling it twice is harmless: an existing process group is reused.
    """
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def shutdown_distributed() -> None:
    """Destroy the process group if one was started (end of a stage)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of `value` over ranks (returns a new tensor; identity in a world of one)."""
    if not dist.is_initialized():
        return value.clone()
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_gather_objects(obj) -> list:
    """Gather one picklable object per rank, in rank order (a one-element list in a world of one)."""
    if not dist.is_initialized():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


__all__ = ["DistEnv", "all_gather_objects", "all_reduce_mean", "barrier", "init_distributed", "shutdown_distributed"]
