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
