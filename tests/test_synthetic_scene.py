"""The synthetic scenes: what a clip shows is what its sentence and GT say, and it is not trivial."""

from __future__ import annotations

import numpy as np
import pytest

from cgstvg.data.synthetic import ACTIONS, SHAPES, SceneConfig, clip_rngs, make_clip, make_scene
from cgstvg.data.synthetic.sentences import SHAPE_WORDS, VERBS, question

CONFIG = SceneConfig()  # the default: 32 frames at 96x128


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(clip_rngs(0, "hcstvg_v1", "test", i)[0], CONFIG) for i in range(400)]


def test_gt_window_covers_30_to_60_percent_and_decoys_stay_outside(scenes):
    lengths = []
    for scene in scenes:
        start, end = scene.gt
        lengths.append(end - start + 1)
        assert 0 <= start <= end < CONFIG.frames
        target = scene.target_object
        assert target.actions[0] == (scene.action, start, end)
        for action, a, b in target.actions[1:]:  # the decoy: another action, never overlapping the GT window
            assert action == scene.decoy != scene.action and (b < start or a > end)
        for i, obj in enumerate(scene.objects):
            if i == scene.target:
                continue
            # The sentence's (colour, shape) picks out the target alone.
            assert (obj.colour, obj.shape) != (target.colour, target.shape)
            for action, a, b in obj.actions:  # a distractor doing the target's action does it at another time
                assert action != scene.action or b < start or a > end
    assert lengths
    assert all(0.3 * 32 - 0.5 <= n <= 0.6 * 32 + 0.5 for n in lengths)
    assert 0.4 < np.mean(lengths) / 32 < 0.5


def test_distractors_make_a_hard_subset(scenes):
    hard = np.mean([s.hard for s in scenes])
    decoy = np.mean([s.decoy is not None for s in scenes])
    same_action = np.mean(
        [any(a == s.action for i, o in enumerate(s.objects) if i != s.target for a, _, _ in o.actions) for s in scenes]
    )
    n_objects = {len(s.objects) for s in scenes}
    assert 0.3 < hard < 0.6 and 0.25 < decoy < 0.45 and same_action > 0.2
    assert n_objects == {2, 3, 4}
    assert {s.target for s in scenes} == {0, 1, 2, 3}  # the target is not always the first object


def test_the_described_action_is_what_the_target_does_in_the_gt_window():
    """Measured on the rendered boxes: the target moves the named way (or grows) far more inside the GT window
    than it drifts outside any of its action windows."""
    for i in range(40):
        clip = make_clip(0, "hcstvg_v1", "train", i, CONFIG)
        scene, boxes = clip.scene, clip.target_boxes.astype(float)
        start, end = scene.gt
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        dx, dy = centre[end] - centre[start]
        expected = {
            "move_left": -dx > 12,
            "move_right": dx > 12,
            "move_up": -dy > 10,
            "move_down": dy > 10,
            "grow": area[end] / area[start] > 2.0,
        }
        assert expected[scene.action], (i, scene.action, dx, dy, area[end] / area[start])
        assert np.all(boxes[:, :2] >= 0)
        assert np.all(boxes[:, 2] <= CONFIG.width) and np.all(boxes[:, 3] <= CONFIG.height)


def test_caption_names_colour_shape_and_action():
    for i in range(60):
        clip = make_clip(1, "hcstvg_v2", "train", i, SceneConfig(frames=8, height=32, width=32))
        target = clip.scene.target_object
        words = f" {clip.caption} "
        assert f" {target.colour} " in words
        assert any(f" {w} " in words for w in SHAPE_WORDS[target.shape])
        assert any(f" {v}" in words for v in VERBS[clip.scene.action][0] + VERBS[clip.scene.action][1])


def test_question_names_only_what_tells_the_target_apart():
    rng = np.random.default_rng(0)
    # Another red object also moves left: the question must name the shape.
    for _ in range(30):
        others = [("red", "circle", {"move_left"}), ("blue", "square", {"grow"})]
        q = question(rng, "red", "square", "move_left", others)
        assert any(w in q.split() for w in SHAPE_WORDS["square"]), q
    # Another square also moves left: the question must name the colour.
    for _ in range(30):
        q = question(rng, "red", "square", "move_left", [("blue", "square", {"move_left"})])
        assert "red" in q.split(), q
    # Nobody else moves left: some questions say only what happens.
    asked = {question(rng, "red", "square", "move_left", [("red", "circle", {"grow"})]) for _ in range(60)}
    assert any("red" not in q and not any(w in q for w in SHAPE_WORDS["square"]) for q in asked)


def test_vocabulary_is_not_trivial():
    vocabulary = set()
    for i in range(300):
        clip = make_clip(2, "vidstg", "train", i, SceneConfig(frames=8, height=32, width=32))
        vocabulary |= set(clip.caption.split()) | set(clip.question.split())
    assert len(vocabulary) >= 40
    assert set(ACTIONS) == set(VERBS) and set(SHAPES) == set(SHAPE_WORDS)
