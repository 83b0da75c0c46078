"""One synthetic STVG clip: scene, pixels, boxes and sentences, all from one seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cgstvg.data.synthetic.render import render
from cgstvg.data.synthetic.scene import Scene, SceneConfig, clip_rngs, make_scene
from cgstvg.data.synthetic.sentences import caption, question


@dataclass
class Clip:
    """A generated clip.

    frames: (T, H, W, 3) uint8 RGB. boxes: (N, T, 4) int32 xyxy pixels, one track per `scene.objects` entry
    (the target's is `boxes[scene.target]`). gt: inclusive 0-based frame window of the described action.
    extra_rng: an independent generator for format-specific choices (VidSTG ids and segments), so that those
    never change the scene.
    """

    scene: Scene
    frames: np.ndarray
    boxes: np.ndarray
    caption: str
    question: str
    extra_rng: np.random.Generator

    @property
    def gt(self) -> tuple[int, int]:
        return self.scene.gt

    @property
    def target_boxes(self) -> np.ndarray:
        """(T, 4) int32 xyxy boxes of the target in every frame."""
        return self.boxes[self.scene.target]


def make_clip(seed: int, dataset: str, split: str, index: int, config: SceneConfig) -> Clip:
    """Generate clip `index` of (`dataset`, `split`); the result depends on these arguments only."""
    rng, extra_rng = clip_rngs(seed, dataset, split, index)
    scene = make_scene(rng, config)
    frames, boxes = render(scene, rng)
    target = scene.target_object
    others = [
        (o.colour, o.shape, {a for a, _, _ in o.actions}) for i, o in enumerate(scene.objects) if i != scene.target
    ]
    return Clip(
        scene=scene,
        frames=frames,
        boxes=boxes,
        caption=caption(rng, target.colour, target.shape, scene.action),
        question=question(rng, target.colour, target.shape, scene.action, others),
        extra_rng=extra_rng,
    )
