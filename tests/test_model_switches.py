"""Each switch of CGSTVGConfig does what it says, on a small random head (d = 64), batched videos included."""

from __future__ import annotations

import pytest
import torch

from cgstvg.model.config import CGSTVGConfig
from cgstvg.model.criterion import CGSTVGCriterion
from cgstvg.model.head import CGSTVGHead
from cgstvg.model.instance_context import InstanceContextRefinement, box_mean_pool, box_roi_align
from cgstvg.model.targets import GroundingTargets

SMALL = CGSTVGConfig(
    appearance_dim=12,
    motion_dim=10,
    text_dim=8,
    d_model=64,
    heads=4,
    ffn_dim=128,
    enc_layers=1,
    dec_layers=3,
    context_heads=4,
    context_ffn_dim=64,
    max_video_len=16,
)
WEIGHTS = {"loss_bbox": 5, "loss_giou": 4, "loss_sted": 10, "loss_actioness": 2, "loss_conf": 1}
B, T, H, W, L = 2, 6, 3, 4, 5
# Video 0: all 6 frames and 5 tokens real; video 1: 4 frames and 3 tokens.
LENGTHS, TEXT_LENGTHS = (6, 4), (5, 3)


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    time_mask = torch.arange(T)[None] >= torch.tensor(LENGTHS)[:, None]
    text_mask = torch.arange(L)[None] >= torch.tensor(TEXT_LENGTHS)[:, None]
    return {
        "vis_feat": torch.randn(B, T, SMALL.appearance_dim, H, W, generator=g).relu(),
        "vis_mask": torch.zeros(B, T, H, W, dtype=torch.bool),
        "motion_feat": torch.randn(B, T, SMALL.motion_dim, H, W, generator=g),
        "text_hidden": torch.randn(B, L, SMALL.text_dim, generator=g),
        "text_mask": text_mask,
        "time_mask": time_mask,
    }


def _targets() -> GroundingTargets:
    gt = torch.zeros(B, T, dtype=torch.bool)
    gt[0, 1:4] = True
    gt[1, 2:4] = True
    boxes = torch.tensor([0.5, 0.5, 0.3, 0.4]).expand(B, T, 4).clone()
    return GroundingTargets(boxes, gt)


def _head(seed: int = 0, **changes) -> CGSTVGHead:
    torch.manual_seed(seed)
    return CGSTVGHead(SMALL.replace(**changes)).eval()


