"""Our head, given the authors' fixture weights (through our converter) and inputs, reproduces every saved tensor.

shared/fixtures/official/README.md documents the fixtures: four regimes (a: inference, b: inference with lowered
thresholds so that context is used, c: training with GT-driven context and the criterion, d: padded feature
cells). Every output, auxiliary output, per-stage intermediate, loss term and post-processing result is compared
to 1e-5 (pixel boxes in units of the image size).
"""

from __future__ import annotations

import json

import pytest
import torch

from cgstvg.model.criterion import CGSTVGCriterion
from cgstvg.model.position_encoding import sine_time_table
from cgstvg.model.postprocess import post_process
from model_official import HEAD, fixture, fixture_targets, official_head_state_dict, run_regime

REGIMES = ("a", "b", "c", "d")
STAGES = range(3)
TOL = dict(rtol=0.0, atol=1e-5)


def _seq_first(x: torch.Tensor) -> torch.Tensor:
    """Ours (1, T, C) -> the release's (T, 1, C)."""
    return x.transpose(0, 1)


def _ours(regime: str, name: str) -> torch.Tensor:
    """Our tensor for a fixture name, in the fixture's layout (the release is one video, frames as the batch)."""
    _, out = run_regime(regime)
    rec = out.intermediates
    if name.startswith("out."):
        parts = name.split(".")
        stage = out.aux_outputs[int(parts[2])] if parts[1] == "aux_outputs" else out
        field = parts[-1]
        value = getattr(stage, field)
        return {"pred_boxes": value[0], "boxes_conf": value[0], "pred_sted": value,
                "pred_actioness": value[..., None]}[field]
    key = name.removeprefix("int.")
    if key == "input_proj2_out":
        return rec["motion_proj_out"]
    if key in ("input_proj_out", "enc.key_padding_mask"):
        return rec[key]
    if key in ("text_resized", "enc.memory") or key.startswith("time.layer"):
        return _seq_first(rec[key])
    if key in ("enc.frames_cls", "enc.videos_cls", "dec.time_info"):
        return rec[key][0]
    if key == "time.hidden_normed":
        return rec[key]
    if key == "dec.init_anchors":
        return _seq_first(rec[key])
    if key == "dec.query_time_embed":
        return rec[key][:, None]
    stage, field = key.split(".", 1)
    if field in ("roi_2d", "roi_3d", "select_score"):
        return rec[f"{stage}.{field}"][0]
    if field == "selected_frames":
        return rec[f"{stage}.selected"][0].nonzero().flatten()
    if field == "select_threshold":
        cfg = run_regime(regime)[0].cfg
        return torch.tensor(cfg.theta_s_gt if regime == "c" else cfg.theta_s, dtype=torch.float32)
    if field in ("context_in", "context_out"):
        tokens, pad = rec[f"{stage}.{field}"], rec[f"{stage}.{field}_pad"]
        return tokens[0][~pad[0]]  # [appearance of the kept frames ; motion of the kept frames], as the release
    return _seq_first(rec[f"{stage}.{field}"])


def _expected(regime: str) -> dict[str, torch.Tensor]:
    """Every fixture tensor that regime's run must reproduce.

    The shared intermediates hold for every regime; regime d's file overrides those that depend on the mask.
    """
    expected = {**fixture("shared_intermediates"), **fixture(regime)}
    return {k: v for k, v in expected.items() if not k.startswith(("loss.", "post.")) and k != "out.fake_boxes"}


CASES = [(regime, name) for regime in REGIMES for name in sorted(_expected(regime))]


@pytest.mark.parametrize(("regime", "name"), CASES, ids=[f"{r}-{n}" for r, n in CASES])
def test_every_saved_tensor_matches(regime, name):
    expected = _expected(regime)[name]
    ours = _ours(regime, name).detach()
    if expected.dtype in (torch.bool, torch.int64):
        assert torch.equal(ours.to(expected.dtype), expected), name
    else:
        torch.testing.assert_close(ours, expected, **TOL, msg=name)


def test_each_regime_is_compared_in_full():
    # 'out.fake_boxes' (always zeros) is the only saved tensor of a regime file we do not produce.
    for regime in REGIMES:
        saved = set(fixture(regime))
        compared = set(_expected(regime)) | {k for k in saved if k.startswith(("loss.", "post."))}
        assert saved - compared == {"out.fake_boxes"}, regime
    assert len(CASES) > 250


@pytest.mark.parametrize("regime", ["a", "b", "c", "d"])
def test_selected_frames_per_stage_match_summary(regime):
    summary = json.loads((HEAD / "summary.json").read_text())[
        {"a": "a_infer_default", "b": "b_infer_lowered", "c": "c_train_gt", "d": "d_padmask"}[regime]
    ]
    _, out = run_regime(regime)
    got = {str(k): sel[0].nonzero().flatten().tolist() for k, sel in enumerate(out.selected_frames)}
    assert got == summary["selected_frames_per_stage"]


def test_regime_c_losses_and_weighted_total():
    summary = json.loads((HEAD / "summary.json").read_text())["c_train_gt"]
    _, out = run_regime("c")
    criterion = CGSTVGCriterion(
        {"loss_bbox": 5, "loss_giou": 4, "loss_sted": 10, "loss_actioness": 2, "loss_conf": 1}, eos_coef=0.3, sigma=2.0
    )
    losses = criterion(out, fixture_targets())
    expected = {k.removeprefix("loss."): v for k, v in fixture("c").items() if k.startswith("loss.")}
    assert set(losses) == set(expected) and len(losses) == 15
    for name, value in expected.items():
        torch.testing.assert_close(losses[name].detach(), value, **TOL, msg=name)
    assert criterion.weight_dict(3) == summary["loss_weights"]
    total = criterion.weighted_total(losses, 3)
    assert abs(total.item() - summary["weighted_total"]) < 1e-5
    total.backward()  # the release's graph: every used parameter receives a gradient


@pytest.mark.parametrize("regime", ["a", "b", "d"])
def test_post_processing_matches(regime):
    _, out = run_regime(regime)
    demo = json.loads((HEAD / "config.json").read_text())["postprocess_demo"]
    size = torch.tensor([demo["ori_size_hw"]])
    tube = post_process(out.pred_sted, out.pred_boxes, torch.tensor([demo["frame_ids"]]), size, out.time_mask)
    expected = fixture(regime)
    assert tube.sted_frame_ids[0].tolist() == expected["post.pred_sted_frame_ids"].tolist()
    assert tube.sted_frame_ids_inclusive[0, 1] == tube.sted_frame_ids[0, 1] - 1
    scale = torch.tensor([demo["ori_size_hw"][1], demo["ori_size_hw"][0]] * 2, dtype=torch.float32)
    torch.testing.assert_close(tube.boxes_xyxy[0] / scale, expected["post.pred_boxes_xyxy_pixels"] / scale, **TOL)


@pytest.mark.parametrize(("mask_key", "pos_key"), [("vis_mask", "vis_pos"), ("vis_mask_padded", "vis_pos_padded")])
def test_vis_position_encoding_is_recomputed_bit_for_bit(mask_key, pos_key):
    from cgstvg.model.position_encoding import sine_position_2d

    inputs = fixture("inputs")
    ours = sine_position_2d(inputs[mask_key], 256).permute(0, 3, 1, 2)
    assert torch.equal(ours, inputs[pos_key])


def test_time_table_equals_the_release_buffer():
    te = official_head_state_dict()["ground_decoder.time_embed.te"]
    assert torch.equal(sine_time_table(201, 256), te[:, 0])
