"""Stage `pretrain_action_grounding`: its data (captions with verbs, `active` labels), its output, and `train`
loading that output over the `pretrain_grounding` init."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml

from cgstvg.data.synthetic.action_frames import action_at, action_frames_clip
from cgstvg.data.synthetic.clip import make_clip
from cgstvg.data.synthetic.sentences import VERBS
from cgstvg.engine.init_weights import init_grounding
from cgstvg.engine.pretrain_action_grounding import TRAINED_PREFIXES, ActionPretrainSettings, build_pool
from cgstvg.model.backbone_weights import to_kinetics_swin_state_dict
from cgstvg.model.cgstvg import build_cgstvg
from cgstvg.model.convert import to_mdetr_state_dict
from cgstvg.model.tokenizer import build_tokenizer
from pipeline import pretrain_action_grounding as stage
from tests.test_pretrain_grounding import SCENE, SMALL_MODEL

SENTENCES = ["the red square moves left", "a circle that is blue grows", "the green triangle goes up"]


def _verb_action(phrase: str) -> str:
    """The action whose verb the caption uses (each verb form belongs to one action)."""
    found = {a for a, (simple, progressive) in VERBS.items() for v in (*simple, *progressive) if v in phrase}
    assert len(found) == 1, (phrase, found)
    return found.pop()


def test_captions_name_an_action_and_active_says_whether_the_object_does_it_then():
    seen_active = seen_hard_negative = 0
    for index in range(12):
        sample = action_frames_clip(0, "train", index, 4, SCENE)
        again = action_frames_clip(0, "train", index, 4, SCENE)
        assert sample.phrases == again.phrases and np.array_equal(sample.active, again.active)  # deterministic
        clip = make_clip(0, "pretrain_action", "train", index, SCENE)
        assert np.array_equal(sample.frames, clip.frames)
        scale = np.array([SCENE.width, SCENE.height] * 2, np.float32)
        for s, phrase in enumerate(sample.phrases):
            f = int(sample.picked[sample.frame[s]])
            # The box is the named object's: find the object by its box in that frame.
            x0, y0, x1, y1 = (clip.boxes[:, f].astype(np.float32) / scale).T
            centres = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], 1)
            k = int(np.abs(centres - sample.boxes[s]).sum(1).argmin())
            obj = clip.scene.objects[k]
            assert obj.colour in phrase
            verb = _verb_action(phrase)
            assert bool(sample.active[s]) == (action_at(obj, f) == verb)
            seen_active += bool(sample.active[s])
            others = {action_at(o, f) for j, o in enumerate(clip.scene.objects) if j != k}
            seen_hard_negative += (not sample.active[s]) and verb in others
    assert seen_active > 0 and seen_hard_negative > 0


def test_clips_are_not_stvg_or_grounding_clips():
    from cgstvg.data.synthetic.grounding_frames import grounding_frames

    ours = [action_frames_clip(0, "train", i, 8, SCENE).frames for i in range(3)]
    others = [make_clip(0, "hcstvg_v1", split, i, SCENE).frames for split in ("train", "test") for i in range(3)]
    others.append(grounding_frames(0, "train", 3, 8, SCENE).frames)
    for a in ours:
        for b in others:
            assert not any(np.array_equal(f, g) for f in a for g in b)


def test_settings_refuse_unknown_keys_and_bad_values():
    with pytest.raises(KeyError, match="unknown keys \\['stpes'\\]"):
        ActionPretrainSettings.from_params({"stpes": 3}, "params.yaml:pretrain_action_grounding")
    with pytest.raises(ValueError, match="eval_every"):
        ActionPretrainSettings.from_params({"eval_every": 0}, "params.yaml:pretrain_action_grounding")


def _inits(tmp_path) -> tuple[str, str]:
    """A `pretrain_grounding`-like MDETR file with its tokenizer, and a Kinetics-layout Swin, of SMALL_MODEL."""
    grounding = tmp_path / "pretrain_grounding"
    tok = build_tokenizer(SENTENCES, grounding / "tokenizer", 300)
    torch.manual_seed(1)
    model = build_cgstvg(SMALL_MODEL, tok)
    state, _ = to_mdetr_state_dict(model.state_dict())
    torch.save({"model": state}, grounding / "mdetr.pth")
    motion = {k[len("motion.") :]: v for k, v in model.state_dict().items() if k.startswith("motion.")}
    (tmp_path / "pretrain_motion").mkdir()
    torch.save({"state_dict": to_kinetics_swin_state_dict(motion)}, tmp_path / "pretrain_motion" / "swin.pth")
    return str(grounding / "mdetr.pth"), str(tmp_path / "pretrain_motion" / "swin.pth")


def _params(tmp_path, action: str | None, enc_layers: int = 2) -> dict:
    grounding, motion = _inits(tmp_path)
    init = {"grounding": grounding, "action_grounding": action, "motion": motion}
    return {
        "synthesize": {"frames": 8, "height": 48, "width": 64, "radius": [4.0, 6.0]},
        "model": {**copy.deepcopy(SMALL_MODEL), "enc_layers": enc_layers, "init": init},
        "pretrain_action_grounding": {
            "train_clips": 4,
            "val_clips": 2,
            "frames_per_clip": 3,
            "p_positive": 0.7,
            "steps": 3,
            "frames": 4,
            "warmup_steps": 1,
            "eval_every": 2,
            "threads": 1,
            "model": {"context_mode": "none"},
        },
    }


def _run(tmp_path, params: dict) -> dict:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    argv = ["--grounding", str(tmp_path / "pretrain_grounding"), "--motion", str(tmp_path / "pretrain_motion")]
    return stage.main([*argv, "--out", str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml")])


def test_stage_trains_the_temporal_side_too_and_train_loads_it_over_the_grounding_init(tmp_path):
    out = tmp_path / "out"
    params = _params(tmp_path, str(out / "weights.pth"))
    summary = _run(tmp_path, params)
    assert summary["trained"] and summary["steps"] == 3 and 0 <= summary["iou"] <= 1 and 0 <= summary["act_auc"] <= 1
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,loss,loss_box,loss_actioness") and len(curve) == 4
    first = (out / "weights.pth").read_bytes()
    _run(tmp_path, params)
    assert (out / "weights.pth").read_bytes() == first  # deterministic
    state = torch.load(out / "weights.pth", weights_only=True)["model"]
    assert all(k.startswith(TRAINED_PREFIXES) for k in state)
    for part in ("head.temporal_decoder.", "head.actioness_head.", "head.motion_proj.", "head.encoder.layers.1."):
        assert any(k.startswith(part) for k in state), part
    assert not any(k.startswith(("motion.", "head.sted_head.")) for k in state)  # frozen Swin, untrained head
    # `train`'s init: the grounding file, then these weights over it.
    tok = tmp_path / "pretrain_grounding" / "tokenizer"
    model = build_cgstvg(params["model"], tok)
    report = init_grounding(model, params["model"], tok)
    assert report is not None
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())


def test_weights_for_other_model_sizes_are_refused(tmp_path):
    out = tmp_path / "out"
    params = _params(tmp_path, str(out / "weights.pth"))
    _run(tmp_path, params)
    other = {**params["model"], "enc_layers": 1}
    tok = tmp_path / "pretrain_grounding" / "tokenizer"
    with pytest.raises(ValueError, match="do not fit the model .*encoder.layers.1"):
        init_grounding(build_cgstvg(other, tok), other, tok)


def test_pool_motion_is_the_frozen_swin_of_the_whole_clip(tmp_path):
    torch.manual_seed(0)
    model = build_cgstvg(SMALL_MODEL, build_tokenizer(SENTENCES, tmp_path / "tok", 300))
    clips = [action_frames_clip(0, "val", i, 3, SCENE) for i in range(2)]
    pool = build_pool(model.motion, clips, 6)
    with pytest.raises(ValueError, match="not total_frames=7"):
        build_pool(model.motion, clips, 7)
    assert len(pool) == sum(len(c) for c in clips) and len(pool.frames) == 6
    assert np.all(np.diff(pool.frame) >= 0)
    from cgstvg.data.collate import normalize_frames

    with torch.no_grad():
        video = normalize_frames(torch.from_numpy(clips[1].frames).permute(0, 3, 1, 2))
        whole = model.motion.eval()(video, video.shape[0])
    assert torch.allclose(torch.from_numpy(pool.motion[3:]), whole[torch.from_numpy(clips[1].picked)], atol=1e-6)


def test_stage_trains_nothing_when_init_points_elsewhere(tmp_path):
    summary = _run(tmp_path, _params(tmp_path, None))
    assert not summary["trained"] and "None" in summary["reason"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.json"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["trained"] is False
