"""The training losses of CG-STVG, on every decoding stage (DETR-style auxiliary losses).

Per stage (names as the release: the last stage has no suffix, stage i < K-1 gets `_i`):
* loss_bbox       sum over GT-segment frames of |box - GT|_1 (normalised cxcywh) / number of GT boxes;
* loss_giou       sum of (1 - GIoU) over the same frames / number of GT boxes;
* loss_sted       KL(prediction || Gaussian target) of the start and of the end distribution over frames, the
                  target centred on the first / last GT frame with std `sigma` (in sampled frames), summed over
                  start and end and averaged over frames (the release's "reverse" KL);
* loss_actioness  BCE of the actioness logits against the GT-segment indicator, weight 1 inside the segment and
                  `eos_coef` outside, averaged over frames;
* loss_conf       BCE-with-logits of boxes_conf (the release feeds sigmoid + sigmoid, in [0, 2], as a logit) against
                  the IoU of the predicted and GT box, averaged over GT frames.

Batching: the release trains one video per GPU and averages gradients over GPUs, so its frame-averaged terms
(sted, actioness, conf) are per-video means averaged over videos, and its box terms are a global sum over the
GT boxes divided by their global count. We compute exactly these quantities for B padded videos; padded frames
(`time_mask`) never contribute. With B = 1 and no padding this is the release's loss term for term.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss

from cgstvg.model.head import CGSTVGOutput, StageOutput
from cgstvg.model.targets import GroundingTargets

LOSS_NAMES = ("loss_bbox", "loss_giou", "loss_sted", "loss_actioness", "loss_conf")


def _per_video_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean over the valid entries of each video, then over videos: (B, T), (B, T) bool -> ()."""
    valid = valid.to(values.dtype)
    return ((values * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)).mean()


