"""Instance context generation (ICG, paper Sec. 3.3) and refinement (ICR, Sec. 3.4).

ICG pools the encoder's appearance and motion tokens of each frame inside that frame's current (detached) box:
* 'mean' (release): the box is scaled to the H' x W' grid with x1, y1 rounded (half to even), x2 ceil'ed and y2
  rounded, clamped to at least one cell, and the covered cells are averaged. Vectorised with row/column masks
  (the release loops over frames);
* 'roi_align' (paper): torchvision RoIAlign (aligned) on the grid, the bins then averaged to one vector.

ICR scores every frame and keeps those that pass the filters of `context_mode` / `score_fusion` /
`threshold_mode` (see `CGSTVGConfig`), or, in training with 'gt_giou', those whose box matches the GT. The context
C_k is [MLP_a(pooled appearance) ; MLP_m(pooled motion)] of the kept frames. We compute it for every frame and mark
the dropped ones as padding for the context attention: the same result as the release's index selection, batched
over videos with different numbers of kept frames.

One call per decoding stage: `InstanceContextRefinement.forward` pools the stage's boxes (its parameter-free ICG),
scores and selects the frames and builds C_k (`ContextStep`). ICG lives inside ICR because it has no parameters:
the state-dict names stay the release's mapping (`icr.*`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss, roi_align

from cgstvg.model.blocks import MLP
from cgstvg.model.config import CGSTVGConfig
from cgstvg.model.memory import DecoderMemory
from cgstvg.model.targets import GroundingTargets


def box_mean_pool(features: Tensor, boxes: Tensor) -> Tensor:
    """The release's RoI mean-pool.

    Args:
        features: (N, H, W, C) feature grid per frame.
        boxes: (N, 4) normalised (cx, cy, w, h).
    Returns:
        (N, C) mean of the cells covered by each box (at least one cell).
    """
    n, h, w, _ = features.shape
    xyxy = box_convert(boxes, "cxcywh", "xyxy").clamp(min=0) * boxes.new_tensor([w, h, w, h])
    x1, y1, x2, y2 = xyxy[:, 0].round(), xyxy[:, 1].round(), xyxy[:, 2].ceil(), xyxy[:, 3].round()
    x2 = x2.clamp(1, w)
    x1 = torch.minimum(x1.clamp(min=0), x2 - 1)
    y2 = y2.clamp(1, h)
    y1 = torch.minimum(y1.clamp(min=0), y2 - 1)
    cols = torch.arange(w, device=features.device, dtype=xyxy.dtype)
    rows = torch.arange(h, device=features.device, dtype=xyxy.dtype)
    col_in = ((cols >= x1[:, None]) & (cols < x2[:, None])).to(features.dtype)  # (N, W)
    row_in = ((rows >= y1[:, None]) & (rows < y2[:, None])).to(features.dtype)  # (N, H)
    area = (x2 - x1) * (y2 - y1)
    weights = (row_in[:, :, None] * col_in[:, None, :]) / area[:, None, None]
    return torch.einsum("nhw,nhwc->nc", weights, features)


def box_roi_align(features: Tensor, boxes: Tensor, output_size: int, sampling_ratio: int) -> Tensor:
    """RoIAlign (torchvision, aligned=True) of each frame's box, bins averaged: (N, H, W, C), (N, 4) -> (N, C)."""
    n, h, w, _ = features.shape
    xyxy = box_convert(boxes, "cxcywh", "xyxy") * boxes.new_tensor([w, h, w, h])
    rois = torch.cat([torch.arange(n, device=boxes.device, dtype=boxes.dtype)[:, None], xyxy], dim=1)
    pooled = roi_align(
        features.permute(0, 3, 1, 2),
        rois,
        output_size,
        spatial_scale=1.0,
        sampling_ratio=sampling_ratio,
        aligned=True,
    )
    return pooled.mean(dim=(2, 3))


