"""Resize rules and the mapping of boxes to resized frames.

Two rules give the resized (height, width) from the original (height, width):

- `"aspect"` (default): the short side becomes `short_side`, unless the long side would then exceed
  `max_long_side`, in which case the long side becomes `max_long_side`. Aspect ratio is kept (up to rounding).
- `"release"`: the release's rule for exact comparison: height = `short_side` (420), width =
  `min(int(short_side * w / h), int(short_side * width_cap))` with `width_cap` = 1.4, so videos wider than
  1.4:1 (16:9 ones, for example) are squeezed horizontally.

Frames are resized with `torchvision.transforms.v2.functional.resize`, bilinear with antialias, on uint8: this
is the interpolation of the release's HC-STVG loader (torchvision resize, antialias=True), and torchvision's
uint8 path is its fastest CPU path. Boxes are mapped by scaling each axis by its own ratio, exactly what the
release's `BoxList.resize` does, so normalized boxes do not depend on the resized size.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

RESIZE_MODES = ("aspect", "release")


def resized_size(
    height: int, width: int, *, short_side: int, max_long_side: int, mode: str = "aspect", width_cap: float = 1.4
) -> tuple[int, int]:
    """(new_height, new_width) for a frame of (height, width) under the rule `mode` (see the module docstring)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if mode == "release":
        return short_side, min(int(short_side * width / height), int(short_side * width_cap))
    if mode != "aspect":
        raise ValueError(f"unknown resize mode {mode!r} (choose from {', '.join(RESIZE_MODES)})")
    scale = short_side / min(height, width)
    if max(height, width) * scale > max_long_side:
        scale = max_long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (T, 3, H, W) frames (uint8 or float) to `size` = (h, w): bilinear, antialiased; no-op if equal."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return TF.resize(frames, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def scale_boxes_xyxy(boxes: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """Map (N, 4) xyxy pixel boxes from a frame of `from_size` = (h, w) to one of `to_size` = (h, w)."""
    sy = to_size[0] / from_size[0]
    sx = to_size[1] / from_size[1]
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def normalized_cxcywh(boxes_xyxy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) xyxy pixel boxes in a frame of `size` = (h, w) -> (N, 4) cxcywh in [0, 1] of that frame."""
    h, w = size
    return box_convert(boxes_xyxy, "xyxy", "cxcywh") / boxes_xyxy.new_tensor([w, h, w, h])


__all__ = ["RESIZE_MODES", "normalized_cxcywh", "resize_frames", "resized_size", "scale_boxes_xyxy"]
