"""Linear interpolation of a box track to every original frame between its first and last sampled frame."""

from __future__ import annotations

import numpy as np
import torch


def interpolate_boxes(frame_ids, boxes) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill every frame between the first and last of `frame_ids` by linear interpolation, per coordinate.

    frame_ids: (K,) original frame ids of the sampled frames, strictly increasing (any int dtype).
    boxes: (K, 4) boxes at those frames (xyxy pixels; any coordinates interpolate the same way).
    Returns (frames, boxes): (F,) int64 = first..last, and (F, 4) float64, F = last - first + 1. Sampled frames
    keep their boxes exactly; frame f between sampled frames a < f < b gets box_a + (f - a) * (box_b - box_a) /
    (b - a), the release's `linear_interp`. No extrapolation: frames outside [first, last] get no box.

    numpy's interp is the vectorised library routine for this (torch has no 1-D interp), run once per coordinate.
    """
    ids = np.asarray(frame_ids, dtype=np.int64).reshape(-1)
    values = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    if ids.size == 0:
        raise ValueError("interpolate_boxes needs at least one sampled frame")
    if values.shape != (ids.size, 4):
        raise ValueError(f"{ids.size} frame ids need boxes of shape ({ids.size}, 4), got {values.shape}")
    if ids.size > 1 and np.any(np.diff(ids) <= 0):
        raise ValueError(f"frame ids must be strictly increasing, got {ids.tolist()}")
    frames = np.arange(ids[0], ids[-1] + 1)
    dense = np.stack([np.interp(frames, ids, values[:, k]) for k in range(4)], axis=1)
    return torch.from_numpy(frames), torch.from_numpy(dense)


__all__ = ["interpolate_boxes"]
