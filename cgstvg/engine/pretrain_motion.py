"""Clip-level action recognition pretraining of the Video Swin: what Kinetics-400 gives the release.

The motion backbone (params.yaml `model.backbones.motion`) sees windows of consecutive frames of one-object
synthetic clips (`cgstvg.data.synthetic.action_windows`) and a linear classifier on its mean-pooled last stage
names the action performed (or none). Only the backbone is kept; it is then frozen, as the release keeps its
Kinetics Swin frozen, and `extract` caches its features.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from cgstvg.data.collate import normalize_frames
from cgstvg.data.synthetic.action_windows import ACTION_CLASSES, ActionWindows, ObjectActionWindows
from cgstvg.engine.pretrain_common import numeric_settings, warmup_cosine
from cgstvg.model.motion import VideoSwinBackbone


@dataclass(frozen=True)
class MotionPretrainSettings:
    """The `pretrain_motion` section's training knobs."""

    steps: int = 600
    batch: int = 16  # windows per step
    lr: float = 1e-3
    bias_lr: float = 3e-2  # the windows' relative position bias tables (see `pretrain_motion`)
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    eval_every: int = 100
    seed: int = 0

    @classmethod
    def from_params(cls, cfg: dict, where: str) -> MotionPretrainSettings:
        settings = numeric_settings(cls, cfg, where)
        if min(settings.steps, settings.batch, settings.eval_every) < 1 or min(settings.lr, settings.bias_lr) <= 0:
            raise ValueError(f"{where}: steps, batch and eval_every must be >= 1 and lr, bias_lr > 0")
        return settings


class ActionClassifier(nn.Module):
    """The motion backbone, max-pooled over cells and averaged over frames, and a linear layer over `ACTION_CLASSES`.

    Max over cells: the object covers a few of the grid's cells, and a mean over all of them would dilute what it
    does with the still background.
    """

    def __init__(self, backbone: VideoSwinBackbone):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, len(ACTION_CLASSES))

    def forward(self, windows: Tensor) -> Tensor:
        """windows (B, T, 3, H, W) normalised -> logits (B, classes)."""
        b, t = windows.shape[:2]
        feats = self.backbone(windows.flatten(0, 1), num_frames=t)  # (B*T, C, h, w)
        return self.fc(feats.unflatten(0, (b, t)).amax(dim=(3, 4)).mean(dim=1))


class ObjectActionClassifier(nn.Module):
    """The motion backbone, RoIAlign-pooled inside every object's box in every frame, and a linear layer over
    `ACTION_CLASSES`: what each object does at each moment, from the features at its place and time.

    This is the cue that grounding needs from the frozen motion features (ICG pools them inside the predicted
    box, and the decoders read them per frame and cell); a clip-level label trains it only indirectly.
    """

    def __init__(self, backbone: VideoSwinBackbone, output_size: int = 2):
        super().__init__()
        self.backbone = backbone
        self.output_size = output_size
        self.fc = nn.Linear(backbone.out_channels, len(ACTION_CLASSES))

    def forward(self, windows: Tensor, boxes: Tensor) -> Tensor:
        """windows (B, T, 3, H, W) normalised, boxes (B, O, T, 4) normalised xyxy -> logits (B, O, T, classes)."""
        b, t = windows.shape[:2]
        o = boxes.shape[1]
        feats = self.backbone(windows.flatten(0, 1), num_frames=t)  # (B*T, C, h, w)
        h, w = feats.shape[-2:]
        per_frame = boxes.permute(0, 2, 1, 3).reshape(b * t, o, 4) * boxes.new_tensor([w, h, w, h])
        frame_index = torch.arange(b * t, dtype=boxes.dtype, device=boxes.device).repeat_interleave(o)
        rois = torch.cat([frame_index[:, None], per_frame.reshape(-1, 4)], dim=1)
        pooled = roi_align(feats, rois, self.output_size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        logits = self.fc(pooled.mean(dim=(2, 3)))  # (B*T*O, classes)
        return logits.view(b, t, o, -1).transpose(1, 2)


def _frames(pool: ActionWindows | ObjectActionWindows, ids: np.ndarray) -> Tensor:
    frames = torch.from_numpy(pool.frames[ids]).permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W) uint8
    return normalize_frames(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])


