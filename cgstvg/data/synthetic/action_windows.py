"""Clip-level action recognition samples from synthetic scenes: the Kinetics analogue's data (`pretrain_motion`).

Each sample is a window of consecutive frames of a one-object clip and the action that object performs in it
(`ACTION_CLASSES`: the five actions, or `none` when it only drifts). The clips come from the generator's own
`pretrain_motion` streams, never from an STVG clip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cgstvg.data.synthetic.clip import make_clip
from cgstvg.data.synthetic.scene import ACTIONS, SceneConfig

PRETRAIN_DATASET = "pretrain_motion"
ACTION_CLASSES = ("none", *ACTIONS)


@dataclass
class ActionWindows:
    """frames: (N, T, H, W, 3) uint8 windows; labels: (N,) int64 indices into `ACTION_CLASSES`."""

    frames: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def action_windows(seed: int, split: str, clips: int, window: int, config: SceneConfig) -> ActionWindows:
    """Two windows of `window` frames per one-object clip: one inside an action, one where the object drifts.

    An action window lies wholly inside the target's GT window (or its decoy window); a `none` window overlaps
    no action. A clip without room for one of them gives only the other. Deterministic in the arguments.
    """
    if clips < 1 or not 2 <= window <= config.frames:
        raise ValueError(f"action_windows: need clips >= 1 and 2 <= window <= {config.frames}, got {clips}, {window}")
    single = dataclasses.replace(config, min_objects=1, max_objects=1)
    frames, labels = [], []
    for i in range(clips):
        clip = make_clip(seed, PRETRAIN_DATASET, split, i, single)
        rng = np.random.default_rng([seed, i, 11])
        acting = np.zeros(single.frames, dtype=np.int64)  # class per frame
        for action, start, end in clip.scene.target_object.actions:
            acting[start : end + 1] = ACTION_CLASSES.index(action)
        starts = np.arange(single.frames - window + 1)
        for wanted in ("action", "none"):
            runs = [
                s
                for s in starts
                if (acting[s : s + window] == acting[s]).all() and ((acting[s] > 0) == (wanted == "action"))
            ]
            if not runs:
                continue
            s = int(runs[int(rng.integers(len(runs)))])
            frames.append(clip.frames[s : s + window])
            labels.append(int(acting[s]))
    return ActionWindows(np.stack(frames), np.array(labels, np.int64))


@dataclass
class ObjectActionWindows:
    """Windows of multi-object clips with every object's per-frame action.

    frames: (N, T, H, W, 3) uint8; boxes: (N, O, T, 4) float32 normalised xyxy; labels: (N, O, T) int64 indices
    into `ACTION_CLASSES`, -1 where a clip has fewer than O objects.
    """

    frames: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


def object_action_windows(
    seed: int, split: str, clips: int, window: int, config: SceneConfig, per_clip: int = 2
) -> ObjectActionWindows:
    """`per_clip` windows of `window` frames at random starts of multi-object clips, labelled per object and frame.

    The scenes are the STVG generator's (2-4 objects, distractors acting at other times), drawn from its own
    `pretrain_motion` stream; a window may straddle the start or end of an action, so the label changes inside it.
    Deterministic in the arguments.
    """
    if clips < 1 or per_clip < 1 or not 2 <= window <= config.frames:
        raise ValueError(
            f"object_action_windows: need clips >= 1, per_clip >= 1 and 2 <= window <= {config.frames}, "
            f"got {clips}, {per_clip}, {window}"
        )
    most = config.max_objects
    size = np.array([config.width, config.height, config.width, config.height], np.float32)
    frames, boxes, labels = [], [], []
    for i in range(clips):
        clip = make_clip(seed, PRETRAIN_DATASET, split, i, config)
        rng = np.random.default_rng([seed, i, 13])
        acting = np.full((most, config.frames), -1, dtype=np.int64)
        box = np.zeros((most, config.frames, 4), np.float32)
        for o, obj in enumerate(clip.scene.objects):
            acting[o] = 0
            for action, start, end in obj.actions:
                acting[o, start : end + 1] = ACTION_CLASSES.index(action)
            box[o] = clip.boxes[o] / size
        for s in rng.choice(config.frames - window + 1, size=per_clip, replace=False):
            frames.append(clip.frames[s : s + window])
            boxes.append(box[:, s : s + window])
            labels.append(acting[:, s : s + window])
    return ObjectActionWindows(np.stack(frames), np.stack(boxes), np.stack(labels))
