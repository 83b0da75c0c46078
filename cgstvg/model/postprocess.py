"""Predictions -> a spatio-temporal tube in original frame numbers and pixels.

The segment maximises log p_start(s) + log p_end(e) over pairs with s < e (strict, as the release: the diagonal
is excluded), both real frames. Boxes: normalised cxcywh -> xyxy scaled by the original (w, h), clamped at 0, as
the release's post-processor does (a box may then reach past the right or bottom edge); `clip_to_frame` also clips
them to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert


@dataclass
class Tube:
    """Post-processed predictions of B videos.

    boxes_xyxy: (B, T, 4) pixels of the original video, one box per sampled frame (padded frames included);
    start_index, end_index: (B,) indices into the sampled frames, start < end when a video has >= 2 real frames;
    sted_frame_ids: (B, 2) [frame_ids[start], frame_ids[end] + 1], the release's exclusive end;
    sted_frame_ids_inclusive: (B, 2) [frame_ids[start], frame_ids[end]];
    score: (B,) the joint log-probability of the chosen pair (start/end softmax over real frames).
    """

    boxes_xyxy: Tensor
    start_index: Tensor
    end_index: Tensor
    sted_frame_ids: Tensor
    sted_frame_ids_inclusive: Tensor
    score: Tensor


@torch.no_grad()
def post_process(
    pred_sted: Tensor,
    pred_boxes: Tensor,
    frame_ids: Tensor,
    orig_size_hw: Tensor,
    time_mask: Tensor | None = None,
    *,
    clip_to_frame: bool = False,
) -> Tube:
    """
    Args:
        pred_sted: (B, T, 2) start/end logits.
        pred_boxes: (B, T, 4) normalised (cx, cy, w, h).
        frame_ids: (B, T) int, original frame number of each sampled frame.
        orig_size_hw: (B, 2) original (height, width) in pixels.
        time_mask: (B, T) bool, True = padded frame; None = all real.
        clip_to_frame: False (the release, and `evaluate` for fidelity with the authors' evaluator): boxes clamped
            at 0 only; True (`cgstvg ground`, whose output promises boxes inside the frame): also at (w, h).
    Returns:
        Tube. A video with a single real frame gets start = end = 0 (as the release's arg-max over an all-masked map).
    """
    b, t, _ = pred_sted.shape
    if time_mask is None:
        time_mask = torch.zeros(b, t, dtype=torch.bool, device=pred_sted.device)
    real = ~time_mask
    logp = F.log_softmax(pred_sted.masked_fill(time_mask[..., None], float("-inf")), dim=1)
    joint = logp[:, :, None, 0] + logp[:, None, :, 1]  # (B, T_start, T_end)
    idx = torch.arange(t, device=pred_sted.device)
    allowed = (idx[:, None] < idx[None, :]) & real[:, :, None] & real[:, None, :]
    joint = joint.masked_fill(~allowed, float("-inf"))
    flat = joint.flatten(1)
    best = flat.argmax(dim=1)  # the first maximum, as the release
    start, end = best // t, best % t
    gather = frame_ids.gather(1, torch.stack([start, end], dim=1))
    hw = orig_size_hw.to(pred_boxes.dtype)
    scale = torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], dim=1)[:, None, :]
    boxes = (box_convert(pred_boxes, "cxcywh", "xyxy") * scale).clamp(min=0)
    if clip_to_frame:
        boxes = torch.minimum(boxes, scale)
    return Tube(
        boxes_xyxy=boxes,
        start_index=start,
        end_index=end,
        sted_frame_ids=torch.stack([gather[:, 0], gather[:, 1] + 1], dim=1),
        sted_frame_ids_inclusive=gather,
        score=flat.gather(1, best[:, None]).squeeze(1),
    )
