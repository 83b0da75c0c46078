"""Frame-level grounding with motion and verbs: the second pretraining stage, after the MDETR analogue.

`pretrain_grounding` trains what MDETR gives the release on still frames, with the motion tokens at zero, so the
encoder first meets the Video Swin's tokens in fine-tuning, where the STVG task gives it 8 targets a step to learn
from. This stage starts from that output and the frozen pretrained Swin and trains, on one-frame "videos" of its
own clips (`cgstvg.data.synthetic.action_frames`): each sample is a frame, its motion features and a caption naming
an object and an action; the loss is the release's box loss (L1 + GIoU, every stage) on the named object plus the
release's actioness BCE (every stage) on whether that object performs the action in that frame. It trains the
appearance CNN, the text encoder, the projections (appearance, text, motion), the encoder, the spatial decoder, the
box head, the temporal decoder and the actioness head; the Swin stays frozen and the start/end head and the context
blocks are untouched (a one-frame video has no segment, and the stage runs without instance context).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc
from torchvision.ops import box_convert, box_iou

from cgstvg.data.collate import normalize_frames
from cgstvg.data.synthetic.action_frames import ActionFramesClip
from cgstvg.engine.pretrain_common import numeric_settings, warmup_cosine
from cgstvg.model.cgstvg import CGSTVG
from cgstvg.model.criterion import CGSTVGCriterion
from cgstvg.model.head import CGSTVGOutput
from cgstvg.model.targets import GroundingTargets

# The modules this stage trains and writes (our keys); `train` loads them over the `pretrain_grounding` init.
TRAINED_PREFIXES = (
    "appearance.",
    "text.",
    "head.input_proj.",
    "head.motion_proj.",
    "head.text_resizer.",
    "head.encoder.",
    "head.anchor_init.",
    "head.spatial_decoder.",
    "head.box_head.",
    "head.temporal_decoder.",
    "head.actioness_head.",
)


@dataclass(frozen=True)
class ActionPretrainSettings:
    """The `pretrain_action_grounding` section's training knobs."""

    steps: int = 1500
    frames: int = 48  # frames per step (each with all its nameable objects)
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    loss_actioness: float = 2.0  # the release's HC-STVG weight
    eval_every: int = 250
    seed: int = 0

    @classmethod
    def from_params(cls, cfg: dict, where: str) -> ActionPretrainSettings:
        settings = numeric_settings(cls, cfg, where)
        for name in ("steps", "frames", "eval_every"):
            if getattr(settings, name) < 1:
                raise ValueError(f"{where}.{name}: must be >= 1, got {getattr(settings, name)}")
        if settings.lr <= 0 or settings.warmup_steps < 0 or settings.grad_clip <= 0:
            raise ValueError(f"{where}: need lr > 0, warmup_steps >= 0 and grad_clip > 0")
        return settings


@dataclass
class ActionFramesPool:
    """Samples of many clips. frames: (F, H, W, 3) uint8 (the picked frames only); motion: (F, C, h, w) float32,
    the frozen Swin's features of each picked frame (computed over its whole clip); per sample: `frame` (S,) into
    frames, `phrases`, `boxes` (S, 4), `active` (S,) bool."""

    frames: np.ndarray
    motion: np.ndarray
    frame: np.ndarray
    phrases: list[str]
    boxes: np.ndarray
    active: np.ndarray

    def __len__(self) -> int:
        return len(self.phrases)


@torch.inference_mode()
def build_pool(motion: torch.nn.Module, clips: Iterable[ActionFramesClip], total_frames: int) -> ActionFramesPool:
    """Run the frozen motion backbone over each clip (all its frames) and keep its picked frames' features.

    `total_frames`: the picked frames of all clips together. The frames and features go into arrays of that size,
    allocated once: kept as one small array per clip, they sat between the Swin's freed buffers and the C heap grew
    by about 2.5 MB a clip (14 GB for 2,000 clips).
    """
    was_training = motion.training
    motion.eval()
    frames: np.ndarray | None = None
    feats: np.ndarray | None = None
    frame, phrases, boxes, active = [], [], [], []
    offset = 0
    for clip in clips:
        video = normalize_frames(torch.from_numpy(clip.frames).permute(0, 3, 1, 2))
        out = motion(video, video.shape[0])[torch.from_numpy(clip.picked)].float().numpy()
        if frames is None or feats is None:
            frames = np.empty((total_frames, *clip.frames.shape[1:]), np.uint8)
            feats = np.empty((total_frames, *out.shape[1:]), np.float32)
        end = offset + len(clip.picked)
        if end > total_frames:
            raise ValueError(f"build_pool: the clips pick more than total_frames={total_frames} frames")
        frames[offset:end] = clip.frames[clip.picked]
        feats[offset:end] = out
        frame.append(clip.frame + offset)
        phrases += clip.phrases
        boxes.append(clip.boxes)
        active.append(clip.active)
        offset = end
    motion.train(was_training)
    if not phrases or frames is None or feats is None:
        raise ValueError("pretrain_action_grounding: the clips gave no sample")
    if offset != total_frames:
        raise ValueError(f"build_pool: the clips picked {offset} frames, not total_frames={total_frames}")
    return ActionFramesPool(
        frames, feats, np.concatenate(frame), phrases, np.concatenate(boxes), np.concatenate(active)
    )


