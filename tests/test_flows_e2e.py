"""End to end, as a user runs it: a real Prefect server on 127.0.0.1, the prefect.yaml deployment on a process
work pool, `prefect deployment run`, a worker, then the metrics artifact read back through the API."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL, temporary_settings

from flow_repo import copy_checkout
from flows.artifacts import METRICS_ARTIFACT_KEY

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).with_name("prefect"))
SERVER_START_S = 180  # a loaded 2-core machine needs long for the first migration of the database
RUN_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"prefect server not healthy after {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM the process group we started, SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _cli(args: list[str], repo: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [PREFECT, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_deployed_pipeline_runs_on_a_local_server_and_publishes_metrics(tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PWD": str(repo),  # prefect.yaml's pull step: `{{ $PWD }}`, the checkout that deploys
        "GIT_AUTHOR_NAME": "cgstvg-test",
        "GIT_AUTHOR_EMAIL": "cgstvg-test@localhost",
        "GIT_COMMITTER_NAME": "cgstvg-test",
        "GIT_COMMITTER_EMAIL": "cgstvg-test@localhost",
    }
    server = worker = None
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    try:
        with open(server_log, "w") as log:
            server = subprocess.Popen(
                [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _wait_healthy(url, server, server_log)

        _cli(["work-pool", "create", "cgstvg-local", "--type", "process"], repo, env)
        _cli(["--no-prompt", "deploy", "--name", "local-pipeline"], repo, env)
        params = {"stages": ["synthesize", "normalize", "pairs"]}
        out = _cli(["deployment", "run", "cgstvg-pipeline/local-pipeline", "--params", json.dumps(params)], repo, env)
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
        assert match, f"no flow run id in `prefect deployment run` output:\n{out}"
        flow_run_id = match.group(1)

        with open(worker_log, "w") as log:
            worker = subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", "cgstvg-local", "--run-once"],
                cwd=repo,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            deadline = time.monotonic() + RUN_S
            while time.monotonic() < deadline:
                state = client.read_flow_run(flow_run_id).state
                if state is not None and state.is_final():
                    break
                time.sleep(2)
            assert state is not None and state.is_completed(), (
                f"flow run ended as {state!r}:\n{worker_log.read_text()[-4000:]}"
            )
            [artifact] = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[METRICS_ARTIFACT_KEY]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                )
            )
        pairs = json.loads((repo / "metrics/pairs.json").read_text())["pairs"]
        assert f"| `pairs` | — | {pairs} | — |" in artifact.data
        lock = yaml.safe_load((repo / "dvc.lock").read_text())
        assert {"synthesize", "normalize", "pairs"} <= set(lock["stages"])
    finally:
        _stop(worker)
        _stop(server)
