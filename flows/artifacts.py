"""Markdown tables built from DVC's JSON output (`dvc metrics diff --json`, `dvc exp show --json`).

The builders are pure functions (tested without Prefect); `publish_*` wrap them as Prefect markdown artifacts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from prefect.artifacts import create_markdown_artifact

METRICS_ARTIFACT_KEY = "cgstvg-metrics-diff"
SWEEP_ARTIFACT_PREFIX = "cgstvg-sweep"


def _fmt(value: Any) -> str:
    """Numbers to 4 decimals (metrics are ratios in [0, 1] or losses); missing values as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (int, str)):
        return str(value)
    return repr(value)


def _fmt_change(diff: Any) -> str:
    if isinstance(diff, (int, float)) and not isinstance(diff, bool):
        return f"{diff:+.4f}" if isinstance(diff, float) else f"{diff:+d}"
    return _fmt(diff)


def _row(cells: Iterable[Any]) -> str:
    # A pipe inside a cell would split it; DVC metric names can contain none, but captions in names could.
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def _code(text: Any) -> str:
    """Inline code: metric names such as `model.vIoU@0.3` would otherwise render as mailto links."""
    return f"`{str(text).replace('`', '')}`"


def metrics_diff_table(
    diff: Mapping[str, Mapping[str, Mapping[str, Any]]], baseline: str, stale: Iterable[str] = ()
) -> str:
    """Markdown for `dvc metrics diff --all --json`: per metrics file, one row per score with the baseline's value,
    this run's and the change.

    `diff` is {metrics file: {metric name: {"old": x, "new": y, "diff": y - x}}}; a metric new in this run has no
    "old" and one gone from it has no "new". dvc.yaml declares only the headline scores as metrics
    (`outputs/evaluate/metrics.json`: the model's m_tIoU, m_vIoU, vIoU@0.3, vIoU@0.5 and n, and `rejected`), so
    the table is a few rows. `stale` names the files whose stage did not run in this flow: their column says
    "workspace", as the values are whatever an earlier run left there. Metric names and paths are code spans, so
    that names with an `@` do not render as mail links.
    """
    stale_files = set(stale)
    sections = []
    for path in sorted(diff):
        if not diff[path]:
            continue
        current = "workspace" if path in stale_files else "this run"
        note = " (its stage did not run in this flow: the workspace's values)" if path in stale_files else ""
        rows = [
            [_code(name), _fmt(v.get("old")), _fmt(v.get("new")), _fmt_change(v.get("diff"))]
            # the paper's order (m_tIoU, m_vIoU, vIoU@0.3, vIoU@0.5), then the counts (n, rejected)
            for name, v in sorted(diff[path].items(), key=lambda item: (_is_count(item[0]), item[0]))
        ]
        sections.append(f"{_code(path)}{note}\n\n" + _table(["metric", _code(baseline), current, "change"], rows))
    title = f"### Scores against `{baseline}`\n\n"
    if not sections:
        return title + "No scores: the stages run so far declare no metrics in dvc.yaml.\n"
    return title + "\n\n".join(sections) + "\n"


def _is_count(name: str) -> bool:
    """The sample counts of metrics.json (`model.n`, `rejected`), listed after the scores."""
    return name.rsplit(".", 1)[-1] in ("n", "rejected")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _file_data(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flatten exp-show's {file: {"data": {...}}} into {"file:dotted.key": value}."""
    out: dict[str, Any] = {}
    for path, entry in (section or {}).items():
        for key, value in _flatten((entry or {}).get("data") or {}).items():
            out[f"{path}:{key}"] = value
    return out


def experiments_from_exp_show(exp_show: list[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{experiment name: {"params": {...}, "metrics": {...}}} from `dvc exp show --json`, newest run per name.

    Keys are "file:dotted.key" (e.g. "params.yaml:model.icr"). The baseline commit appears under its branch name
    (or short sha), the workspace as "workspace".
    """
    found: dict[str, dict[str, dict[str, Any]]] = {}

    def add(name: str, data: Mapping[str, Any] | None) -> None:
        if data and name not in found:
            found[name] = {"params": _file_data(data.get("params")), "metrics": _file_data(data.get("metrics"))}

    for entry in exp_show:
        add(entry.get("name") or str(entry.get("rev", ""))[:7], entry.get("data"))
        for exp in entry.get("experiments") or []:
            revs = exp.get("revs") or []
            if revs:
                add(exp.get("name") or revs[0].get("rev", "")[:7], revs[0].get("data"))
    return found


def sweep_table(
    exp_show: list[Mapping[str, Any]], variants: Mapping[str, list[str]], experiment_names: Mapping[str, str]
) -> str:
    """Markdown comparing the sweep's experiments: one row per variant, its overrides, then every metric.

    `variants` maps a variant name to its `-S` overrides; `experiment_names` maps it to the DVC experiment name.
    """
    runs = experiments_from_exp_show(exp_show)
    missing = [experiment_names[v] for v in variants if experiment_names[v] not in runs]
    if missing:
        raise KeyError(f"`dvc exp show` lists no experiment named {missing} (found: {sorted(runs)})")
    metric_names = sorted({m for v in variants for m in runs[experiment_names[v]]["metrics"]})
    rows = []
    for variant, overrides in variants.items():
        metrics = runs[experiment_names[variant]]["metrics"]
        rows.append(
            [variant, experiment_names[variant], " ".join(f"`{o}`" for o in overrides) or "—"]
            + [_fmt(metrics.get(m)) for m in metric_names]
        )
    header = ["variant", "experiment", "overrides", *(_code(re.sub(r"^.*?:", "", m)) for m in metric_names)]
    files = sorted({m.split(":", 1)[0] for m in metric_names})
    note = f"Metrics from {', '.join(f'`{f}`' for f in files)}." if files else "No experiment wrote metrics."
    return "### Sweep: one DVC experiment per variant\n\n" + _table(header, rows) + f"\n\n{note}\n"


def publish_metrics_diff(diff: Mapping[str, Any], baseline: str, stale: Iterable[str] = ()) -> str:
    """Publish the scores table as the run's markdown artifact; return its markdown."""
    markdown = metrics_diff_table(diff, baseline, stale)
    create_markdown_artifact(
        key=METRICS_ARTIFACT_KEY, markdown=markdown, description=f"headline scores against {baseline}"
    )
    return markdown


def sweep_artifact_key(sweep: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"{SWEEP_ARTIFACT_PREFIX}-" + re.sub(r"[^a-z0-9-]+", "-", sweep.lower()).strip("-")


def publish_sweep(sweep: str, markdown: str) -> str:
    create_markdown_artifact(key=sweep_artifact_key(sweep), markdown=markdown, description=f"sweep {sweep}")
    return markdown
