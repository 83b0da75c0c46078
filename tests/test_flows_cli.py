"""`python -m flows.pipeline`'s command line: the examples of its --help parse and their `--set` overrides fit
params.yaml; a bad `--set` is one line naming the key, and nothing is written. No stage and no Prefect server run."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.dvc_tasks import OverrideError, check_param_overrides
from flows.pipeline import EXAMPLES, SET_EXAMPLE, _parse, _parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_help_shows_the_set_example_and_the_usage_lines():
    text = _parser().format_help()
    assert f"e.g. {SET_EXAMPLE}" in text
    assert EXAMPLES and all(line in text for line in EXAMPLES.splitlines())


def test_every_help_example_parses_and_its_overrides_fit_params_yaml(repo_copy):
    before = (repo_copy / "params.yaml").read_text()
    examples = [shlex.split(line.split("#")[0])[3:] for line in EXAMPLES.splitlines()]  # after `python -m ...`
    assert ["--set", SET_EXAMPLE] == examples[-1][:2]
    for argv in examples:
        args = _parse(argv, repo=repo_copy)  # exits on a bad override
        check_param_overrides(args.overrides, repo_copy)
    assert _parse(["--set", SET_EXAMPLE], repo=repo_copy).overrides == [SET_EXAMPLE]
    assert (repo_copy / "params.yaml").read_text() == before  # checked, not applied


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=1e-4", "has no key 'train.lr'; did you mean train.optim.lr"),  # the old --help example
        ("nosuch.key=1", "has no key 'nosuch.key'"),
        ("train.optim.lr=abc", "params.yaml:train.optim.lr: expected a number"),  # the params schema
        ("+train.lr=1e-4", "params.yaml:train: unknown key 'lr'"),  # added keys go through the schema too
        ("train.optim.lr", "expected KEY=VALUE"),
    ],
)
def test_a_bad_override_is_one_line_naming_it(repo_copy, override, message):
    before = (repo_copy / "params.yaml").read_text()
    with pytest.raises(OverrideError) as err:
        check_param_overrides([override], repo_copy)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"--set {override}: ") and message in text
    assert (repo_copy / "params.yaml").read_text() == before


def test_the_command_line_exits_with_one_line_before_any_stage_runs():
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--set", "train.lr=1e-4"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert "--set train.lr=1e-4" in proc.stderr and "train.optim.lr" in proc.stderr


@pytest.mark.parametrize("given, expected", [(None, 120), ("45", 45)])
def test_the_local_ephemeral_server_gets_time_to_start(given, expected):
    """A loaded 2-core machine needs more than Prefect's 20 s to start the ephemeral API server; `flows` raises the
    default before Prefect is imported, and a value the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    if given is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = given
    code = (
        "import flows.pipeline\n"
        "from prefect.settings import get_current_settings\n"
        "print(get_current_settings().server.ephemeral.startup_timeout_seconds)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(expected)


def test_every_flow_parameter_has_a_description_for_the_ui():
    """Prefect shows a deployment's parameters with the descriptions it parses from the flow's docstring."""
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import pipeline
    from flows.sweep import sweep

    for flow in (pipeline, sweep):
        schema = parameter_schema(flow.fn).model_dump()
        undescribed = [name for name, prop in schema["properties"].items() if not prop.get("description")]
        assert schema["properties"] and not undescribed, (flow.name, undescribed)
