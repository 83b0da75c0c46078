"""The `.npy` members of the feature shards: float16 on disk (`npy_bytes`), float32 in memory (`load_npy`)."""

from __future__ import annotations

import io

import numpy as np
import torch


def npy_bytes(array: torch.Tensor) -> bytes:
    """A tensor as float16 `.npy` bytes."""
    buf = io.BytesIO()
    np.save(buf, array.detach().to("cpu", torch.float16).numpy(), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes, where: str) -> torch.Tensor:
    """`.npy` bytes -> float32 tensor; a damaged member raises an error naming it."""
    try:
        return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32))
    except (ValueError, OSError) as exc:
        raise ValueError(f"{where}: not a readable .npy feature array ({exc})") from exc


__all__ = ["load_npy", "npy_bytes"]
