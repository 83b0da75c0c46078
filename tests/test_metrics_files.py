"""The metrics that DVC shows hold scores only, and stay readable: `dvc metrics show` and the documented
`dvc exp show` line fit 120 columns on the committed files, and the Prefect artifact is a short, escaped table.

The `dvc` commands run in a subprocess in this checkout (read-only); they are skipped where no `dvc` or no git
checkout is at hand."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cgstvg.evaluation.report import HEADLINE_KEYS
from flows.artifacts import metrics_diff_table

REPO = Path(__file__).resolve().parents[1]
HEADLINE = "outputs/evaluate/metrics.json"
DETAIL = "outputs/evaluate/metrics_detail.json"
WIDTH = 120


def _dvc() -> str:
    beside = Path(sys.executable).with_name("dvc")
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if found is None:
        pytest.skip("no `dvc` executable beside the interpreter or on PATH")
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout: dvc reads the metrics at git revisions")
    return found


def _run_dvc(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "400", "DVC_NO_ANALYTICS": "1"}  # wide: the table's own width is measured
    proc = subprocess.run(
        [_dvc(), *args], cwd=REPO, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert "failed to load" not in proc.stderr, proc.stderr  # a declared metrics file that is not in the checkout
    return proc.stdout


def _flatten(tree: dict, prefix: str = "") -> dict:
    """DVC's dotted metric names: {"model": {"n": 1}} -> {"model.n": 1}."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def _width(text: str) -> int:
    return max((len(line.rstrip()) for line in text.splitlines()), default=0)


def test_only_the_headline_is_declared_as_metrics():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert "metrics" not in dvc_yaml  # normalize's stats.json is dataset statistics
    declared = {
        name: [next(iter(e)) if isinstance(e, dict) else e for e in stage.get("metrics") or []]
        for name, stage in dvc_yaml["stages"].items()
    }
    assert {name: files for name, files in declared.items() if files} == {"evaluate": [HEADLINE]}
    evaluate_outs = [next(iter(e)) if isinstance(e, dict) else e for e in dvc_yaml["stages"]["evaluate"]["outs"]]
    assert DETAIL in evaluate_outs


def test_committed_headline_and_detail_agree():
    headline = json.loads((REPO / HEADLINE).read_text())
    detail = json.loads((REPO / DETAIL).read_text())
    assert list(headline) == ["model", "rejected"] and set(headline["model"]) == set(HEADLINE_KEYS)
    assert headline["model"] == {k: detail["model"][k] for k in HEADLINE_KEYS}
    assert headline["rejected"] == 0 and "rejects" not in detail  # the default's test videos all decode
    assert {"model", "baselines"} <= set(detail) <= {"model", "baselines", "subsets"}
    assert set(detail["baselines"]) == {"whole_clip_centred_box", "oracle_segment_centred_box"}
    assert {"gt_vIoU", "gt_vIoU@0.5"} <= set(detail["model"])


def test_dvc_metrics_show_fits_120_columns():
    out = _run_dvc("metrics", "show")
    assert f"{HEADLINE} " in out and "model.m_vIoU" in out
    assert _width(out) <= WIDTH, out
    shown = json.loads(_run_dvc("metrics", "show", "--json"))
    [files] = [rev["data"] for rev in shown.values()]
    assert set(files) == {HEADLINE}
    assert set(_flatten(files[HEADLINE]["data"])) == {f"model.{k}" for k in HEADLINE_KEYS} | {"rejected"}


def test_dvc_metrics_diff_against_head_and_on_the_detail_file():
    _run_dvc("metrics", "diff", "HEAD")
    rows = _run_dvc("metrics", "diff", "HEAD", "--all", "--targets", DETAIL).splitlines()
    assert any("baselines.oracle_segment_centred_box.m_vIoU" in r for r in rows)


def test_documented_exp_show_line_fits_120_columns():
    recipe = re.search(r"^exp-show:\n\t(.+)$", (REPO / "Makefile").read_text(), re.M)
    assert recipe, "Makefile has no exp-show target"
    argv = shlex.split(recipe.group(1).replace("$(EXP_ARGS)", ""))
    assert argv[:3] == ["dvc", "exp", "show"]
    out = _run_dvc(*argv[1:])
    header = out.splitlines()[1]
    assert "Experiment" in header and "model.m_vIoU" in header and "model.vIoU@0.5" in header
    if "val" in json.loads((REPO / "outputs/train/live/metrics.json").read_text()):  # runs since DVCLive validate
        assert "val.m_tIoU" in header and "val.m_vIoU" in header  # train's held-out validation (evaluate's params)
    assert "train." not in header and "cgstvg/" not in header  # no params, no deps
    assert _width(out) <= WIDTH, out


def test_metrics_artifact_is_a_short_escaped_table_of_the_headline():
    data = json.loads((REPO / HEADLINE).read_text())
    # what `dvc metrics diff --all --json` gives for an unchanged file, plus one changed and one new score
    diff = {HEADLINE: {k: {"old": v, "new": v, "diff": 0} for k, v in _flatten(data).items()}}
    diff[HEADLINE]["model.m_vIoU"] = {"old": 0.25, "new": 0.3, "diff": 0.05}
    diff[HEADLINE]["model.vIoU@0.5"] = {"new": 0.2}
    text = metrics_diff_table(diff, "HEAD")
    lines = text.splitlines()
    assert len(lines) <= 12, text
    rows = [line.split(" | ")[0].removeprefix("| ") for line in lines if line.startswith("| `")]
    assert rows == [f"`model.{k}`" for k in HEADLINE_KEYS] + ["`rejected`"]  # the paper's order, the counts last
    assert "| metric | `HEAD` | this run | change |" in lines
    assert "| `model.m_vIoU` | 0.2500 | 0.3000 | +0.0500 |" in lines
    assert "| `model.vIoU@0.5` | — | 0.2000 | — |" in lines
    assert "@" not in re.sub(r"`[^`]*`", "", text)  # every `@` inside a code span: no mailto links
    stale = metrics_diff_table(diff, "HEAD", stale=[HEADLINE])
    assert "| metric | `HEAD` | workspace | change |" in stale and "did not run" in stale
    assert "No scores" in metrics_diff_table({}, "HEAD")


def test_the_trained_model_is_a_dvc_artifact_of_the_train_stage():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    artifact = dvc_yaml["artifacts"]["cgstvg-default"]
    assert artifact["type"] == "model"
    train_outs = [next(iter(e)) if isinstance(e, dict) else e for e in dvc_yaml["stages"]["train"]["outs"]]
    assert artifact["path"] in train_outs  # what `dvc artifacts get` fetches is what `train` writes
    from dvc.repo import Repo

    declared = Repo(str(REPO)).artifacts.read()["dvc.yaml"]
    assert declared["cgstvg-default"].path == artifact["path"]