def _single(inputs: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Video b alone, cut to its real frames and tokens (no padding at all)."""
    t, n = LENGTHS[b], TEXT_LENGTHS[b]
    return {
        "vis_feat": inputs["vis_feat"][b : b + 1, :t],
        "vis_mask": inputs["vis_mask"][b : b + 1, :t],
        "motion_feat": inputs["motion_feat"][b : b + 1, :t],
        "text_hidden": inputs["text_hidden"][b : b + 1, :n],
        "text_mask": inputs["text_mask"][b : b + 1, :n],
        "time_mask": None,
    }


def _assert_video_matches(batched, single, b: int) -> None:
    t = LENGTHS[b]
    for ours, ref in zip(batched.stages, single.stages):
        torch.testing.assert_close(ours.pred_boxes[b, :t], ref.pred_boxes[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.pred_sted[b, :t], ref.pred_sted[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.pred_actioness[b, :t], ref.pred_actioness[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.boxes_conf[b, :t], ref.boxes_conf[0], atol=1e-5, rtol=0)


@torch.no_grad()
def test_outputs_have_documented_shapes_and_need_no_targets():
    out = _head()(**_inputs())
    assert out.pred_boxes.shape == (B, T, 4) and out.boxes_conf.shape == (B, T)
    assert out.pred_sted.shape == (B, T, 2) and out.pred_actioness.shape == (B, T)
    assert len(out.aux_outputs) == SMALL.dec_layers - 1 and len(out.selected_frames) == SMALL.dec_layers
    assert ((out.pred_boxes > 0) & (out.pred_boxes < 1)).all()
    assert ((out.boxes_conf >= 0) & (out.boxes_conf <= 2)).all()
    assert out.intermediates is None


@pytest.mark.parametrize(
    "stage_score, query_init, box_refine",
    [("last", "zeros", "absolute"), ("stage", "zeros", "absolute"), ("last", "text", "anchor")],
)
@torch.no_grad()
def test_batched_videos_match_single_runs_with_padding_fixes(stage_score, query_init, box_refine):
    # With the key padding mask in the spatial cross-attention and the anchor mean over real tokens, a padded
    # video's results do not depend on the padding (the sentence queries pool real tokens and frames only).
    # Thresholds low enough that context is used.
    changes = dict(
        spatial_key_padding_mask=True,
        frames_cls_over_padding=False,
        theta_t=-10.0,
        theta_s=0.5,
        temporal_score_layer=stage_score,
        query_init=query_init,
        box_refine=box_refine,
    )
    head = _head(**changes)
    inputs = _inputs()
    batched = head(**inputs)
    assert any(sel[1].any() for sel in batched.selected_frames[:-1])
    assert not any(sel[1, LENGTHS[1] :].any() for sel in batched.selected_frames)  # padded frames never selected
    for b in range(B):
        _assert_video_matches(batched, head(**_single(inputs, b)), b)


@torch.no_grad()
def test_release_padding_quirks_leave_an_unpadded_video_unchanged_but_affect_a_padded_one():
    head = _head(theta_t=-10.0, theta_s=0.5)
    inputs = _inputs()
    batched = head(**inputs)
    _assert_video_matches(batched, head(**_single(inputs, 0)), 0)  # video 0 has no padding of any kind
    alone = head(**_single(inputs, 1))
    # The release attends padded text tokens in the spatial cross-attention and averages them into the anchors.
    assert not torch.allclose(batched.pred_boxes[1, : LENGTHS[1]], alone.pred_boxes[0], atol=1e-5)


def _grads(head: CGSTVGHead, **kwargs) -> dict[str, torch.Tensor | None]:
    head.train()
    out = head(**_inputs(), **kwargs)
    criterion = CGSTVGCriterion(WEIGHTS)
    losses = criterion(out, _targets())
    criterion.weighted_total(losses, SMALL.dec_layers).backward()
    return {name: p.grad for name, p in head.named_parameters()}


def test_every_parameter_gets_a_gradient_when_context_is_everywhere():
    # A negative GIoU threshold selects every real frame in 'gt_giou' training (the release's quirk).
    grads = _grads(_head(theta_s_gt=-2.0), targets=_targets())
    # (Layer-0 content projections see zero queries, so some gradients are zero tensors, but none is missing.)
    missing = [n for n, g in grads.items() if g is None]
    assert not missing


def test_context_attention_gets_no_gradient_when_nothing_is_selected():
    grads = _grads(_head(theta_s_gt=2.0), targets=_targets())  # GIoU never exceeds 1
    unused = (".context_attn.", "icr.context_")  # the context block and the MLPs that make context tokens
    # both filters match something, so neither all() below holds vacuously
    assert any(any(u in n for u in unused) for n in grads) and not all(any(u in n for u in unused) for n in grads)
    assert all(grads[n] is None for n in grads if any(u in n for u in unused))
    assert all(grads[n] is not None for n in grads if not any(u in n for u in unused))


@torch.no_grad()
def test_nothing_selected_equals_the_no_context_baseline():
    full = _head(theta_t=100.0, theta_s=100.0)
    out = full(**_inputs())
    assert len(out.selected_frames) > 0
    assert not any(sel.any() for sel in out.selected_frames)
    baseline = _head(context_mode="none")
    assert len(baseline.spatial_decoder.layers) > 0
    assert baseline.icr is None and all(layer.context_attn is None for layer in baseline.spatial_decoder.layers)
    baseline.load_state_dict(full.state_dict(), strict=False)
    ref = baseline(**_inputs())
    assert ref.boxes_conf is None
    torch.testing.assert_close(out.pred_boxes, ref.pred_boxes)
    torch.testing.assert_close(out.pred_sted, ref.pred_sted)


def test_baseline_trains_without_confidence_loss():
    head = _head(context_mode="none").train()
    out = head(**_inputs())
    losses = CGSTVGCriterion(WEIGHTS)(out, _targets())
    assert "loss_conf" not in losses and "loss_bbox_0" in losses


@torch.no_grad()
def test_context_mode_all_selects_every_real_frame():
    out = _head(context_mode="all")(**_inputs())
    assert len(out.selected_frames) > 0
    for sel in out.selected_frames:
        assert torch.equal(sel, ~_inputs()["time_mask"])


@pytest.mark.parametrize("mode", ["all", "temporal", "spatial", "both"])
def test_every_context_mode_runs_batched_and_trains(mode):
    grads = _grads(_head(context_mode=mode, train_selection="confidence", theta_t=-10.0, theta_s=-1.0))
    # All filters pass with these thresholds, so the context blocks are used and trained.
    assert any(".context_attn." in n for n in grads)  # the filter below matches something
    assert all(g is not None for n, g in grads.items() if ".context_attn." in n)


def _icr(**changes) -> InstanceContextRefinement:
    return InstanceContextRefinement(SMALL.replace(**changes))


def _select(icr, conf_app, conf_mot, logit, targets=None, boxes=None):
    conf_app, conf_mot, logit = (torch.tensor([v]) for v in (conf_app, conf_mot, logit))
    time_mask = torch.zeros_like(logit, dtype=torch.bool)
    boxes = torch.full((1, logit.shape[1], 4), 0.5) if boxes is None else boxes
    return icr.select(conf_app, conf_mot, logit, time_mask, boxes, targets)[0][0].tolist()


def test_release_thresholds_compare_a_logit_and_a_sum_of_sigmoids():
    icr = _icr(theta_t=0.5, theta_s=0.8)
    # frame 0: logit 0.6 > 0.5 and 0.45 + 0.45 = 0.9 > 0.8; frame 1: conf sum 0.7; frame 2: logit 0.4
    assert _select(icr, [0.45, 0.35, 0.45], [0.45, 0.35, 0.45], [0.6, 0.6, 0.4]) == [True, False, False]


def test_paper_thresholds_compare_probabilities():
    icr = _icr(threshold_mode="paper", theta_t=0.7, theta_s=0.8)
    logit_07 = torch.logit(torch.tensor(0.7)).item()
    # frame 0: sigmoid 0.75 > 0.7, mean conf 0.85 > 0.8; frame 1: mean conf 0.75; frame 2: probability 0.65.
    logits = [logit_07 + 0.3, logit_07 + 0.3, logit_07 - 0.3]
    assert _select(icr, [0.9, 0.7, 0.9], [0.8, 0.8, 0.8], logits) == [True, False, False]


@pytest.mark.parametrize(
    ("mode", "fusion", "expected"),
    [
        ("temporal", "two_level", [True, True, False, False]),
        ("spatial", "two_level", [True, False, True, False]),
        ("both", "two_level", [True, False, False, False]),
        # sum: s_t + s_s > 0.7 + 0.8; product: s_t * s_s > 0.56 (paper thresholds on probabilities)
        ("both", "sum", [True, False, True, False]),
        ("both", "product", [True, False, True, False]),
    ],
)
def test_filters_and_score_fusions(mode, fusion, expected):
    icr = _icr(context_mode=mode, score_fusion=fusion, threshold_mode="paper", theta_t=0.7, theta_s=0.8)
    s_t = torch.tensor([0.9, 0.9, 0.68, 0.2])
    s_s = torch.tensor([0.9, 0.5, 0.95, 0.5])
    assert _select(icr, s_s.tolist(), s_s.tolist(), torch.logit(s_t).tolist()) == expected


def test_gt_giou_training_selection_and_its_negative_threshold_quirk():
    gt = torch.tensor([[False, True, True, False]])
    boxes = torch.tensor([0.5, 0.5, 0.2, 0.2]).expand(1, 4, 4).clone()
    targets = GroundingTargets(boxes.clone(), gt)
    pred = boxes.clone()
    pred[0, 2] = torch.tensor([0.1, 0.1, 0.05, 0.05])  # far from the GT box: GIoU < 0
    icr = _icr(theta_s_gt=0.5)
    assert _select(icr, [0.0] * 4, [0.0] * 4, [-9.0] * 4, targets, pred) == [False, True, False, False]
    # Non-GT frames score 0, so a negative threshold selects them (the release does the same).
    icr = _icr(theta_s_gt=-0.1)
    assert _select(icr, [0.0] * 4, [0.0] * 4, [-9.0] * 4, targets, pred) == [True, True, False, True]
    # The paper's rule in training ignores the GT.
    icr = _icr(train_selection="confidence", theta_t=0.0, theta_s=0.5)
    assert _select(icr, [0.3] * 4, [0.3] * 4, [1.0] * 4, targets, pred) == [True] * 4


def test_temporal_score_layer_stage_uses_each_stages_actioness():
    head = _head(temporal_score_layer="stage")
    with torch.no_grad():
        out = head(**_inputs(), return_intermediates=True)
    for k, stage in enumerate(out.stages):
        torch.testing.assert_close(out.intermediates[f"stage{k}.temporal_score"], stage.pred_actioness)
    release = _head()
    with torch.no_grad():
        rec = release(**_inputs(), return_intermediates=True).intermediates
    for k in range(SMALL.dec_layers):
        torch.testing.assert_close(rec[f"stage{k}.temporal_score"], rec["dec.time_info"])


def test_context_in_temporal_blocks_changes_and_trains_the_temporal_decoder():
    with pytest.raises(ValueError, match="temporal_score_layer"):
        SMALL.replace(context_in_temporal=True)
    changes = dict(context_in_temporal=True, temporal_score_layer="stage")
    head = _head(theta_s_gt=-2.0, **changes)
    assert head.temporal_decoder.layers[0].context_attn is None
    assert len(head.temporal_decoder.layers) > 1
    assert all(layer.context_attn is not None for layer in head.temporal_decoder.layers[1:])
    grads = _grads(head, targets=_targets())
    assert any(n.startswith("temporal_decoder.layers.1.context_attn") for n in grads)
    assert all(g is not None for n, g in grads.items() if n.startswith("temporal_decoder.layers.1.context_attn"))
    plain = _head(theta_s_gt=-2.0, temporal_score_layer="stage").train()
    plain.load_state_dict(head.state_dict(), strict=False)
    head.eval(), plain.eval()
    with torch.no_grad():
        a = head(**_inputs(), targets=_targets())
        b = plain(**_inputs(), targets=_targets())
    torch.testing.assert_close(a.aux_outputs[0].pred_sted, b.aux_outputs[0].pred_sted)  # stage 0: no context yet
    assert not torch.allclose(a.pred_sted, b.pred_sted)


def test_dropout_on_logits_switch():
    torch.manual_seed(0)
    x = torch.randn(100, 64)
    release = _head(head_dropout=0.5).sted_head.train()
    fixed = _head(head_dropout=0.5, dropout_on_logits=False).sted_head.train()
    fixed.load_state_dict(release.state_dict())
    # Dropout after the last layer zeroes some logits exactly; without it no logit is exactly zero.
    assert (release(x) == 0).any()
    assert not (fixed(x) == 0).any()


def _mean_pool_reference(features, boxes):
    """The release's per-frame loop, kept here only to check the vectorised pooling."""
    n, h, w, c = features.shape
    out = []
    for f, (cx, cy, bw, bh) in zip(features, boxes.tolist()):
        x1, y1, x2, y2 = (max(v, 0.0) for v in (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        x1, y1, x2, y2 = (torch.tensor(v, dtype=torch.float32) for v in (x1 * w, y1 * h, x2 * w, y2 * h))
        x1, y1, x2, y2 = int(x1.round()), int(y1.round()), int(x2.ceil()), int(y2.round())
        x2 = min(max(x2, 1), w)
        x1 = min(max(x1, 0), x2 - 1)
        y2 = min(max(y2, 1), h)
        y1 = min(max(y1, 0), y2 - 1)
        out.append(f[y1:y2, x1:x2].reshape(-1, c).mean(0))
    return torch.stack(out)


def test_vectorised_mean_pool_equals_the_release_loop():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(200, 5, 7, 8, generator=g)
    boxes = torch.rand(200, 4, generator=g)
    boxes[:20, 2:] = 0.01  # tiny boxes: clamped to one cell
    boxes[20:40, :2] = 0.99  # boxes off the right/bottom edge
    boxes[40:60, 2:] = 2.0  # boxes larger than the frame
    torch.testing.assert_close(box_mean_pool(features, boxes), _mean_pool_reference(features, boxes))


def test_roi_align_pooling_switch():
    features = torch.randn(4, 5, 7, 8)
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]]).expand(4, 4)
    # A box over the whole frame with one bin per side averages a grid of samples, close to the frame mean.
    pooled = box_roi_align(features, whole, output_size=1, sampling_ratio=4)
    assert pooled.shape == (4, 8)
    head = _head(icg_pooling="roi_align", theta_s_gt=-2.0)
    grads = _grads(head, targets=_targets())
    assert grads["encoder.layers.0.linear1.weight"] is not None
    with torch.no_grad():
        a = head.eval()(**_inputs(), return_intermediates=True).intermediates
        mean_head = _head(theta_s_gt=-2.0)
        mean_head.load_state_dict(head.state_dict())
        b = mean_head(**_inputs(), return_intermediates=True).intermediates
    assert not torch.allclose(a["stage0.roi_2d"], b["stage0.roi_2d"])


