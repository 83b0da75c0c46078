"""Image-level grounding pretraining: what MDETR gives the release, trained on synthetic frames.

Each sample is one frame and a phrase naming one object, with its box (`cgstvg.data.synthetic.grounding_frames`).
The model is the CG-STVG model itself, run on one-frame "videos": the appearance CNN once per frame (every phrase
of a frame shares that pass), the text encoder, the input projection, the multimodal encoder and the spatial
decoder with its box head; the motion tokens are zeros (MDETR has no motion stream; `train` replaces them with the
Video Swin's). The loss is the release's box loss (L1 + GIoU on every decoding stage). After training, the modules
MDETR has are written in MDETR's key layout (`cgstvg.model.convert.to_mdetr_state_dict`), so `train` initialises
from them through the same path as from a downloaded MDETR checkpoint.

Many distinct targets per step is what makes a DETR-style head learn quickly: a step holds `frames` frames with
about 2.5 targets each, against the 8 targets of a video training step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

from cgstvg.data.collate import normalize_frames
from cgstvg.data.synthetic.grounding_frames import GroundingFrames
from cgstvg.engine.pretrain_common import numeric_settings, warmup_cosine
from cgstvg.model.cgstvg import CGSTVG
from cgstvg.model.criterion import CGSTVGCriterion
from cgstvg.model.head import CGSTVGOutput
from cgstvg.model.targets import GroundingTargets


@dataclass(frozen=True)
class PretrainSettings:
    """The `pretrain_grounding` section's training knobs."""

    steps: int = 2000
    frames: int = 32  # frames per step (each with all its nameable objects)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    eval_every: int = 250  # steps between held-out IoU measurements (and at the end)
    seed: int = 0

    @classmethod
    def from_params(cls, cfg: dict, where: str) -> PretrainSettings:
        settings = numeric_settings(cls, cfg, where)
        for name in ("steps", "frames", "eval_every"):
            if getattr(settings, name) < 1:
                raise ValueError(f"{where}.{name}: must be >= 1, got {getattr(settings, name)}")
        if settings.lr <= 0 or settings.warmup_steps < 0 or settings.grad_clip <= 0:
            raise ValueError(f"{where}: need lr > 0, warmup_steps >= 0 and grad_clip > 0")
        return settings


def ground_frames(
    model: CGSTVG, frames: Tensor, frame_of_sample: Tensor, phrases: list[str], targets: GroundingTargets | None = None
) -> CGSTVGOutput:
    """The model on one-frame videos: frames (F, 3, H, W) normalised, sample s on frame `frame_of_sample[s]`."""
    app = model.appearance(frames)[frame_of_sample][:, None]  # (S, 1, C, h, w): one CNN pass per frame
    s, _, _, h, w = app.shape
    motion = app.new_zeros(s, 1, model.motion.out_channels, h, w)
    vis_mask = torch.zeros(s, 1, h, w, dtype=torch.bool, device=app.device)
    text_hidden, text_mask = model.text(phrases)
    return model.head(app, vis_mask, motion, text_hidden, text_mask, targets=targets)


def _batch(pool: GroundingFrames, frame_ids: np.ndarray) -> tuple[Tensor, Tensor, list[str], Tensor]:
    """Frames `frame_ids` of the pool and all their samples: (frames, frame_of_sample, phrases, boxes)."""
    where = np.flatnonzero(np.isin(pool.frame, frame_ids))
    remap = {int(f): i for i, f in enumerate(frame_ids)}
    frames = normalize_frames(torch.from_numpy(pool.frames[frame_ids]).permute(0, 3, 1, 2))
    frame_of_sample = torch.tensor([remap[int(f)] for f in pool.frame[where]], dtype=torch.long)
    return frames, frame_of_sample, [pool.phrases[i] for i in where], torch.from_numpy(pool.boxes[where])


@torch.no_grad()
def heldout_iou(model: CGSTVG, pool: GroundingFrames, frames_per_batch: int = 64) -> dict[str, float]:
    """Mean IoU of the last stage's boxes with the GT over every held-out sample, and the share above 0.5."""
    was_training = model.training
    model.eval()
    ious = []
    for start in range(0, len(pool.frames), frames_per_batch):
        frames, fos, phrases, boxes = _batch(pool, np.arange(start, min(start + frames_per_batch, len(pool.frames))))
        pred = ground_frames(model, frames, fos, phrases).pred_boxes[:, 0]
        iou = box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(boxes, "cxcywh", "xyxy")).diagonal()
        ious.append(iou)
    model.train(was_training)
    iou = torch.cat(ious)
    return {"iou": float(iou.mean()), "iou@0.5": float((iou > 0.5).float().mean()), "samples": int(iou.numel())}


def pretrain_grounding(
    model: CGSTVG,
    train_pool: GroundingFrames,
    val_pool: GroundingFrames,
    settings: PretrainSettings,
    log: Callable[[dict], None] = lambda row: None,
) -> list[dict]:
    """Train `model` (in place) on the pool; returns the curve rows (step, loss, lr, held-out IoU at eval steps).

    Frames are drawn without replacement, epoch by epoch, from a generator seeded by `settings.seed`.
    """
    criterion = CGSTVGCriterion({"loss_bbox": settings.loss_bbox, "loss_giou": settings.loss_giou})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)

    scheduler = warmup_cosine(optimizer, settings.warmup_steps, settings.steps)
    rng = np.random.default_rng(settings.seed)
    order, cursor = rng.permutation(len(train_pool.frames)), 0
    rows, started = [], time.perf_counter()
    model.train()
    for step in range(1, settings.steps + 1):
        if cursor + settings.frames > len(order):
            order, cursor = rng.permutation(len(train_pool.frames)), 0
        frame_ids = np.sort(order[cursor : cursor + settings.frames])
        cursor += settings.frames
        frames, fos, phrases, boxes = _batch(train_pool, frame_ids)
        targets = GroundingTargets(boxes[:, None], torch.ones(len(phrases), 1, dtype=torch.bool))
        out = ground_frames(model, frames, fos, phrases, targets)
        losses = criterion(out, targets)
        total = criterion.weighted_total(losses, len(out.aux_outputs) + 1)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        row = {
            "step": step,
            "loss": float(total.detach()),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        if step % settings.eval_every == 0 or step == settings.steps:
            row.update({f"val_{k}": v for k, v in heldout_iou(model, val_pool).items() if k != "samples"})
        rows.append(row)
        log(row)
    return rows
