"""Frame-level grounding with actions: the data of `pretrain_action_grounding`, the second pretraining stage.

Each sample is one frame of a synthetic clip, a caption naming one object by colour and shape *and* an action
("the red square moves left"), that object's box, and whether the object performs that action in that frame
(`active`). The box is always the named object's (colour and shape single it out); `active` is what the motion
around the object, read against the verb, must tell. Negative captions prefer the verbs that make the STVG task
hard: an action another object performs in the same frame (the acting distractor) and one the named object performs
at another time (the decoy).

MDETR, the release's initialisation, grounds phrases in still images and never sees motion; this stage teaches the
encoder to join an object's motion tokens to its appearance and to the sentence's verb, and the temporal decoder to
say, from one frame's tokens, whether the described object is doing the described thing. Clips come from their own
generator stream (dataset tag `pretrain_action`), never from an STVG clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cgstvg.data.synthetic.clip import make_clip
from cgstvg.data.synthetic.scene import ACTIONS, SceneConfig, SceneObject
from cgstvg.data.synthetic.sentences import caption

ACTION_DATASET = "pretrain_action"


@dataclass
class ActionFramesClip:
    """One clip's samples. frames: (T, H, W, 3) uint8, every frame (the Video Swin reads each frame's neighbours);
    picked: (P,) the frame ids samples are taken on; for each of the S samples: `frame` (S,) index into `picked`,
    `phrases`, `boxes` (S, 4) float32 normalised (cx, cy, w, h), `active` (S,) bool."""

    frames: np.ndarray
    picked: np.ndarray
    frame: np.ndarray
    phrases: list[str]
    boxes: np.ndarray
    active: np.ndarray

    def __len__(self) -> int:
        return len(self.phrases)


def action_at(obj: SceneObject, frame: int) -> str | None:
    """The action `obj` performs in `frame` (its windows are inclusive), or None while it only drifts."""
    return next((a for a, start, end in obj.actions if start <= frame <= end), None)


def _verb(rng: np.random.Generator, current: str | None, hard: list[str], p_positive: float) -> tuple[str, bool]:
    """(action named in the caption, whether the object performs it now)."""
    if current is not None and rng.random() < p_positive:
        return current, True
    hard = [a for a in hard if a != current]
    if hard and rng.random() < 0.7:
        return hard[int(rng.integers(len(hard)))], False
    others = [a for a in ACTIONS if a != current]
    return others[int(rng.integers(len(others)))], False


def action_frames_clip(
    seed: int, split: str, index: int, frames_per_clip: int, config: SceneConfig, p_positive: float = 0.7
) -> ActionFramesClip:
    """Samples of clip `index` of the `pretrain_action/<split>` stream on `frames_per_clip` evenly spaced frames.

    Deterministic in its arguments. Objects sharing colour and shape with another object of the clip are skipped.
    `p_positive`: the chance that an acting object's caption names what it does.
    """
    if not 1 <= frames_per_clip <= config.frames or not 0.0 <= p_positive <= 1.0:
        raise ValueError(
            f"action_frames_clip: need 1 <= frames_per_clip <= {config.frames} and 0 <= p_positive <= 1, "
            f"got {frames_per_clip}, {p_positive}"
        )
    clip = make_clip(seed, ACTION_DATASET, split, index, config)
    rng = np.random.default_rng([seed, index, 11])  # captions only; the scene's own streams stay untouched
    objects = clip.scene.objects
    names = [(o.colour, o.shape) for o in objects]
    unique = [k for k, name in enumerate(names) if names.count(name) == 1]
    picked = np.linspace(0, config.frames - 1, frames_per_clip).round().astype(int)
    scale = np.array([config.width, config.height, config.width, config.height], np.float32)
    frame, phrases, boxes, active = [], [], [], []
    for p, f in enumerate(picked):
        now = [action_at(o, int(f)) for o in objects]
        for k in unique:
            hard = [a for j, a in enumerate(now) if j != k and a is not None]  # other objects' actions now
            hard += [a for a, _, _ in objects[k].actions]  # the object's own actions (decoys when not now)
            verb, is_active = _verb(rng, now[k], hard, p_positive)
            x0, y0, x1, y1 = clip.boxes[k, f].astype(np.float32)
            boxes.append(np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], np.float32) / scale)
            phrases.append(caption(rng, *names[k], verb))
            active.append(is_active)
            frame.append(p)
    return ActionFramesClip(
        frames=clip.frames,
        picked=picked,
        frame=np.array(frame, np.int64),
        phrases=phrases,
        boxes=np.stack(boxes) if boxes else np.zeros((0, 4), np.float32),
        active=np.array(active, bool),
    )
