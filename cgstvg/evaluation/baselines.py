"""Trivial baselines scored beside the model, so that a score can be read against "no understanding at all".

- "whole_clip_centred_box": the segment is the whole usable clip, and every frame gets one box of the mean
  training-box size centred in the frame;
- "oracle_segment_centred_box": the GT segment itself (a perfect temporal answer), with the same centred box.
A model that does not beat the second one on m_vIoU has learned nothing spatial.

Predictions use the metrics' conventions: segment (start, end) in original frame ids with an EXCLUSIVE end, and
one xyxy pixel box for every original frame of the clip.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

BASELINES = ("whole_clip_centred_box", "oracle_segment_centred_box")


def mean_relative_size(boxes: Iterable, widths: Iterable[float], heights: Iterable[float]) -> tuple[float, float]:
    """Mean box width/height as fractions of the frame, over all boxes of all samples.

    boxes: per sample an (n, 4) xyxy pixel array; widths/heights: that sample's frame size in pixels.
    """
    rel = [
        (np.asarray(b, dtype=np.float64)[:, 2:] - np.asarray(b, dtype=np.float64)[:, :2]) / np.array([w, h])
        for b, w, h in zip(boxes, widths, heights)
        if len(b)
    ]
    if not rel:
        raise ValueError("mean_relative_size needs at least one box")
    mean = np.concatenate(rel).mean(0)
    return float(mean[0]), float(mean[1])


def centred_box(width: float, height: float, rel_size: tuple[float, float]) -> np.ndarray:
    """(4,) xyxy pixel box of `rel_size` (fractions of the frame) centred in a width x height frame."""
    bw, bh = rel_size[0] * width, rel_size[1] * height
    return np.array([(width - bw) / 2, (height - bh) / 2, (width + bw) / 2, (height + bh) / 2], dtype=np.float64)


def baseline_prediction(
    kind: str,
    *,
    segment_start: int,
    segment_end: int,
    tube_start: int,
    tube_end: int,
    width: float,
    height: float,
    rel_size: tuple[float, float],
) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """One sample's baseline prediction: ((start, end_exclusive), frames (F,), boxes (F, 4) xyxy pixels).

    segment_start..segment_end: the usable clip (inclusive); tube_start..tube_end: the GT tube (inclusive).
    """
    if kind == "whole_clip_centred_box":
        segment = (int(segment_start), int(segment_end) + 1)
    elif kind == "oracle_segment_centred_box":
        segment = (int(tube_start), int(tube_end) + 1)
    else:
        raise ValueError(f"unknown baseline {kind!r} (choose from {', '.join(BASELINES)})")
    frames = np.arange(int(segment_start), int(segment_end) + 1)
    boxes = np.broadcast_to(centred_box(width, height, rel_size), (frames.size, 4)).copy()
    return segment, frames, boxes


__all__ = ["BASELINES", "baseline_prediction", "centred_box", "mean_relative_size"]
