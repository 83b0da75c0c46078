"""`cgstvg.evaluation.report`: the headline `metrics.json` and the full `metrics_detail.json` of `evaluate`."""

from __future__ import annotations

import pytest

from cgstvg.evaluation.report import HEADLINE_KEYS, detail, headline, nest_qtypes

SCORES = {"m_tIoU": 0.5, "m_vIoU": 0.4, "vIoU@0.3": 0.7, "vIoU@0.5": 0.4, "gt_vIoU": 0.8, "gt_vIoU@0.3": 0.9}


def _summary(prefix: str = "", n: float = 10.0) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in SCORES.items()} | {f"{prefix}n": n}


def test_headline_holds_the_four_scores_and_an_int_count():
    out = headline(_summary(), rejected=2)
    assert list(out) == ["model", "rejected"] and tuple(out["model"]) == HEADLINE_KEYS
    assert out["model"]["n"] == 10 and isinstance(out["model"]["n"], int)
    assert out["rejected"] == 2 and headline(_summary())["rejected"] == 0
    assert out["model"]["m_vIoU"] == 0.4


def test_headline_names_missing_scores():
    with pytest.raises(KeyError, match="m_vIoU"):
        headline({"m_tIoU": 0.1, "n": 1.0})


def test_vidstg_qtypes_nest_under_qtype():
    summary = _summary() | _summary("declar_", 6.0) | _summary("inter_", 4.0)
    nested = nest_qtypes(summary)
    assert set(nested) == set(_summary()) | {"qtype"}
    assert nested["qtype"]["declar"] == {**SCORES, "n": 6} and nested["qtype"]["inter"]["n"] == 4
    assert "qtype" not in nest_qtypes(_summary())  # HC-STVG: no qtype split


def test_detail_holds_model_baselines_and_subsets():
    subsets = {"hard": {"m_tIoU": 0.3, "m_vIoU": 0.2, "vIoU@0.3": 0.1, "vIoU@0.5": 0.0, "n": 3.0}}
    out = detail(_summary(), {"whole_clip_centred_box": _summary(n=10.0)}, subsets)
    assert set(out) == {"model", "baselines", "subsets"}
    assert out["model"] == {**SCORES, "n": 10} and out["baselines"]["whole_clip_centred_box"]["n"] == 10
    assert out["subsets"]["hard"]["n"] == 3 and isinstance(out["subsets"]["hard"]["n"], int)
    assert "subsets" not in detail(_summary(), {}, {})  # real data: no subset


def test_detail_counts_rejects_per_reason_only_when_some():
    rejects = {"v3": "decode_error", "v1": "size_mismatch", "v2": "decode_error"}
    out = detail(_summary(n=7.0), {}, None, rejects)
    assert out["rejects"] == {
        "count": 3,
        "reasons": {"decode_error": 2, "size_mismatch": 1},
        "sample_ids": ["v1", "v2", "v3"],
    }
    assert "rejects" not in detail(_summary(), {}, None, {})