def test_single_frame_ground_truth_and_single_frame_video():
    gt = torch.zeros(B, T, dtype=torch.bool)
    gt[0, 2] = True
    gt[1, 0] = True
    targets = GroundingTargets(torch.full((B, T, 4), 0.4), gt)
    head = _head().train()
    out = head(**_inputs(), targets=targets)
    losses = CGSTVGCriterion(WEIGHTS)(out, targets)
    assert losses
    assert all(torch.isfinite(v) for v in losses.values())
    inputs = _single(_inputs(), 0)
    inputs = {k: (v[:, :1] if k in ("vis_feat", "vis_mask", "motion_feat") else v) for k, v in inputs.items()}
    with torch.no_grad():
        one = head.eval()(**inputs)
    assert one.pred_boxes.shape == (1, 1, 4) and torch.isfinite(one.pred_sted).all()


@torch.no_grad()
def test_padded_text_tokens_do_not_change_the_result_with_the_padding_fixes():
    head = _head(spatial_key_padding_mask=True, frames_cls_over_padding=False)
    inputs = _single(_inputs(), 0)
    padded = dict(inputs)
    padded["text_hidden"] = torch.cat([inputs["text_hidden"], torch.randn(1, 3, SMALL.text_dim)], dim=1)
    padded["text_mask"] = torch.cat([inputs["text_mask"], torch.ones(1, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(head(**padded).pred_boxes, head(**inputs).pred_boxes, atol=1e-5, rtol=0)


def test_bad_inputs_are_clear_errors():
    head = _head()
    inputs = _inputs()
    with pytest.raises(ValueError, match="text_mask"):
        head(**{**inputs, "text_mask": inputs["text_mask"].long()})
    with pytest.raises(ValueError, match="motion_feat"):
        head(**{**inputs, "motion_feat": inputs["motion_feat"][:, :, :, :2]})
    with pytest.raises(ValueError, match="every frame padded"):
        head(**{**inputs, "time_mask": torch.ones(B, T, dtype=torch.bool)})
    with pytest.raises(ValueError, match="context_mode"):
        CGSTVGConfig(context_mode="sometimes")
    with pytest.raises(KeyError, match="params.yaml:model"):
        CGSTVGConfig.from_params({"d_model": 64, "dmodel": 3})


@torch.no_grad()
def test_text_query_init_starts_every_frame_from_the_sentence():
    head = _head(query_init="text")
    inputs = _inputs()
    out = head(**inputs, return_intermediates=True)
    q0 = out.intermediates["stage0.query_in"]
    assert q0.abs().sum() > 0  # the release starts from zeros
    torch.testing.assert_close(q0, q0[:, :1].expand_as(q0))  # one query per video, the same for every frame
    assert not torch.allclose(q0[0, 0], q0[1, 0])
    # A different sentence gives different first-stage boxes; under 'zeros' too, but only through the memory.
    other = dict(inputs, text_hidden=torch.randn_like(inputs["text_hidden"]))
    q0_other = head(**other, return_intermediates=True).intermediates["stage0.query_in"]
    assert not torch.allclose(q0, q0_other)
    assert torch.equal(
        _head()(**inputs, return_intermediates=True).intermediates["stage0.query_in"], torch.zeros_like(q0)
    )


@torch.no_grad()
def test_anchor_box_refinement_adds_the_stage_output_to_the_anchor_logit():
    head = _head(box_refine="anchor")
    last = head.box_head.layers[-1]
    last.weight.zero_()
    last.bias.zero_()  # no correction: every stage must return its anchor
    out = head(**_inputs(), return_intermediates=True)
    torch.testing.assert_close(out.stages[0].pred_boxes, out.intermediates["dec.init_anchors"], atol=1e-5, rtol=0)
    for prev, cur in zip(out.stages, out.stages[1:]):
        torch.testing.assert_close(cur.pred_boxes, prev.pred_boxes, atol=1e-5, rtol=0)
    last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))  # +1 on the cx logit per stage
    out = head(**_inputs(), return_intermediates=True)
    expected = torch.logit(out.intermediates["dec.init_anchors"][..., 0]) + 1
    torch.testing.assert_close(torch.logit(out.stages[0].pred_boxes[..., 0]), expected, atol=1e-4, rtol=0)
    # The release ('absolute') ignores the anchor: the box is the MLP's output alone.
    release = _head()
    release.box_head.layers[-1].weight.data.zero_()
    release.box_head.layers[-1].bias.data.zero_()
    assert torch.equal(release(**_inputs()).pred_boxes, torch.full((B, T, 4), 0.5))


def test_unknown_query_init_and_box_refine_are_errors():
    with pytest.raises(ValueError, match="query_init"):
        SMALL.replace(query_init="sentence")
    with pytest.raises(ValueError, match="box_refine"):
        SMALL.replace(box_refine="residual")
