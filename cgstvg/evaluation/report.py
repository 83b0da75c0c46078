"""The evaluate stage's two score files: the headline that `dvc metrics show` prints, and every score beside it.

- `metrics.json` (declared under `metrics:` in dvc.yaml, so `dvc metrics show/diff` and `dvc exp show` read it):
  `{"model": {"m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "n"}, "rejected": r}`, the four scores the paper
  reports, of the model on the `n` samples scored, and the `r` samples of the split that `shard` rejected (not
  scored: with r > 0 the scores are not comparable with figures over the whole split). It stays narrow enough for
  `dvc metrics show` to fit 120 columns.
- `metrics_detail.json` (a plain output; `dvc metrics show/diff --targets outputs/evaluate/metrics_detail.json`):
  `model`: those scores plus gt_vIoU and gt_vIoU@R; `baselines`: the same keys for each trivial baseline
  (`cgstvg.evaluation.baselines`), over the same samples; `subsets` (synthetic data): the model's scores on the
  `hard` / `decoy` clips; `rejects` (only when some): the count per reason and the rejected sample ids.
  On VidSTG the model and each baseline also hold `qtype`: `{"declar": {...}, "inter": {...}}`.

Counts (`n`) are ints; scores are floats as `STVGMetrics.compute` gives them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from cgstvg.data.schema import QTYPES

HEADLINE_KEYS = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "n")
HEADLINE_FILE = "metrics.json"
DETAIL_FILE = "metrics_detail.json"


def _value(key: str, value: float) -> float | int:
    return int(value) if key == "n" else float(value)


def nest_qtypes(summary: Mapping[str, float]) -> dict[str, Any]:
    """`STVGMetrics.compute()` output with its `declar_` / `inter_` keys moved under `qtype: {declar: {...}}`."""
    out: dict[str, Any] = {}
    qtypes: dict[str, dict[str, float | int]] = {}
    for key, value in summary.items():
        prefix, _, rest = key.partition("_")
        if prefix in QTYPES and rest:
            qtypes.setdefault(prefix, {})[rest] = _value(rest, value)
        else:
            out[key] = _value(key, value)
    if qtypes:
        out["qtype"] = qtypes
    return out


def headline(summary: Mapping[str, float], rejected: int = 0) -> dict[str, Any]:
    """`metrics.json`: the model's m_tIoU, m_vIoU, vIoU@0.3, vIoU@0.5 and n over the split, and the count of the
    split's samples that `shard` rejected."""
    missing = [k for k in HEADLINE_KEYS if k not in summary]
    if missing:
        raise KeyError(f"the model's summary has no {missing} (keys: {sorted(summary)})")
    return {"model": {k: _value(k, summary[k]) for k in HEADLINE_KEYS}, "rejected": int(rejected)}


def detail(
    summary: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]],
    subsets: Mapping[str, Mapping[str, float]] | None = None,
    rejects: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`metrics_detail.json`: every score of the model, of each baseline and of the model on each subset; with
    `rejects` (sample_id -> reason of the split's samples that `shard` rejected) their count per reason and ids."""
    out: dict[str, Any] = {
        "model": nest_qtypes(summary),
        "baselines": {kind: nest_qtypes(scores) for kind, scores in baselines.items()},
    }
    if subsets:
        out["subsets"] = {flag: {k: _value(k, v) for k, v in s.items()} for flag, s in subsets.items()}
    if rejects:
        reasons = dict(Counter(rejects.values()).most_common())
        out["rejects"] = {"count": len(rejects), "reasons": reasons, "sample_ids": sorted(rejects)}
    return out


__all__ = ["DETAIL_FILE", "HEADLINE_FILE", "HEADLINE_KEYS", "detail", "headline", "nest_qtypes"]
