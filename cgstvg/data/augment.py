"""Training augmentations on one clip (a sample read from a shard, see `cgstvg.data.shard_reader.clip_from_sample`).

A clip is a dict with `frames` (T, 3, H, W) uint8, `frame_ids` (T,) long, `actioness` (T,) float, `gt_indices`
(n_gt,) long (positions of the GT frames, contiguous), `boxes` (n_gt, 4) normalized cxcywh, `boxes_xyxy`
(n_gt, 4) original pixels and `sentence`. Every function returns a new clip and leaves its input untouched.

- `temporal_crop`: the release's crop. The first kept frame is drawn uniformly among the frames before the GT
  (the first frame if none), the last among the frames after it (the last frame if none): the GT is kept whole.
  It crops the stored (already sampled) frames: as the release does for HC-STVG; for VidSTG the release crops
  before its 64-frame subsampling, so a cropped VidSTG clip here has fewer frames than the release's.
- `hflip`: mirrors the frames and the boxes (cx -> 1 - cx) and swaps the words 'left' and 'right' in the
  sentence. The release computes the swapped text and then returns the original sentence; we return the swap.
- `random_resize`: multi-scale training (short side drawn from a list, long side capped). Normalized boxes are
  unchanged by a resize. The release disables this (its RandomResize resizes to the current size).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from cgstvg.data.resize import resize_frames, resized_size

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_SWAP = {"left": "right", "right": "left"}


def swap_left_right(text: str) -> str:
    """Swap the whole words 'left' and 'right', keeping their case ('Left' -> 'Right', 'LEFT' -> 'RIGHT')."""

    def repl(m: re.Match) -> str:
        word = m.group(0)
        new = _SWAP[word.lower()]
        if word.isupper():
            return new.upper()
        return new.capitalize() if word[0].isupper() else new

    return _LEFT_RIGHT.sub(repl, text)


def hflip(clip: dict) -> dict:
    """Mirror frames and boxes horizontally and swap 'left'/'right' in the sentence."""
    boxes = clip["boxes"].clone()
    boxes[:, 0] = 1.0 - boxes[:, 0]
    out = dict(clip, frames=clip["frames"].flip(-1), boxes=boxes, sentence=swap_left_right(clip["sentence"]))
    if "boxes_xyxy" in clip:  # original pixels: mirror inside the original width
        w = clip["orig_size"][1]
        xyxy = clip["boxes_xyxy"].clone()
        xyxy[:, [0, 2]] = w - clip["boxes_xyxy"][:, [2, 0]]
        out["boxes_xyxy"] = xyxy
    return out


def temporal_crop(clip: dict, rng: random.Random) -> dict:
    """Crop to a random frame range that contains every GT frame (no-op for a clip without GT frames)."""
    gt = clip["gt_indices"]
    n = clip["frames"].shape[0]
    if len(gt) == 0:
        return clip
    first, last = int(gt[0]), int(gt[-1])
    start = rng.randrange(0, first) if first > 0 else 0
    end = rng.randrange(last + 1, n) if last < n - 1 else n - 1
    keep = slice(start, end + 1)
    return dict(
        clip,
        frames=clip["frames"][keep],
        frame_ids=clip["frame_ids"][keep],
        actioness=clip["actioness"][keep],
        gt_indices=gt - start,
    )


def random_resize(clip: dict, rng: random.Random, scales: list[int], max_long_side: int) -> dict:
    """Resize the frames so the short side is a random entry of `scales` (aspect kept, long side capped)."""
    h, w = clip["frames"].shape[-2:]
    size = resized_size(h, w, short_side=rng.choice(scales), max_long_side=max_long_side)
    return dict(clip, frames=resize_frames(clip["frames"], size))


@dataclass(frozen=True)
class TrainAugment:
    """The training augmentations in the release's order: temporal crop, flip, then (optional) multi-scale."""

    flip_prob: float = 0.7
    temporal_crop_prob: float = 0.5
    scales: tuple[int, ...] = ()
    max_long_side: int = 700

    @classmethod
    def from_params(cls, loader: dict) -> TrainAugment:
        """From the `shard.loader` section of params.yaml."""
        return cls(
            flip_prob=float(loader["flip_prob"]),
            temporal_crop_prob=float(loader["temporal_crop_prob"]),
            scales=tuple(int(s) for s in loader["train_scales"]),
            max_long_side=int(loader["max_long_side"]),
        )

    def __call__(self, clip: dict, rng: random.Random) -> dict:
        if rng.random() < self.temporal_crop_prob:
            clip = temporal_crop(clip, rng)
        if rng.random() < self.flip_prob:
            clip = hflip(clip)
        if self.scales:
            clip = random_resize(clip, rng, list(self.scales), self.max_long_side)
        return clip


__all__ = ["TrainAugment", "hflip", "random_resize", "swap_left_right", "temporal_crop"]