class InstanceContextGeneration(nn.Module):
    """ICG: pooled appearance and motion features of each frame's box (no parameters)."""

    def __init__(self, cfg: CGSTVGConfig):
        super().__init__()
        self.pooling = cfg.icg_pooling
        self.output_size = cfg.roi_align_output_size
        self.sampling_ratio = cfg.roi_align_sampling_ratio

    def forward(self, memory: Tensor, grid: tuple[int, int], boxes: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            memory: (B*T, S, d) encoder output; tokens [appearance H'W' ; text L ; motion H'W'].
            grid: (H', W').
            boxes: (B, T, 4) detached normalised (cx, cy, w, h).
        Returns:
            appearance and motion RoI features, (B, T, d) each.
        """
        h, w = grid
        b, t, _ = boxes.shape
        flat = boxes.reshape(b * t, 4)
        out = []
        for tokens in (memory[:, : h * w], memory[:, -h * w :]):
            grid_feat = tokens.unflatten(1, (h, w))
            if self.pooling == "mean":
                pooled = box_mean_pool(grid_feat, flat)
            else:
                pooled = box_roi_align(grid_feat, flat, self.output_size, self.sampling_ratio)
            out.append(pooled.view(b, t, -1))
        return out[0], out[1]


def giou_with_gt(boxes: Tensor, targets: GroundingTargets) -> Tensor:
    """(B, T) GIoU of predicted and GT boxes on GT-segment frames, 0 elsewhere (the release's selection score)."""
    pred = box_convert(boxes, "cxcywh", "xyxy")
    gt = box_convert(targets.boxes.to(boxes.dtype), "cxcywh", "xyxy")
    giou = 1 - generalized_box_iou_loss(pred, gt, reduction="none")
    return torch.where(targets.segment_mask, giou, torch.zeros_like(giou))


class ContextStep(NamedTuple):
    """What ICG + ICR give one decoding stage.

    conf: (B, T) sigmoid(conf_a) + sigmoid(conf_m) in [0, 2]. selected: (B, T) bool, the frames that give context.
    context: (tokens (B, 2T, d), pad (B, 2T)) for the next stage (see `InstanceContextRefinement.context`), or None
    when no frame was selected or it was not asked for. spatial_score, temporal_score: (B, T), what the selection
    compared with its thresholds (the raw actioness logit as temporal score where no temporal filter applies).
    """

    conf: Tensor
    selected: Tensor
    context: tuple[Tensor, Tensor] | None
    spatial_score: Tensor
    temporal_score: Tensor


class InstanceContextRefinement(nn.Module):
    """ICR: frame confidences, the frame filter and the context MLPs, on the features its ICG pools.

    Parameters (release names in brackets): `conf_appearance` [conf] and `conf_motion` [conf2] give the spatial
    confidence (2-layer MLPs with head dropout); `context_appearance` [gf_mlp] and `context_motion` [gf_mlp2] map
    pooled features to context tokens.
    """

    def __init__(self, cfg: CGSTVGConfig):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.icg = InstanceContextGeneration(cfg)  # no parameters
        self.conf_appearance = MLP(d, d, 1, 2, cfg.head_dropout, cfg.dropout_on_logits)
        self.conf_motion = MLP(d, d, 1, 2, cfg.head_dropout, cfg.dropout_on_logits)
        self.context_appearance = MLP(d, d, d, 2)
        self.context_motion = MLP(d, d, d, 2)

    def forward(
        self,
        memory: DecoderMemory,
        boxes: Tensor,
        action_logit: Tensor,
        targets: GroundingTargets | None,
        build_context: bool,
    ) -> ContextStep:
        """ICG + ICR of one stage.

        Args:
            memory: the encoder output (ICG pools its appearance and motion tokens).
            boxes: (B, T, 4) the stage's detached normalised (cx, cy, w, h) boxes.
            action_logit: (B, T) actioness logits of the temporal query that scores this stage.
            targets: GT, given only in training (the 'gt_giou' selection).
            build_context: compute the context tokens (the last stage's have no consumer).
        """
        roi_app, roi_mot = self.icg(memory.tokens, memory.grid, boxes)
        conf_app, conf_mot = self.confidences(roi_app, roi_mot)
        selected, spatial_score, temporal_score = self.select(
            conf_app, conf_mot, action_logit, memory.time_mask, boxes, targets
        )
        context = self.context(roi_app, roi_mot, selected) if build_context and bool(selected.any()) else None
        scored = action_logit if temporal_score is None else temporal_score
        return ContextStep(conf_app + conf_mot, selected, context, spatial_score, scored)

    def confidences(self, roi_app: Tensor, roi_mot: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, d) x 2 -> sigmoid confidences (B, T) x 2 of the appearance and motion RoI features."""
        return (
            self.conf_appearance(roi_app).squeeze(-1).sigmoid(),
            self.conf_motion(roi_mot).squeeze(-1).sigmoid(),
        )

    def select(
        self,
        conf_app: Tensor,
        conf_mot: Tensor,
        action_logit: Tensor,
        time_mask: Tensor,
        boxes: Tensor,
        targets: GroundingTargets | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Which frames give context.

        Args:
            conf_app, conf_mot: (B, T) sigmoid confidences.
            action_logit: (B, T) actioness logits of the temporal query that scores this stage.
            time_mask: (B, T) True = padded frame (never selected).
            boxes: (B, T, 4) detached predicted boxes (for 'gt_giou').
            targets: GT, given only in training; enables the 'gt_giou' rule.
        Returns:
            selected (B, T) bool, the spatial score s_s (or the GIoU score under 'gt_giou') and the temporal
            score s_t (None under 'gt_giou').
        """
        cfg = self.cfg
        real = ~time_mask
        if cfg.context_mode == "all":
            return real, conf_app + conf_mot, None
        if targets is not None and cfg.train_selection == "gt_giou":
            if cfg.context_mode == "temporal":
                # Teacher forcing of the temporal filter alone: the GT segment.
                score = targets.segment_mask.to(boxes.dtype)
                return real & targets.segment_mask, score, None
            score = giou_with_gt(boxes, targets)
            return real & (score > cfg.theta_s_gt), score, None

        if cfg.threshold_mode == "release":
            s_t, s_s = action_logit, conf_app + conf_mot
        else:
            s_t, s_s = action_logit.sigmoid(), (conf_app + conf_mot) / 2
        if cfg.context_mode == "temporal":
            keep = s_t > cfg.theta_t
        elif cfg.context_mode == "spatial":
            keep = s_s > cfg.theta_s
        elif cfg.score_fusion == "two_level":
            keep = (s_t > cfg.theta_t) & (s_s > cfg.theta_s)
        elif cfg.score_fusion == "sum":
            keep = s_t + s_s > cfg.theta_t + cfg.theta_s
        else:
            keep = s_t * s_s > cfg.theta_t * cfg.theta_s
        return real & keep, s_s, s_t

    def context(self, roi_app: Tensor, roi_mot: Tensor, selected: Tensor) -> tuple[Tensor, Tensor]:
        """Context tokens of every frame and their padding mask.

        Returns:
            tokens (B, 2T, d) = [MLP_a(roi_app) ; MLP_m(roi_mot)] and pad (B, 2T) bool, True where the frame was not
            selected.
        """
        tokens = torch.cat([self.context_appearance(roi_app), self.context_motion(roi_mot)], dim=1)
        pad = ~torch.cat([selected, selected], dim=1)
        return tokens, pad