def ground_frames(
    model: CGSTVG,
    frames: Tensor,
    motion: Tensor,
    frame_of_sample: Tensor,
    phrases: list[str],
    targets: GroundingTargets | None = None,
) -> CGSTVGOutput:
    """The model on one-frame videos with their motion tokens: frames (F, 3, H, W) normalised, motion (F, C, h, w)."""
    app = model.appearance(frames)[frame_of_sample][:, None]  # (S, 1, C, h, w): one CNN pass per frame
    mot = motion[frame_of_sample][:, None]
    if mot.shape[-2:] != app.shape[-2:]:
        raise ValueError(f"motion grid {tuple(mot.shape[-2:])} != appearance grid {tuple(app.shape[-2:])}")
    vis_mask = torch.zeros(app.shape[0], 1, *app.shape[-2:], dtype=torch.bool, device=app.device)
    text_hidden, text_mask = model.text(phrases)
    return model.head(app, vis_mask, mot, text_hidden, text_mask, targets=targets)


def _batch(pool: ActionFramesPool, frame_ids: np.ndarray) -> tuple[Tensor, Tensor, Tensor, list[str], Tensor, Tensor]:
    """Frames `frame_ids` of the pool and all their samples: (frames, motion, frame_of_sample, phrases, boxes,
    active)."""
    where = np.flatnonzero(np.isin(pool.frame, frame_ids))
    remap = {int(f): i for i, f in enumerate(frame_ids)}
    frames = normalize_frames(torch.from_numpy(pool.frames[frame_ids]).permute(0, 3, 1, 2))
    motion = torch.from_numpy(pool.motion[frame_ids])
    frame_of_sample = torch.tensor([remap[int(f)] for f in pool.frame[where]], dtype=torch.long)
    return (
        frames,
        motion,
        frame_of_sample,
        [pool.phrases[i] for i in where],
        torch.from_numpy(pool.boxes[where]),
        torch.from_numpy(pool.active[where]),
    )


def actioness_loss(out: CGSTVGOutput, active: Tensor) -> Tensor:
    """The release's actioness BCE on every stage (one frame per sample), summed over stages."""
    target = active.to(out.pred_actioness.dtype)
    return sum(
        (F.binary_cross_entropy_with_logits(stage.pred_actioness[:, 0], target) for stage in out.stages),
        out.pred_actioness.new_zeros(()),
    )


@torch.no_grad()
def heldout_scores(model: CGSTVG, pool: ActionFramesPool, frames_per_batch: int = 64) -> dict[str, float]:
    """Last stage on every held-out sample: mean box IoU, share above 0.5, actioness accuracy (logit > 0) and AUC."""
    was_training = model.training
    model.eval()
    ious, logits = [], []
    for start in range(0, len(pool.frames), frames_per_batch):
        frames, motion, fos, phrases, boxes, _ = _batch(
            pool, np.arange(start, min(start + frames_per_batch, len(pool.frames)))
        )
        out = ground_frames(model, frames, motion, fos, phrases)
        pred = out.pred_boxes[:, 0]
        ious.append(box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(boxes, "cxcywh", "xyxy")).diagonal())
        logits.append(out.pred_actioness[:, 0])
    model.train(was_training)
    iou, logit = torch.cat(ious), torch.cat(logits)
    active = torch.from_numpy(pool.active)  # batches take the samples in pool order (`frame` is non-decreasing)
    return {
        "iou": float(iou.mean()),
        "iou@0.5": float((iou > 0.5).float().mean()),
        "act_acc": float(((logit > 0) == active).float().mean()),
        "act_auc": float(binary_auroc(logit, active.long())),
        "act_positive": float(active.float().mean()),
    }


def pretrain_action_grounding(
    model: CGSTVG,
    train_pool: ActionFramesPool,
    val_pool: ActionFramesPool,
    settings: ActionPretrainSettings,
    log: Callable[[dict], None] = lambda row: None,
) -> list[dict]:
    """Train `model` (in place; the parameters with requires_grad) on the pool; returns the curve rows.

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
        frames, motion, fos, phrases, boxes, active = _batch(train_pool, frame_ids)
        targets = GroundingTargets(boxes[:, None], torch.ones(len(phrases), 1, dtype=torch.bool))
        out = ground_frames(model, frames, motion, fos, phrases, targets)
        box = criterion.weighted_total(criterion(out, targets), len(out.aux_outputs) + 1)
        act = actioness_loss(out, active)
        total = box + settings.loss_actioness * act
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        row = {
            "step": step,
            "loss": float(total.detach()),
            "loss_box": float(box.detach()),
            "loss_actioness": float(act.detach()),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        if step % settings.eval_every == 0 or step == settings.steps:
            row.update({f"val_{k}": v for k, v in heldout_scores(model, val_pool).items()})
        rows.append(row)
        log(row)
    return rows


def trained_state(model: CGSTVG) -> dict[str, Tensor]:
    """The entries of the modules this stage trains (`TRAINED_PREFIXES`), contiguous copies."""
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k.startswith(TRAINED_PREFIXES)}
