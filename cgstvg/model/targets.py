"""Ground truth of a batch of videos, in the sampled-frame layout the model predicts in."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class GroundingTargets:
    """GT for B videos padded to T sampled frames.

    Attributes:
        boxes: (B, T, 4) float, normalised (cx, cy, w, h) of the target; only frames with `gt_mask` are read.
        gt_mask: (B, T) bool, True on the sampled frames inside the GT segment (the release's `actioness`). Each
            video needs at least one such frame; the segment is taken as first..last True frame.
    """

    boxes: Tensor
    gt_mask: Tensor

    def __post_init__(self) -> None:
        if self.boxes.dim() != 3 or self.boxes.shape[-1] != 4:
            raise ValueError(f"GroundingTargets.boxes: expected (B, T, 4), got {tuple(self.boxes.shape)}")
        if self.gt_mask.shape != self.boxes.shape[:2] or self.gt_mask.dtype != torch.bool:
            raise ValueError(
                f"GroundingTargets.gt_mask: expected bool (B, T) = {tuple(self.boxes.shape[:2])}, "
                f"got {self.gt_mask.dtype} {tuple(self.gt_mask.shape)}"
            )
        empty = (~self.gt_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"GroundingTargets: videos {empty} of the batch have no GT frame")

    @property
    def start_end(self) -> tuple[Tensor, Tensor]:
        """(B,) index of the first and of the last GT frame of each video."""
        t = self.gt_mask.shape[1]
        idx = torch.arange(t, device=self.gt_mask.device).expand_as(self.gt_mask)
        start = torch.where(self.gt_mask, idx, t).amin(dim=1)
        end = torch.where(self.gt_mask, idx, -1).amax(dim=1)
        return start, end

    @property
    def segment_mask(self) -> Tensor:
        """(B, T) bool: frames between the first and the last GT frame (the release's `gt_bbox_slice`)."""
        start, end = self.start_end
        idx = torch.arange(self.gt_mask.shape[1], device=self.gt_mask.device)
        return (idx >= start[:, None]) & (idx <= end[:, None])
