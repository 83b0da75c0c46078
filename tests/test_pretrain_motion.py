"""Stage `pretrain_motion`: its action windows, its Kinetics-layout output, and `extract` loading it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from cgstvg.data.synthetic.action_windows import ACTION_CLASSES, action_windows, object_action_windows
from cgstvg.data.synthetic.clip import make_clip
from cgstvg.data.synthetic.scene import SceneConfig
from cgstvg.model.backbone_weights import load_kinetics_init, to_kinetics_swin_state_dict
from cgstvg.model.motion import build_motion
from pipeline import pretrain_motion as stage

SCENE = SceneConfig(frames=16, height=48, width=64, radius=(4.0, 6.0))
MOTION = {"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "patch_size": [1, 8, 8], "window_size": [2, 2, 2]}


def test_windows_are_deterministic_and_labelled_by_what_the_object_does():
    a = action_windows(0, "train", 12, 4, SCENE)
    b = action_windows(0, "train", 12, 4, SCENE)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)
    assert a.frames.shape[1:] == (4, 48, 64, 3) and set(a.labels.tolist()) >= {0}
    assert (a.labels > 0).any()  # some windows show an action
    # Rebuild clip 0's target track and check the label against the motion in its window.
    import dataclasses

    clip = make_clip(0, "pretrain_motion", "train", 0, dataclasses.replace(SCENE, min_objects=1, max_objects=1))
    assert len(clip.scene.objects) == 1
    obj = clip.scene.target_object
    for action, start, end in obj.actions:
        if action in ("move_left", "move_right") and end - start >= 3:
            dx = obj.cx[end] - obj.cx[start]
            assert (dx < 0) == (action == "move_left")
    assert ACTION_CLASSES[0] == "none" and len(ACTION_CLASSES) == 6


def test_kinetics_layout_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    trained = build_motion(MOTION)
    for p in trained.parameters():
        p.data.normal_()
    state = to_kinetics_swin_state_dict(trained.state_dict())
    assert state["backbone.patch_embed.proj.weight"].shape[2] == 2  # Kinetics' temporal kernel of 2
    assert any(k.startswith("backbone.layers.0.blocks.0.mlp.fc1.") for k in state)
    assert any(".downsample." in k for k in state)
    path = tmp_path / "k400.pth"
    torch.save({"state_dict": state}, path)
    fresh = build_motion(MOTION)
    assert load_kinetics_init(fresh, path) == len(state)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    other = build_motion({**MOTION, "embed_dim": 16, "num_heads": [2, 4]})
    with pytest.raises(ValueError, match="does not fit model.backbones.motion"):
        load_kinetics_init(other, path)


def _params(init):
    return {
        "synthesize": {"frames": 16, "height": 48, "width": 64, "radius": [4.0, 6.0]},
        "model": {"init": {"motion": init}, "backbones": {"motion": MOTION}},
        "pretrain_motion": {
            "train_clips": 6,
            "val_clips": 3,
            "window": 4,
            "steps": 3,
            "batch": 4,
            "warmup_steps": 1,
            "eval_every": 2,
            "threads": 1,
            "objects": {"train_clips": 4, "val_clips": 2, "window": 4, "steps": 2, "batch": 2, "eval_every": 2},
        },
    }


def test_stage_trains_and_writes_a_checkpoint_extract_can_load(tmp_path):
    out = tmp_path / "pretrain_motion"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(str(out / "swin_k400.pth"))))
    argv = ["--out", str(out), "--params", str(tmp_path / "params.yaml")]
    summary = stage.main(argv)
    assert summary["trained"] and 0 <= summary["val_accuracy"] <= 1
    assert summary["objects"]["steps"] == 2 and 0 <= summary["objects"]["val_accuracy"] <= 1
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0] == "phase,step,loss,lr,seconds,val_accuracy"
    assert [row.split(",")[0] for row in curve[1:]] == ["clip"] * 3 + ["objects"] * 2
    first = (out / "swin_k400.pth").read_bytes()
    stage.main(argv)
    assert (out / "swin_k400.pth").read_bytes() == first  # deterministic
    assert load_kinetics_init(build_motion(MOTION), out / "swin_k400.pth") > 0


@pytest.mark.parametrize("objects", [{"steps": 0}, None], ids=["steps-0", "no-objects"])
def test_objects_steps_0_skips_phase_2(tmp_path, objects):
    """params.yaml documents `objects: {steps: 0}` as skipping the phase (and no `objects` means no phase 2)."""
    out = tmp_path / "pretrain_motion"
    params = _params(str(out / "swin_k400.pth"))
    params["pretrain_motion"]["objects"] = objects
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    summary = stage.main(["--out", str(out), "--params", str(tmp_path / "params.yaml")])
    assert summary["trained"] and "objects" not in summary
    assert [row.split(",")[0] for row in (out / "curve.csv").read_text().splitlines()[1:]] == ["clip"] * 3


def test_stage_trains_nothing_when_init_points_elsewhere(tmp_path):
    out = tmp_path / "pretrain_motion"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(None)))
    summary = stage.main(["--out", str(out), "--params", str(tmp_path / "params.yaml")])
    assert not summary["trained"] and sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_relative_position_bias_trains_at_its_own_rate():
    """The bias tables step at `bias_lr` (without weight decay), everything else at `lr`: at one rate the Swin
    stayed at the majority class (README "Initial weights")."""
    from cgstvg.engine.pretrain_motion import MotionPretrainSettings, pretrain_motion

    pool = action_windows(0, "train", 4, 4, SCENE)
    torch.manual_seed(0)
    backbone = build_motion(MOTION)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    settings = MotionPretrainSettings(
        steps=1, batch=2, lr=1e-6, bias_lr=1e-1, warmup_steps=1, eval_every=1, weight_decay=0.0
    )
    pretrain_motion(backbone, pool, pool, settings)
    moved = {k: float((v - before[k]).abs().max()) for k, v in backbone.state_dict().items() if v.is_floating_point()}
    tables = [k for k in moved if k.endswith("relative_position_bias_table")]
    assert len(tables) == 2 and min(moved[k] for k in tables) > 1e-2  # one Adam step moves by ~bias_lr
    assert max(v for k, v in moved.items() if k not in tables) < 1e-5  # ... and the rest by ~lr
    with pytest.raises(ValueError, match="bias_lr"):
        MotionPretrainSettings.from_params({"bias_lr": 0}, "params.yaml:pretrain_motion")


def test_object_windows_label_every_object_and_frame_by_what_it_does():
    a = object_action_windows(0, "train", 6, 6, SCENE)
    b = object_action_windows(0, "train", 6, 6, SCENE)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)
    assert a.frames.shape == (12, 6, 48, 64, 3) and a.labels.shape == (12, SCENE.max_objects, 6)
    assert a.boxes.shape == (12, SCENE.max_objects, 6, 4)
    present = a.labels >= 0
    assert (a.boxes[present] >= 0).all() and (a.boxes[present] <= 1).all()
    assert (a.boxes[..., 2] >= a.boxes[..., 0]).all()
    # Window labels are the clip's per-frame actions of each object, cut at the window's start.
    clip = make_clip(0, "pretrain_motion", "train", 0, SCENE)
    per_frame = np.zeros((len(clip.scene.objects), SCENE.frames), np.int64)
    for o, obj in enumerate(clip.scene.objects):
        for action, start, end in obj.actions:
            per_frame[o, start : end + 1] = ACTION_CLASSES.index(action)
    n = len(clip.scene.objects)
    assert (a.labels[0, n:] == -1).all()
    starts = [s for s in range(SCENE.frames - 5) if np.array_equal(per_frame[:, s : s + 6], a.labels[0, :n])]
    assert starts and np.allclose(a.boxes[0, 0, 0] * [64, 48, 64, 48], clip.boxes[0, starts[0]])
    assert (a.labels > 0).any() and (a.labels == 0).any()


def test_object_objective_learns_each_objects_action_on_a_small_pool():
    """The per-object, per-frame classifier fits a tiny pool: its loss falls and every logit has its object."""
    from cgstvg.engine.pretrain_motion import MotionPretrainSettings, ObjectActionClassifier, pretrain_motion

    pool = object_action_windows(0, "train", 4, 4, SCENE)
    torch.manual_seed(0)
    backbone = build_motion(MOTION)
    logits = ObjectActionClassifier(backbone)(torch.zeros(2, 4, 3, 48, 64), torch.from_numpy(pool.boxes[:2]))
    assert logits.shape == (2, SCENE.max_objects, 4, len(ACTION_CLASSES))
    settings = MotionPretrainSettings(steps=40, batch=4, lr=3e-3, warmup_steps=1, eval_every=40)
    rows = pretrain_motion(backbone, pool, pool, settings)
    assert np.mean([r["loss"] for r in rows[-5:]]) < 0.7 * np.mean([r["loss"] for r in rows[:5]])
    assert rows[-1]["val_accuracy"] > (pool.labels[pool.labels >= 0] == 0).mean()
