"""Criterion over batches of padded videos, and post-processing rules."""

from __future__ import annotations

import math

import pytest
import torch

from cgstvg.model.criterion import CGSTVGCriterion, build_criterion
from cgstvg.model.head import CGSTVGOutput, StageOutput
from cgstvg.model.postprocess import post_process
from cgstvg.model.targets import GroundingTargets

WEIGHTS = {"loss_bbox": 5, "loss_giou": 4, "loss_sted": 10, "loss_actioness": 2, "loss_conf": 1}


def _random_output(b: int, t: int, time_mask: torch.Tensor, seed: int = 0) -> CGSTVGOutput:
    g = torch.Generator().manual_seed(seed)

    def stage() -> StageOutput:
        centre = torch.rand(b, t, 2, generator=g) * 0.5 + 0.25
        boxes = torch.cat([centre, torch.rand(b, t, 2, generator=g) * 0.3 + 0.1], -1)
        return StageOutput(
            boxes, torch.rand(b, t, generator=g) * 2, torch.randn(b, t, 2, generator=g), torch.randn(b, t, generator=g)
        )

    aux = [stage(), stage()]
    last = stage()
    return CGSTVGOutput(last.pred_boxes, last.boxes_conf, last.pred_sted, last.pred_actioness, time_mask, aux)


def _video(out: CGSTVGOutput, targets: GroundingTargets, b: int, t: int):
    def cut(s: StageOutput) -> StageOutput:
        return StageOutput(
            s.pred_boxes[b : b + 1, :t],
            s.boxes_conf[b : b + 1, :t],
            s.pred_sted[b : b + 1, :t],
            s.pred_actioness[b : b + 1, :t],
        )

    last = cut(out)
    single = CGSTVGOutput(
        last.pred_boxes,
        last.boxes_conf,
        last.pred_sted,
        last.pred_actioness,
        torch.zeros(1, t, dtype=torch.bool),
        [cut(s) for s in out.aux_outputs],
    )
    return single, GroundingTargets(targets.boxes[b : b + 1, :t], targets.gt_mask[b : b + 1, :t])


def test_batched_losses_are_the_release_per_video_losses_averaged_as_over_gpus():
    lengths, t = (8, 5), 8
    time_mask = torch.arange(t)[None] >= torch.tensor(lengths)[:, None]
    out = _random_output(2, t, time_mask)
    gt = torch.zeros(2, t, dtype=torch.bool)
    gt[0, 2:7] = True
    gt[1, 1:3] = True
    targets = GroundingTargets(torch.rand(2, t, 4) * 0.2 + torch.tensor([0.4, 0.4, 0.1, 0.1]), gt)
    criterion = CGSTVGCriterion(WEIGHTS)
    batched = criterion(out, targets)
    singles = [criterion(*_video(out, targets, b, n)) for b, n in enumerate(lengths)]
    n_boxes = [int(gt[b].sum()) for b in range(2)]
    for name, value in batched.items():
        if name.startswith(("loss_bbox", "loss_giou")):  # global sum over boxes / global count
            expected = sum(s[name] * n for s, n in zip(singles, n_boxes)) / sum(n_boxes)
        else:  # per-video means, averaged over videos (one video per GPU, gradients averaged)
            expected = sum(s[name] for s in singles) / 2
        torch.testing.assert_close(value, expected, msg=name)


def test_padded_frames_do_not_change_the_losses():
    t = 6
    out = _random_output(1, t, torch.zeros(1, t, dtype=torch.bool))
    gt = torch.tensor([[False, True, True, False, False, False]])
    targets = GroundingTargets(torch.full((1, t, 4), 0.3), gt)
    criterion = CGSTVGCriterion(WEIGHTS)
    ref = criterion(out, targets)
    # Append 3 padded frames with arbitrary predictions.
    pad = _random_output(1, 3, torch.ones(1, 3, dtype=torch.bool), seed=5)

    def cat(a: StageOutput, b: StageOutput) -> StageOutput:
        return StageOutput(
            *(
                torch.cat([x, y], dim=1)
                for x, y in zip(
                    (a.pred_boxes, a.boxes_conf, a.pred_sted, a.pred_actioness),
                    (b.pred_boxes, b.boxes_conf, b.pred_sted, b.pred_actioness),
                )
            )
        )

    last = cat(out, pad)
    padded = CGSTVGOutput(
        last.pred_boxes,
        last.boxes_conf,
        last.pred_sted,
        last.pred_actioness,
        torch.tensor([[False] * t + [True] * 3]),
        [cat(a, b) for a, b in zip(out.aux_outputs, pad.aux_outputs)],
    )
    padded_gt = torch.cat([gt, torch.zeros(1, 3, dtype=torch.bool)], 1)
    padded_targets = GroundingTargets(torch.full((1, t + 3, 4), 0.3), padded_gt)
    got = criterion(padded, padded_targets)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], msg=name)


def test_sted_loss_is_smallest_for_the_gaussian_target_itself():
    t, sigma = 10, 2.0
    gt = torch.zeros(1, t, dtype=torch.bool)
    gt[0, 3:7] = True
    frames = torch.arange(t, dtype=torch.float32)
    logits = torch.stack([-((frames - 3) ** 2) / (2 * sigma**2), -((frames - 6) ** 2) / (2 * sigma**2)], -1)[None]
    targets = GroundingTargets(torch.full((1, t, 4), 0.3), gt)

    def sted(logit: torch.Tensor) -> float:
        stage = StageOutput(torch.full((1, t, 4), 0.3), None, logit, torch.zeros(1, t))
        out = CGSTVGOutput(stage.pred_boxes, None, logit, stage.pred_actioness, torch.zeros(1, t, dtype=torch.bool))
        return CGSTVGCriterion(WEIGHTS, sigma=sigma, aux_loss=False)(out, targets)["loss_sted"].item()

    assert abs(sted(logits)) < 1e-4
    assert sted(logits.roll(2, dims=1)) > sted(logits) + 0.1