def _logits_and_labels(
    model: nn.Module, pool: ActionWindows | ObjectActionWindows, ids: np.ndarray
) -> tuple[Tensor, Tensor]:
    """Logits and labels of the samples `ids`, flattened to (N, classes) and (N,); absent objects dropped."""
    windows = _frames(pool, ids)
    labels = torch.from_numpy(pool.labels[ids])
    if isinstance(pool, ObjectActionWindows):
        logits = model(windows, torch.from_numpy(pool.boxes[ids]))
        present = labels >= 0
        return logits[present], labels[present]
    return model(windows), labels


def build_classifier(backbone: VideoSwinBackbone, pool: ActionWindows | ObjectActionWindows) -> nn.Module:
    """The classifier that fits the pool: clip-level for `ActionWindows`, per object and frame otherwise."""
    return ObjectActionClassifier(backbone) if isinstance(pool, ObjectActionWindows) else ActionClassifier(backbone)


@torch.no_grad()
def heldout_accuracy(model: nn.Module, pool: ActionWindows | ObjectActionWindows, batch: int = 32) -> float:
    """Share of held-out samples (windows, or object-frames) whose class is predicted."""
    was = model.training
    model.eval()
    right = total = 0
    for start in range(0, len(pool), batch):
        logits, labels = _logits_and_labels(model, pool, np.arange(start, min(start + batch, len(pool))))
        right += int((logits.argmax(-1) == labels).sum())
        total += len(labels)
    model.train(was)
    return right / total


def pretrain_motion(
    backbone: VideoSwinBackbone,
    train_pool: ActionWindows | ObjectActionWindows,
    val_pool: ActionWindows | ObjectActionWindows,
    settings: MotionPretrainSettings,
    log: Callable[[dict], None] = lambda row: None,
) -> list[dict]:
    """Train `backbone` (in place) as an action classifier; returns the curve rows (held-out accuracy at evals).

    `ActionWindows` train it on clip-level labels, `ObjectActionWindows` on every object's per-frame action.
    """
    backbone.requires_grad_(True)
    torch.manual_seed(settings.seed)
    model = build_classifier(backbone, train_pool)
    # Motion is told apart by where attention looks in the previous and next frames, which only the relative
    # position bias says; initialised at std 0.02, it needs entries of several units to single out an offset,
    # which Adam at the weights' rate (a step of ~lr per update) does not reach in a few thousand steps: at 1e-3
    # throughout, held-out accuracy stayed at the majority class (README "pretrain_motion").
    bias = [p for n, p in model.named_parameters() if n.endswith("relative_position_bias_table")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("relative_position_bias_table")]
    optimizer = torch.optim.AdamW(
        [{"params": rest, "lr": settings.lr}, {"params": bias, "lr": settings.bias_lr, "weight_decay": 0.0}],
        weight_decay=settings.weight_decay,
    )

    scheduler = warmup_cosine(optimizer, settings.warmup_steps, settings.steps)
    rng = np.random.default_rng(settings.seed)
    criterion = nn.CrossEntropyLoss()
    rows, started = [], time.perf_counter()
    model.train()
    for step in range(1, settings.steps + 1):
        logits, labels = _logits_and_labels(
            model, train_pool, rng.choice(len(train_pool), settings.batch, replace=False)
        )
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
        row = {
            "step": step,
            "loss": float(loss.detach()),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        if step % settings.eval_every == 0 or step == settings.steps:
            row["val_accuracy"] = heldout_accuracy(model, val_pool)
        rows.append(row)
        log(row)
    backbone.requires_grad_(False)
    return rows