class CGSTVGCriterion(nn.Module):
    """Loss terms of every stage and their weighted sum.

    Args:
        weights: weight per base term name (`loss_bbox`, ...); the same weight applies to every stage.
        eos_coef: actioness BCE weight outside the GT segment.
        sigma: std (in sampled frames) of the Gaussian start/end targets.
        aux_loss: also compute the terms of the earlier stages.
        conf_target_detach: detach the IoU target of loss_conf (the release does not, so the box receives a
            gradient through the target as well).
    """

    def __init__(
        self,
        weights: dict[str, float],
        eos_coef: float = 0.3,
        sigma: float = 2.0,
        aux_loss: bool = True,
        conf_target_detach: bool = False,
    ):
        super().__init__()
        unknown = sorted(set(weights) - set(LOSS_NAMES))
        if unknown:
            raise KeyError(f"CGSTVGCriterion: unknown loss weights {unknown} (known: {LOSS_NAMES})")
        self.weights = {name: float(weights.get(name, 0.0)) for name in LOSS_NAMES}
        self.eos_coef = eos_coef
        self.sigma = sigma
        self.aux_loss = aux_loss
        self.conf_target_detach = conf_target_detach

    def weight_dict(self, num_stages: int) -> dict[str, float]:
        """Weight of every term name this criterion emits for `num_stages` stages."""
        out = dict(self.weights)
        if self.aux_loss:
            for i in range(num_stages - 1):
                out.update({f"{name}_{i}": w for name, w in self.weights.items()})
        return out

    def weighted_total(self, losses: dict[str, Tensor], num_stages: int) -> Tensor:
        """Sum of weight * term over the emitted terms (terms with weight 0 are skipped)."""
        weights = self.weight_dict(num_stages)
        return cast(Tensor, sum(weights[k] * v for k, v in losses.items() if weights.get(k, 0.0) != 0.0))

    def loss_boxes(self, stage: StageOutput, targets: GroundingTargets, box_frames: Tensor) -> dict[str, Tensor]:
        pred = stage.pred_boxes[box_frames]
        gt = targets.boxes[box_frames].to(pred.dtype)
        num_boxes = max(int(box_frames.sum()), 1)
        giou_loss = generalized_box_iou_loss(
            box_convert(pred, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy"), reduction="sum"
        )
        return {
            "loss_bbox": F.l1_loss(pred, gt, reduction="sum") / num_boxes,
            "loss_giou": giou_loss / num_boxes,
        }

    def loss_conf(self, stage: StageOutput, targets: GroundingTargets, box_frames: Tensor) -> dict[str, Tensor]:
        pred = stage.pred_boxes[box_frames]
        gt = targets.boxes[box_frames].to(pred.dtype)
        # Pairwise IoU and its diagonal (torchvision has no element-wise IoU); N is at most B*T.
        iou = box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy")).diagonal()
        if self.conf_target_detach:
            iou = iou.detach()
        per_frame = stage.pred_boxes.new_zeros(box_frames.shape)
        per_frame[box_frames] = F.binary_cross_entropy_with_logits(
            cast(Tensor, stage.boxes_conf)[box_frames], iou, reduction="none"
        )
        return {"loss_conf": _per_video_mean(per_frame, box_frames)}

    def loss_actioness(self, stage: StageOutput, targets: GroundingTargets, real: Tensor) -> dict[str, Tensor]:
        inside = targets.segment_mask
        weight = torch.where(inside, 1.0, self.eos_coef).to(stage.pred_actioness.dtype)
        bce = F.binary_cross_entropy_with_logits(
            stage.pred_actioness, targets.gt_mask.to(stage.pred_actioness.dtype), weight=weight, reduction="none"
        )
        return {"loss_actioness": _per_video_mean(bce, real)}

    def loss_sted(self, stage: StageOutput, targets: GroundingTargets, real: Tensor) -> dict[str, Tensor]:
        sted = stage.pred_sted.masked_fill(~real[..., None], -1e32)  # padded frames get no probability
        eps = 1e-6
        frames = torch.arange(sted.shape[1], device=sted.device, dtype=sted.dtype)
        total = sted.new_zeros(real.shape)
        for channel, index in enumerate(targets.start_end):
            target = (-((frames[None] - index[:, None].to(sted.dtype)) ** 2) / (2 * self.sigma**2)).exp()
            target = F.normalize((target + eps) * real, p=1, dim=1)
            prob = sted[..., channel].softmax(dim=1)
            kl = prob * ((prob + eps) / target.clamp(min=eps * eps)).log()
            total = total + kl
        return {"loss_sted": _per_video_mean(total, real)}

    def stage_losses(self, stage: StageOutput, targets: GroundingTargets, time_mask: Tensor) -> dict[str, Tensor]:
        real = ~time_mask
        box_frames = targets.segment_mask & real
        losses = {}
        losses.update(self.loss_boxes(stage, targets, box_frames))
        losses.update(self.loss_sted(stage, targets, real))
        losses.update(self.loss_actioness(stage, targets, real))
        if stage.boxes_conf is not None:
            losses.update(self.loss_conf(stage, targets, box_frames))
        return losses

    def forward(self, outputs: CGSTVGOutput, targets: GroundingTargets) -> dict[str, Tensor]:
        """All loss terms: the last stage's under the base names, earlier stages' with suffix `_i`."""
        if targets.gt_mask.shape != outputs.time_mask.shape:
            raise ValueError(
                f"CGSTVGCriterion: targets cover {tuple(targets.gt_mask.shape)} frames, outputs "
                f"{tuple(outputs.time_mask.shape)}"
            )
        if bool((targets.gt_mask & outputs.time_mask).any()):
            raise ValueError("CGSTVGCriterion: a GT frame is marked as padding in time_mask")
        stages = outputs.stages
        losses = self.stage_losses(stages[-1], targets, outputs.time_mask)
        if self.aux_loss:
            for i, stage in enumerate(stages[:-1]):
                losses.update({f"{k}_{i}": v for k, v in self.stage_losses(stage, targets, outputs.time_mask).items()})
        return losses


def build_criterion(loss_section: dict, where: str = "params.yaml:model.loss") -> CGSTVGCriterion:
    """`CGSTVGCriterion` from a params section {weights, eos_coef, sigma, aux_loss, conf_target_detach}."""
    allowed = {"weights", "eos_coef", "sigma", "aux_loss", "conf_target_detach"}
    unknown = sorted(set(loss_section) - allowed)
    if unknown:
        raise KeyError(f"{where}: unknown keys {unknown} (known: {sorted(allowed)})")
    if "weights" not in loss_section:
        raise KeyError(f"{where}: missing 'weights'")
    return CGSTVGCriterion(**loss_section)