def test_actioness_weight_outside_the_segment():
    t = 4
    gt = torch.tensor([[False, True, True, False]])
    logits = torch.zeros(1, t)
    stage = StageOutput(torch.full((1, t, 4), 0.3), None, torch.zeros(1, t, 2), logits)
    out = CGSTVGOutput(stage.pred_boxes, None, stage.pred_sted, logits, torch.zeros(1, t, dtype=torch.bool))
    loss = CGSTVGCriterion(WEIGHTS, eos_coef=0.3, aux_loss=False)(out, GroundingTargets(stage.pred_boxes, gt))
    assert loss["loss_actioness"].item() == pytest.approx(math.log(2) * (2 * 1.0 + 2 * 0.3) / 4, rel=1e-6)


def test_build_criterion_from_params_and_errors():
    crit = build_criterion({"weights": WEIGHTS, "eos_coef": 0.3, "sigma": 2.0, "aux_loss": True})
    assert crit.weight_dict(2)["loss_giou_0"] == 4
    with pytest.raises(KeyError, match="params.yaml:model.loss"):
        build_criterion({"weights": WEIGHTS, "sigmaa": 1})
    with pytest.raises(ValueError, match="no GT frame"):
        GroundingTargets(torch.zeros(2, 3, 4), torch.tensor([[True, False, False], [False, False, False]]))


def test_post_processing_strict_start_before_end_and_padding():
    t = 5
    sted = torch.full((2, t, 2), -10.0)
    # Video 0: start and end both peak at frame 2; the pair (2, 2) is not allowed, so one of them moves.
    sted[0, 2, :] = 10.0
    sted[0, 3, 1] = 5.0
    # Video 1: the best end lies in a padded frame (4); it must not be chosen.
    sted[1, 0, 0] = 10.0
    sted[1, 4, 1] = 20.0
    sted[1, 2, 1] = 5.0
    time_mask = torch.tensor([[False] * 5, [False, False, False, False, True]])
    frame_ids = torch.tensor([[0, 3, 6, 9, 12], [10, 11, 12, 13, 14]])
    boxes = torch.tensor([0.5, 0.5, 0.5, 0.5]).expand(2, t, 4)
    tube = post_process(sted, boxes, frame_ids, torch.tensor([[100, 200], [50, 80]]), time_mask)
    assert tube.start_index.tolist() == [2, 0] and tube.end_index.tolist() == [3, 2]
    assert tube.sted_frame_ids.tolist() == [[6, 10], [10, 13]]
    assert tube.sted_frame_ids_inclusive.tolist() == [[6, 9], [10, 12]]
    assert tube.boxes_xyxy[0, 0].tolist() == [50.0, 25.0, 150.0, 75.0]
    assert tube.boxes_xyxy[1, 0].tolist() == [20.0, 12.5, 60.0, 37.5]


def test_post_processing_single_frame_video_and_clamping():
    tube = post_process(
        torch.zeros(1, 1, 2), torch.tensor([[[0.05, 0.5, 0.2, 0.2]]]), torch.tensor([[7]]), torch.tensor([[10, 10]])
    )
    assert tube.sted_frame_ids.tolist() == [[7, 8]] and tube.sted_frame_ids_inclusive.tolist() == [[7, 7]]
    assert tube.boxes_xyxy[0, 0, 0] == 0.0  # x1 = -0.5 px clamped


@pytest.mark.parametrize("detach", [False, True])
def test_conf_loss_target_gradient_switch(detach):
    t = 4
    boxes = torch.tensor([0.5, 0.5, 0.3, 0.3]).repeat(1, t, 1).requires_grad_()
    stage = StageOutput(boxes, torch.full((1, t), 0.5, requires_grad=True), torch.zeros(1, t, 2), torch.zeros(1, t))
    out = CGSTVGOutput(
        boxes, stage.boxes_conf, stage.pred_sted, stage.pred_actioness, torch.zeros(1, t, dtype=torch.bool)
    )
    targets = GroundingTargets(torch.tensor([0.55, 0.5, 0.3, 0.3]).repeat(1, t, 1), torch.ones(1, t, dtype=torch.bool))
    loss = CGSTVGCriterion(WEIGHTS, aux_loss=False, conf_target_detach=detach)(out, targets)["loss_conf"]
    (grad,) = torch.autograd.grad(loss, boxes, allow_unused=True)
    # The release does not detach the IoU target, so loss_conf also moves the boxes.
    assert (grad is None) == detach


def test_post_processing_clips_to_the_frame_only_when_asked():
    # A box reaching past the right and bottom edges of a 10 x 20 (h x w) frame, and past the left edge.
    boxes = torch.tensor([[[0.95, 0.9, 0.3, 0.4], [0.0, 0.5, 0.2, 0.2]]])
    args = (torch.zeros(1, 2, 2), boxes, torch.tensor([[3, 4]]), torch.tensor([[10, 20]]))
    release = post_process(*args).boxes_xyxy[0]
    clipped = post_process(*args, clip_to_frame=True).boxes_xyxy[0]
    assert release[0].tolist() == pytest.approx([16.0, 7.0, 22.0, 11.0])  # clamped at 0 only, as the release
    assert clipped[0].tolist() == pytest.approx([16.0, 7.0, 20.0, 10.0])
    assert release[1, 0] == clipped[1, 0] == 0.0
    assert torch.equal(release[1], clipped[1])
