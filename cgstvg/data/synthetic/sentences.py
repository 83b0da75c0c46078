"""Sentences about a synthetic scene: a declarative caption and an interrogative question.

Captions always name the target by colour and shape (together unique in a scene) plus its action, through a
handful of templates and synonyms, e.g. "the red square moves left", "a circle that is blue is moving up",
"the yellow block gets bigger". Questions (VidSTG's interrogative sentences) leave out what the answer gives
away, as VidSTG's do ("who is watching the ball?"): they name only as much of the target as is needed to tell
it from the other objects that perform the same action at any time ("what grows?", "which red shape moves
left?", "which triangle goes up?").

Sentences are lower case without final punctuation; the raw-format writers add the dataset's own style.
"""

from __future__ import annotations

import numpy as np

SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square", "block"), "triangle": ("triangle",)}

VERBS = {  # (simple present, present progressive)
    "move_left": (
        ("moves left", "moves to the left", "goes left", "slides to the left", "travels left"),
        ("is moving left", "is moving to the left", "is going left", "is sliding to the left"),
    ),
    "move_right": (
        ("moves right", "moves to the right", "goes right", "slides to the right", "travels right"),
        ("is moving right", "is moving to the right", "is going right", "is sliding to the right"),
    ),
    "move_up": (
        ("moves up", "goes up", "rises", "moves upward", "slides up"),
        ("is moving up", "is going up", "is rising", "is moving upward"),
    ),
    "move_down": (
        ("moves down", "goes down", "falls", "moves downward", "drops"),
        ("is moving down", "is going down", "is falling", "is dropping"),
    ),
    "grow": (
        ("grows", "gets bigger", "becomes larger", "expands", "grows in size"),
        ("is growing", "is getting bigger", "is becoming larger", "is expanding"),
    ),
}

CAPTION_TEMPLATES = (
    "{det} {colour} {shape} {verb}",
    "{det} {colour} {shape} {verb_ing}",
    "{det} {shape} that is {colour} {verb}",
    "{det} {shape} which is {colour} {verb_ing}",
    "{det} {colour} coloured {shape} {verb}",
    "{det} {shape} in {colour} {verb}",
)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def caption(rng: np.random.Generator, colour: str, shape: str, action: str) -> str:
    """A declarative sentence naming the target by colour and shape and saying what it does."""
    simple, progressive = VERBS[action]
    return _pick(rng, CAPTION_TEMPLATES).format(
        det=_pick(rng, ("the", "a")),
        colour=colour,
        shape=_pick(rng, SHAPE_WORDS[shape]),
        verb=_pick(rng, simple),
        verb_ing=_pick(rng, progressive),
    )


def question(
    rng: np.random.Generator, colour: str, shape: str, action: str, others: list[tuple[str, str, set[str]]]
) -> str:
    """An interrogative sentence whose answer is the target.

    `others` holds (colour, shape, actions performed at any time) of every other object. The question names the
    colour and/or the shape only when another object that also performs `action` would otherwise fit it.
    """
    doers = [(c, s) for c, s, acts in others if action in acts]
    verb = _pick(rng, VERBS[action][0])
    forms = [f"which {colour} {_pick(rng, SHAPE_WORDS[shape])} {verb}"]
    if not doers:
        forms += [f"what {verb}", f"which shape {verb}", f"which object {verb}"]
    if all(c != colour for c, _ in doers):
        forms += [f"which {colour} shape {verb}", f"what {colour} object {verb}"]
    if all(s != shape for _, s in doers):
        forms += [f"which {_pick(rng, SHAPE_WORDS[shape])} {verb}"]
    return _pick(rng, forms)
