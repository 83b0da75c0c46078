"""CG-STVG fed by a loader batch, with any of its backbones replaced by cached features.

`BatchModel` holds the SAME submodules as a `cgstvg.model.cgstvg.CGSTVG` under the same names (`appearance`,
`motion`, `text`, `head`), so its state dict is a CGSTVG state dict and parameter-group prefixes are CGSTVG's.
Its forward takes the batch of `cgstvg.data.feature_loader` (or of `cgstvg.data.collate` when nothing is
cached) and runs one module forward, so DistributedDataParallel can wrap it. `CGSTVG.forward` takes frames and
sentences only; this adapter adds the cached inputs (motion from `extract` always; appearance and text when the
batch carries them), and the slicing of one evaluation pass.

Conventions: the batch's `pixel_mask` and `time_mask` are True on REAL pixels / frames (the loader's), the head's
masks are True on PADDING (`cgstvg.data.collate.padding_mask` turns one into the other); boxes are normalised
(cx, cy, w, h) of each clip's own frame (DETR's convention).
"""

from __future__ import annotations

import torch
from torch import nn

from cgstvg.data.collate import padding_mask
from cgstvg.model.appearance import downsample_mask
from cgstvg.model.cgstvg import CGSTVG
from cgstvg.model.head import CGSTVGOutput
from cgstvg.model.targets import GroundingTargets


def grounding_targets(batch: dict, device: torch.device | None = None) -> GroundingTargets:
    """The batch's GT in the padded sampled-frame layout: boxes (B, T, 4) cxcywh at the GT frames, gt_mask (B, T)."""
    b, t = batch["time_mask"].shape
    boxes = torch.zeros(b, t, 4)
    gt_mask = torch.zeros(b, t, dtype=torch.bool)
    for i, target in enumerate(batch["targets"]):
        idx = target["gt_indices"]
        if len(idx) == 0:
            raise ValueError(
                f"sample {target['sample_id']!r} ({target['dataset']}/{target['split']}) has no sampled "
                "frame inside its GT tube, so it cannot be trained on"
            )
        boxes[i, idx] = target["boxes"]
        gt_mask[i, idx] = True
    return GroundingTargets(boxes=boxes.to(device), gt_mask=gt_mask.to(device))


class BatchModel(nn.Module):
    """A CGSTVG whose forward reads a batch; see the module docstring."""

    def __init__(self, model: CGSTVG):
        super().__init__()
        self.appearance = model.appearance
        self.motion = model.motion
        self.text = model.text
        self.head = model.head

    def forward(
        self, batch: dict, targets: GroundingTargets | None = None, pass_index: int = 0, num_passes: int = 1
    ) -> CGSTVGOutput:
        """Run the model on the batch, or on pass `pass_index` of `num_passes` interleaved passes (frames k::P).

        batch: `frames` (B, T, 3, H, W), `pixel_mask` (B, H, W) and `time_mask` (B, T) True = real, `sentences`,
        and optionally `features` (cached backbone outputs). targets: for ICR's training selection only.
        """
        device = next(self.head.parameters()).device
        feats = batch.get("features", {})
        sl = slice(pass_index, None, num_passes)
        frames = batch["frames"][:, sl].to(device, non_blocking=True)
        time_mask = padding_mask(batch["time_mask"][:, sl].to(device))
        b, t = frames.shape[:2]

        if "appearance" in feats:
            app = feats["appearance"][:, sl].to(device)
        else:
            app = self.appearance(frames.flatten(0, 1)).unflatten(0, (b, t))
        if num_passes > 1 and f"motion.pass{pass_index}" in feats:
            mot = feats[f"motion.pass{pass_index}"].to(device)  # Swin ran on this pass's frames only
        elif "motion" in feats:
            mot = feats["motion"][:, sl].to(device)
        else:
            raise KeyError("the batch carries no cached motion features (the `extract` stage's output)")
        if mot.shape[:2] != (b, t) or mot.shape[-2:] != app.shape[-2:]:
            raise ValueError(
                f"cached motion features {tuple(mot.shape)} do not fit the appearance features {tuple(app.shape)}: "
                "the backbones need the same grid (rerun `extract` after changing model.backbones)"
            )
        grid = tuple(app.shape[-2:])
        cells = downsample_mask(padding_mask(batch["pixel_mask"].to(device)), grid)  # (B, H', W') True = padded
        vis_mask = cells[:, None].expand(b, t, *grid)
        if "text" in feats:
            text_hidden, text_mask = feats["text"].to(device), feats["text_mask"].to(device)
        else:
            text_hidden, text_mask = self.text(list(batch["sentences"]))
        return self.head(app, vis_mask, mot, text_hidden, text_mask, time_mask=time_mask, targets=targets)


__all__ = ["BatchModel", "grounding_targets"]
