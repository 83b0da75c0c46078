"""The metrics reproduce the authors' evaluators on the 200 fixture cases, and stay exact under DDP."""

import json
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cgstvg.evaluation.metrics import MissingPredictionError, STVGMetrics, paired_box_iou, score_video, tiou, viou

# Fixture and conversion numerics: also run by .ci/run under other CPU capabilities and thread counts.
pytestmark = pytest.mark.numerics

# fixture key -> our key
SUMMARY_KEYS = {
    "tiou": "m_tIoU",
    "viou": "m_vIoU",
    "viou@0.3": "vIoU@0.3",
    "viou@0.5": "vIoU@0.5",
    "gt_viou": "gt_vIoU",
    "gt_viou@0.3": "gt_vIoU@0.3",
    "gt_viou@0.5": "gt_vIoU@0.5",
}


def _load(fixtures_dir):
    d = fixtures_dir / "metrics"
    return json.loads((d / "cases.json").read_text())["cases"], json.loads((d / "expected.json").read_text())


def _args(case):
    pb = case["pred_boxes"]
    frames = np.arange(pb["first_frame"], pb["first_frame"] + len(pb["xyxy"]))
    return case["gt_sted"], case["gt_boxes"]["xyxy"], case["pred_sted"], frames, pb["xyxy"]


def _update(metric, case, index):
    metric.update(*_args(case), index=index, qtype=case["qtype"], sample_id=case["id"])


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    return _load(fixtures_dir)


def test_every_fixture_case_equals_the_release_exactly(fixture):
    # Bit-exact on any machine: like the authors' evaluator, ours computes in float64 with IEEE +, -, *, /, min and
    # max only (each correctly rounded, hence the same on every CPU) in the same order, and numpy's pairwise sums
    # follow a fixed order set by the array length, not by the CPU's vector width.
    cases, expected = fixture
    by_id = {e["id"]: e for e in expected["per_case"]}
    assert len(cases) == 200
    for case in cases:
        exp = by_id[case["id"]]
        got = score_video(*_args(case), protocol="release", on_missing="skip")
        assert (got.tiou, got.viou, got.gt_viou) == (exp["tiou"], exp["viou"], exp["gt_viou"]), case["id"]
        assert (int(got.viou > 0.3), int(got.viou > 0.5)) == (exp["viou@0.3"], exp["viou@0.5"]), case["id"]
        assert tiou(case["gt_sted"], case["pred_sted"]) == exp["tiou"]


def test_hcstvg_summary_over_all_200(fixture):
    cases, expected = fixture
    metric = STVGMetrics(protocol="release", on_missing="skip")
    for i, case in enumerate(cases):
        _update(metric, case, i)
    out = metric.compute()
    assert out["n"] == 200
    for theirs, ours in SUMMARY_KEYS.items():
        assert float(out[ours]) == expected["summary_hcstvg_all_200"][theirs], ours
    per = metric.per_sample()
    by_id = {e["id"]: e for e in expected["per_case"]}
    assert per["index"].tolist() == list(range(200))
    assert per["viou"].tolist() == [by_id[c["id"]]["viou"] for c in cases]


def test_vidstg_per_qtype_summary_over_the_194_run_cases(fixture):
    cases, expected = fixture
    run_ids = set(expected["vidstg_run_case_ids"])
    assert len(run_ids) == 194
    metric = STVGMetrics(protocol="release", on_missing="raise", per_qtype=True)
    for i, case in enumerate(cases):
        if case["id"] in run_ids:
            _update(metric, case, i)
        else:  # the six left-out cases lack a prediction at some GT frame: the VidSTG evaluator raises on them
            with pytest.raises(MissingPredictionError, match=f"sample {case['id']}: no predicted box"):
                _update(metric, case, i)
    out = metric.compute()
    summary = expected["summary_vidstg_per_qtype"]
    for qtype in ("declar", "inter"):
        for theirs, ours in SUMMARY_KEYS.items():
            assert float(out[f"{qtype}_{ours}"]) == summary[f"{qtype}_{theirs}"], (qtype, ours)
    assert out["declar_n"] + out["inter_n"] == 194


def test_both_boxes_zero_area_gives_nan_that_propagates(fixture):
    _, expected = fixture
    special = next(s for s in expected["special_cases_not_in_summaries"] if s["case"]["id"] == 9001)
    got = score_video(*_args(special["case"]))
    assert got.tiou == special["hcstvg_result"]["tiou"] == 1.0
    assert math.isnan(got.viou) and math.isnan(got.gt_viou)
    metric = STVGMetrics()
    _update(metric, special["case"], 0)
    out = metric.compute()
    for theirs, ours in SUMMARY_KEYS.items():
        want = special["hcstvg_summary"][theirs]
        assert math.isnan(out[ours]) if want == "NaN" else float(out[ours]) == want, ours


def test_missing_prediction_skipped_for_hcstvg_and_an_error_for_vidstg(fixture):
    _, expected = fixture
    special = next(s for s in expected["special_cases_not_in_summaries"] if s["case"]["id"] == 9002)
    got = score_video(*_args(special["case"]), on_missing="skip")
    assert tuple(got) == tuple(special["hcstvg_result"][k] for k in ("tiou", "viou", "gt_viou"))
    with pytest.raises(MissingPredictionError, match=r"sample 9002: no predicted box for GT frame\(s\) \[484\]"):
        score_video(*_args(special["case"]), on_missing="raise", sample_id=9002)


