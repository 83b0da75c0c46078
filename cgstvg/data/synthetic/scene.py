"""Scene geometry of a synthetic STVG clip: objects, their actions and their trajectories.

A scene holds 2-4 coloured shapes. One is the target: it performs the described action during the ground-truth
(GT) window, which covers 30-60% of the clip. Distractors share the target's colour or its shape, and each may
perform its own action (sometimes the target's action, at another time); the target itself may perform a decoy
action outside the GT window. Outside its action windows every object drifts slowly with jitter, so only the
action tells the GT window apart.

Units are pixels at the configured resolution; sizes and speeds are stated for 96x128 px and 32 frames and scale
with the resolution (`SceneConfig.scale`) and the clip length (so an action covers the same share of the frame).
Frame ids are 0-based; windows are inclusive `(start, end)` pairs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import cast

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 175, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
}
SHAPES = ("circle", "square", "triangle")
ACTIONS = ("move_left", "move_right", "move_up", "move_down", "grow")

_REF_H, _REF_W, _REF_T = 96, 128, 32  # the resolution and length the pixel constants below are stated for


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the generator (the `synthesize` params, minus sizes per split)."""

    frames: int = 32
    height: int = 96
    width: int = 128
    min_objects: int = 2
    max_objects: int = 4
    gt_fraction: tuple[float, float] = (0.3, 0.6)  # share of the clip the GT window covers
    p_same_colour: float = 0.8  # first distractor: target's colour, other shape
    p_same_shape: float = 0.8  # second distractor: target's shape, other colour
    p_distractor_action: float = 0.75
    p_same_action: float = 0.5  # of acting distractors: the target's action, outside the GT window
    p_decoy: float = 0.4  # the target performs another action outside the GT window
    colour_jitter: int = 12
    radius: tuple[float, float] = (7.0, 12.0)  # object half-size at 96x128
    grow_factor: float = 1.7

    def __post_init__(self):
        if self.frames < 8:
            raise ValueError(f"synthesize.frames must be >= 8, got {self.frames}")
        if self.height < 32 or self.width < 32 or self.height % 2 or self.width % 2:
            raise ValueError(f"synthesize: height/width must be even, >= 32, got {self.height}x{self.width}")
        if not 1 <= self.min_objects <= self.max_objects <= 4:
            got = f"{self.min_objects}, {self.max_objects}"
            raise ValueError(f"synthesize: objects must satisfy 1 <= min_objects <= max_objects <= 4, got {got}")
        lo, hi = self.gt_fraction
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"synthesize.gt_fraction must satisfy 0 < lo <= hi < 1, got {self.gt_fraction}")
        if not 0 < self.radius[0] <= self.radius[1] or self.grow_factor < 1:
            got = f"{self.radius}, {self.grow_factor}"
            raise ValueError(f"synthesize: need 0 < radius[0] <= radius[1] and grow_factor >= 1, got {got}")
        if 2 * self.radius[1] * self.grow_factor * self.scale + 2 >= min(self.height, self.width):
            grown = f"radius {self.radius[1]} x {self.grow_factor}"
            raise ValueError(f"synthesize: a grown object ({grown}) does not fit the frame")
        for name in ("p_same_colour", "p_same_shape", "p_distractor_action", "p_same_action", "p_decoy"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"synthesize.{name} must be a probability in [0, 1], got {getattr(self, name)}")

    @property
    def scale(self) -> float:
        """Pixel scale relative to 96x128."""
        return min(self.height / _REF_H, self.width / _REF_W)

    @property
    def time_scale(self) -> float:
        """Per-frame speeds grow as clips get shorter, so an action moves an object by the same share of the frame."""
        return _REF_T / self.frames


@dataclass
class SceneObject:
    """One shape. `cx, cy, radius` are (T,) float arrays; `actions` lists (action, start, end) windows."""

    colour: str
    rgb: tuple[int, int, int]
    shape: str
    actions: list[tuple[str, int, int]]
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray


