"""Image-level grounding samples from synthetic scenes: the MDETR analogue's data (`pretrain_grounding`).

Each sample is one frame of a synthetic clip and a phrase that names one of its objects by colour and shape
("the red square", "a circle that is blue"), with that object's box. Every object whose colour and shape are
unique in its clip gives a sample in every frame taken, so one frame (one backbone pass) carries 1-4 targets.
Clips come from their own generator streams (dataset tag `pretrain`, splits `train` / `val`), so no frame of
them is a frame of the STVG test clips (`hcstvg_v1/test`, ...), which are drawn from other streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cgstvg.data.synthetic.clip import make_clip
from cgstvg.data.synthetic.scene import SceneConfig
from cgstvg.data.synthetic.sentences import SHAPE_WORDS

PRETRAIN_DATASET = "pretrain"

PHRASE_TEMPLATES = (
    "{det} {colour} {shape}",
    "{det} {shape} that is {colour}",
    "{det} {colour} coloured {shape}",
    "{det} {shape} in {colour}",
)


@dataclass
class GroundingFrames:
    """frames: (F, H, W, 3) uint8 RGB. For each of the S samples: `frame` (S,) index into frames, `phrases`,
    `boxes` (S, 4) float32 (cx, cy, w, h) normalised to the frame."""

    frames: np.ndarray
    frame: np.ndarray
    phrases: list[str]
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.phrases)


def phrase(rng: np.random.Generator, colour: str, shape: str) -> str:
    """A noun phrase naming an object by colour and shape (the caption templates without their verb)."""
    template = PHRASE_TEMPLATES[int(rng.integers(len(PHRASE_TEMPLATES)))]
    words = SHAPE_WORDS[shape]
    return template.format(
        det=("the", "a")[int(rng.integers(2))], colour=colour, shape=words[int(rng.integers(len(words)))]
    )


def grounding_frames(seed: int, split: str, clips: int, frames_per_clip: int, config: SceneConfig) -> GroundingFrames:
    """Samples from `clips` clips of the `pretrain/<split>` stream, `frames_per_clip` evenly spaced frames each.

    Deterministic in its arguments. Objects that share colour and shape with another object of their clip are
    skipped, since no phrase could single them out.
    """
    if clips < 1 or not 1 <= frames_per_clip <= config.frames:
        raise ValueError(
            f"grounding_frames: need clips >= 1 and 1 <= frames_per_clip <= {config.frames}, "
            f"got {clips}, {frames_per_clip}"
        )
    h, w = config.height, config.width
    scale = np.array([w, h, w, h], np.float32)
    picked = np.linspace(0, config.frames - 1, frames_per_clip).round().astype(int)
    frames, frame_index, phrases, boxes = [], [], [], []
    for i in range(clips):
        clip = make_clip(seed, PRETRAIN_DATASET, split, i, config)
        rng = np.random.default_rng([seed, i, 7])  # phrase wording only; the scene's own streams stay untouched
        names = [(o.colour, o.shape) for o in clip.scene.objects]
        unique = [k for k, name in enumerate(names) if names.count(name) == 1]
        for f in picked:
            frames.append(clip.frames[f])
            for k in unique:
                x0, y0, x1, y1 = clip.boxes[k, f].astype(np.float32)
                boxes.append(np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], np.float32) / scale)
                phrases.append(phrase(rng, *names[k]))
                frame_index.append(len(frames) - 1)
    return GroundingFrames(np.stack(frames), np.array(frame_index, np.int64), phrases, np.stack(boxes))