def _perfect(gs, ge, ps, pe):
    gt = np.tile([10.0, 20.0, 50.0, 60.0], (ge - gs + 1, 1))
    frames = np.arange(min(gs, ps), max(ge + 1, pe))
    return (gs, ge), gt, (ps, pe), frames, np.tile([10.0, 20.0, 50.0, 60.0], (frames.size, 1))


def test_release_quirk_and_strict_fix_on_a_perfect_prediction():
    args = _perfect(10, 19, 10, 20)  # 10 GT frames, predicted exactly [10, 20)
    release = score_video(*args, protocol="release")
    assert release.tiou == release.viou == 9 / 10  # the last GT frame is never in the intersection
    assert release.gt_viou == 1.0
    strict = score_video(*args, protocol="strict")
    assert strict == (1.0, 1.0, 1.0)


def test_strict_on_hand_computed_partial_overlap():
    # GT frames 4..7 (4 frames), prediction [6, 10): intersection {6, 7}, union [4, 10) = 6 frames.
    gt = np.array([[0, 0, 10, 10]] * 4, dtype=float)
    frames = np.arange(4, 10)
    pred = np.array(
        [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 5, 10], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=float
    )  # IoU at frames 6, 7 = 1.0, 0.5
    strict = score_video((4, 7), gt, (6, 10), frames, pred, protocol="strict")
    assert strict.tiou == 2 / 6
    assert strict.viou == (1.0 + 0.5) / 6
    assert strict.gt_viou == (1.0 + 1.0 + 1.0 + 0.5) / 4
    # release: GT end 7 used as exclusive -> intersection {6} only, union [4, 10) still 6 frames
    release = score_video((4, 7), gt, (6, 10), frames, pred, protocol="release")
    assert release.tiou == 1 / (3 + 4 - 1)
    assert release.viou == 1.0 / 6


def test_one_frame_gt_scores_zero_in_release_but_not_in_strict():
    args = _perfect(5, 5, 5, 6)
    assert score_video(*args, protocol="release") == (0.0, 0.0, 1.0)
    assert score_video(*args, protocol="strict") == (1.0, 1.0, 1.0)


def test_thresholds_are_strict_and_metric_validates_input():
    assert viou(*_perfect(0, 9, 5, 10), protocol="strict") == 0.5
    metric = STVGMetrics(protocol="strict")
    metric.update(*_perfect(0, 9, 5, 10), index=0)  # vIoU exactly 0.5
    out = metric.compute()
    assert float(out["vIoU@0.3"]) == 1.0 and float(out["vIoU@0.5"]) == 0.0
    with pytest.raises(ValueError, match="qtype must be one of"):
        metric.update(*_perfect(0, 9, 5, 10), index=1, qtype="question")
    with pytest.raises(ValueError, match="needs 10 boxes"):
        score_video((0, 9), np.zeros((9, 4)), (0, 10), np.arange(10), np.zeros((10, 4)), sample_id="v1")
    with pytest.raises(ValueError, match="protocol must be one of"):
        STVGMetrics(protocol="inclusive")


def test_paired_iou_matches_torchvision_diagonal():
    from torchvision.ops import box_iou

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(50, 2))
    a = np.concatenate([xy, xy + rng.uniform(1, 50, size=(50, 2))], axis=1)
    b = a + rng.normal(0, 10, size=a.shape)
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
    want = box_iou(torch.from_numpy(a), torch.from_numpy(b)).diagonal().numpy()
    # Same float64 formula, operations grouped differently: a few ulps of IoUs <= 1 (ulp(1) = 2.2e-16).
    np.testing.assert_allclose(paired_box_iou(a, b), want, rtol=0, atol=1e-15)


def test_duplicate_indices_from_a_padded_sampler_count_once(fixture):
    cases, _ = fixture
    once, twice = STVGMetrics(), STVGMetrics()
    for i, case in enumerate(cases[:10]):
        _update(once, case, i)
        _update(twice, case, i)
    _update(twice, cases[0], 0)  # a padded DistributedSampler repeats the first samples
    assert {k: float(v) for k, v in once.compute().items()} == {k: float(v) for k, v in twice.compute().items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, fixtures_dir, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        cases, _ = _load(fixtures_dir)
        metric = STVGMetrics(per_qtype=True)
        for i in range(rank, len(cases), world_size):  # each rank scores half of the cases
            _update(metric, cases[i], i)
        out = {k: float(v) for k, v in metric.compute().items()}
        per = {k: v.tolist() for k, v in metric.per_sample().items()}
        if rank == 0:
            torch.save({"summary": out, "per_sample": per}, out_path)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(fixture, fixtures_dir, tmp_path):
    cases, _ = fixture
    single = STVGMetrics(per_qtype=True)
    for i, case in enumerate(cases):
        _update(single, case, i)
    want = {k: float(v) for k, v in single.compute().items()}
    out_path = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), fixtures_dir, out_path), nprocs=2, join=True)
    got = torch.load(out_path, weights_only=True)
    assert got["summary"] == want  # per-sample states sorted by index: bit-identical, not just close
    assert got["per_sample"]["index"] == list(range(200))
    assert got["per_sample"]["tiou"] == single.per_sample()["tiou"].tolist()