@dataclass
class Scene:
    """Geometry of a clip. `objects[target]` is the target; `z_order` lists object indices back to front."""

    config: SceneConfig
    objects: list[SceneObject]
    target: int
    gt: tuple[int, int]
    action: str
    decoy: str | None
    z_order: list[int]

    @property
    def target_object(self) -> SceneObject:
        return self.objects[self.target]

    @property
    def hard(self) -> bool:
        """Both a same-colour and a same-shape distractor are present (the study's 'hard' subset)."""
        t = self.target_object
        others = [o for i, o in enumerate(self.objects) if i != self.target]
        return any(o.colour == t.colour for o in others) and any(o.shape == t.shape for o in others)


def clip_rngs(seed: int, dataset: str, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent generators for one clip: (scene, format-specific extras).

    Seeded from (seed, dataset, split, index) only, so a clip never depends on how many others are generated.
    crc32 gives a stable integer for a name (Python's hash() is salted per process).
    """
    entropy = [int(seed), zlib.crc32(dataset.encode()), zlib.crc32(split.encode()), int(index)]
    scene_seq, extra_seq = np.random.SeedSequence(entropy).spawn(2)
    return np.random.default_rng(scene_seq), np.random.default_rng(extra_seq)


def _window(rng: np.random.Generator, cfg: SceneConfig) -> tuple[int, int]:
    """A window covering `gt_fraction` of the clip, anywhere in it."""
    t = cfg.frames
    length = int(round(rng.uniform(*cfg.gt_fraction) * t))
    length = min(max(length, 2), t)
    start = int(rng.integers(0, t - length + 1))
    return start, start + length - 1


def _window_outside(rng: np.random.Generator, cfg: SceneConfig, avoid: tuple[int, int]) -> tuple[int, int] | None:
    """A window that does not overlap `avoid`, or None when neither side has room for one."""
    t = cfg.frames
    min_len = max(3, int(round(cfg.gt_fraction[0] * t * 2 / 3)))
    max_len = int(round(cfg.gt_fraction[1] * t))
    gaps = [(0, avoid[0] - 1), (avoid[1] + 1, t - 1)]
    gaps = [(a, b) for a, b in gaps if b - a + 1 >= min_len]
    if not gaps:
        return None
    a, b = gaps[int(rng.integers(len(gaps)))]
    length = int(rng.integers(min_len, min(b - a + 1, max_len) + 1))
    start = int(rng.integers(a, b - length + 2))
    return start, start + length - 1


def _other(rng: np.random.Generator, options, exclude) -> str:
    choices = [o for o in options if o != exclude]
    return choices[int(rng.integers(len(choices)))]


def _identity(rng: np.random.Generator, slot: int, colour: str, shape: str, cfg: SceneConfig) -> tuple[str, str]:
    """(colour, shape) of distractor `slot` (1-based); it always differs from the target in at least one."""
    if slot == 1 and rng.random() < cfg.p_same_colour:
        return colour, _other(rng, SHAPES, shape)
    if slot == 2 and rng.random() < cfg.p_same_shape:
        return _other(rng, list(COLOURS), colour), shape
    while True:
        c = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        s = SHAPES[int(rng.integers(len(SHAPES)))]
        if (c, s) != (colour, shape):
            return c, s


def _trajectory(
    rng: np.random.Generator,
    cfg: SceneConfig,
    actions: list[tuple[str, int, int]],
    placed: list[tuple[float, float, float]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre and radius: slow drift plus the actions, fitted inside the frame.

    The path is built as offsets from the first frame; the start point is then drawn among those that keep the
    whole path inside the frame (if none does, the offsets are shrunk until one does), so no box is ever clipped.
    """
    t, s, ts = cfg.frames, cfg.scale, cfg.time_scale
    r0 = rng.uniform(*cfg.radius) * s
    drift = rng.uniform(0.1, 0.4) * s * ts
    angle = rng.uniform(0, 2 * np.pi)
    vx = np.full(t - 1, drift * np.cos(angle)) + rng.normal(0, 0.15 * s, t - 1)
    vy = np.full(t - 1, drift * np.sin(angle)) + rng.normal(0, 0.15 * s, t - 1)
    radius = np.full(t, r0)
    for action, start, end in actions:
        steps = slice(start, end)  # velocity i moves frame i to i+1: the object acts from frame start to end
        if action == "move_left":
            vx[steps] = -rng.uniform(2.0, 3.0) * s * ts
        elif action == "move_right":
            vx[steps] = rng.uniform(2.0, 3.0) * s * ts
        elif action == "move_up":
            vy[steps] = -rng.uniform(1.5, 2.2) * s * ts
        elif action == "move_down":
            vy[steps] = rng.uniform(1.5, 2.2) * s * ts
        elif action == "grow":
            vx[steps] *= 0.3  # keep the centre nearly still so growing is not confused with moving
            vy[steps] *= 0.3
            gain = np.ones(t)
            gain[start : end + 1] = np.linspace(1.0, cfg.grow_factor, end - start + 1)
            gain[end + 1 :] = cfg.grow_factor
            radius = radius * gain
        else:
            raise ValueError(f"unknown action {action!r}")
    dx = np.concatenate([[0.0], np.cumsum(vx)])
    dy = np.concatenate([[0.0], np.cumsum(vy)])

    def start_range(offset: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
        # Terminates: SceneConfig checks that the largest (grown) object fits the frame when it stands still.
        shrink = 1.0
        while True:
            o = offset * shrink
            lo, hi = float(np.max(radius - o)) + 1.0, float(np.min(size - radius - o)) - 1.0
            if lo <= hi:
                return o, lo, hi
            shrink *= 0.9

    dx, xlo, xhi = start_range(dx, cfg.width)
    dy, ylo, yhi = start_range(dy, cfg.height)
    # A few tries to start away from the objects already placed, so targets are seldom hidden from the start.
    for _ in range(8):
        x0, y0 = rng.uniform(xlo, xhi), rng.uniform(ylo, yhi)
        if all(np.hypot(x0 - px, y0 - py) > r0 + pr for px, py, pr in placed):
            break
    placed.append((x0, y0, r0))
    return x0 + dx, y0 + dy, radius


def make_scene(rng: np.random.Generator, cfg: SceneConfig) -> Scene:
    """Draw one scene (target, distractors, actions, trajectories) from `rng`."""
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    action = ACTIONS[int(rng.integers(len(ACTIONS)))]
    gt = _window(rng, cfg)

    target_actions = [(action, *gt)]
    decoy = None
    if rng.random() < cfg.p_decoy:
        window = _window_outside(rng, cfg, gt)
        if window is not None:
            decoy = _other(rng, ACTIONS, action)
            target_actions.append((decoy, *window))
    identities = [(colour, shape, target_actions)]
    for slot in range(1, n):
        c, s = _identity(rng, slot, colour, shape, cfg)
        acts: list[tuple[str, int, int]] = []
        if rng.random() < cfg.p_distractor_action:
            window = _window_outside(rng, cfg, gt) if rng.random() < cfg.p_same_action else None
            if window is not None:
                acts.append((action, *window))
            else:
                acts.append((_other(rng, ACTIONS, action), *_window(rng, cfg)))
        identities.append((c, s, acts))

    # The target's slot is drawn so that it is not always the first object (tids, drawing order).
    target = int(rng.integers(n))
    identities.insert(target, identities.pop(0))
    objects: list[SceneObject] = []
    placed: list[tuple[float, float, float]] = []
    for c, s, acts in identities:
        base = np.array(COLOURS[c])
        jittered = np.clip(base + rng.integers(-cfg.colour_jitter, cfg.colour_jitter + 1, 3), 0, 255)
        rgb = cast(tuple[int, int, int], tuple(int(v) for v in jittered))
        cx, cy, radius = _trajectory(rng, cfg, acts, placed)
        objects.append(SceneObject(colour=c, rgb=rgb, shape=s, actions=acts, cx=cx, cy=cy, radius=radius))
    z_order = [int(i) for i in rng.permutation(n)]
    return Scene(config=cfg, objects=objects, target=target, gt=gt, action=action, decoy=decoy, z_order=z_order)
