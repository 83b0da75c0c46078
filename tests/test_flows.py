"""The Prefect flows under `prefect_test_harness`: DVC stages as tasks, the metrics artifact, the sweep table,
fan-out on each task runner, torchrun launch, and retries on transient failures only."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, FlowRunFilter
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect.testing.utilities import prefect_test_harness
from prefect.utilities.templating import apply_values
from prefect_dask import DaskTaskRunner

from flow_repo import DVC, REPO, copy_checkout, git_commit_all, toy_repo
from flows.artifacts import METRICS_ARTIFACT_KEY, sweep_artifact_key, sweep_table
from flows.dvc_tasks import DvcCommandError, repro_stage, with_retries
from flows.fanout import make_task_runner
from flows.launch import torchrun_argv
from flows.pipeline import pipeline, run_stage
from flows.settings import FlowSettings, Torchrun, load_flow_settings
from flows.sweep import sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def harness():
    """One temporary Prefect server for the module (a loaded 2-core machine needs more than the default 30 s),
    and a git identity for the experiment commits DVC makes."""
    with pytest.MonkeyPatch.context() as mp:
        for role in ("AUTHOR", "COMMITTER"):
            mp.setenv(f"GIT_{role}_NAME", "cgstvg-test")
            mp.setenv(f"GIT_{role}_EMAIL", "cgstvg-test@localhost")
        with prefect_test_harness(server_startup_timeout=180):
            yield


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("checkout"))


def _artifacts(key: str, flow_run_id=None):
    runs = ArtifactFilterFlowRunId(any_=[flow_run_id]) if flow_run_id else None
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]), flow_run_id=runs)
        )


def _task_run_names(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
    return sorted(r.name for r in runs)


def test_pipeline_flow_runs_stages_and_publishes_metrics_diff(checkout):
    stages = ["synthesize", "normalize", "shard", "pairs"]
    state = pipeline(stages=stages, repo=str(checkout), return_state=True)
    first = state.result()
    # params.yaml fans `shard` out (flows.fanout) over threads: one Prefect task per chunk of videos.
    assert first["stages"] == {"synthesize": "repro", "normalize": "repro", "shard": "fanout", "pairs": "repro"}
    lock = yaml.safe_load((checkout / "dvc.lock").read_text())
    assert set(stages) <= set(lock["stages"])
    status = subprocess.run(
        [DVC, "status", "--json", *stages], cwd=checkout, check=True, capture_output=True, text=True
    )
    assert json.loads(status.stdout) == {}  # the fanned-out `shard` is recorded as if `dvc repro` had run it
    pairs = json.loads((checkout / "metrics/pairs.json").read_text())["pairs"]
    assert pairs > 0
    run_id = state.state_details.flow_run_id
    assert {"dvc repro synthesize", "dvc repro normalize", "dvc commit shard", "dvc repro pairs"} <= set(
        _task_run_names(run_id)
    )
    with get_client(sync_client=True) as client:
        [fanout_run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [run_id]}))
    assert any(name.startswith("shard chunk ") for name in _task_run_names(fanout_run.id))
    # HEAD has no metrics yet: the table shows the new value against an empty baseline.
    [artifact] = _artifacts(METRICS_ARTIFACT_KEY, run_id)
    assert f"| `pairs` | — | {pairs} | — |" in artifact.data
    # evaluate did not run: its committed headline is shown as the workspace's, not as this run's
    assert "`outputs/evaluate/metrics.json` (its stage did not run in this flow" in artifact.data

    git_commit_all(checkout, "baseline run")
    # Two more VidSTG test pairs, saved as a named experiment; `dvc repro pairs` pulls in the changed upstream.
    state = pipeline(
        stages=["pairs"],
        overrides=["synthesize.clips.vidstg.test=4"],
        experiment="more-vidstg",
        repo=str(checkout),
        return_state=True,
    )
    second = state.result()
    now = sum(pq.read_metadata(p).num_rows for p in (checkout / "outputs/normalize").glob("*/*.parquet"))
    assert now > pairs
    assert second["metrics_diff"]["metrics/pairs.json"] == {"pairs": {"old": pairs, "new": now, "diff": now - pairs}}
    [artifact] = _artifacts(METRICS_ARTIFACT_KEY, state.state_details.flow_run_id)
    assert f"| `pairs` | {pairs} | {now} | +{now - pairs} |" in artifact.data
    assert (
        "more-vidstg"
        in subprocess.run(
            [DVC, "exp", "list", "--name-only"], cwd=checkout, check=True, capture_output=True, text=True
        ).stdout.split()
    )


def test_sweep_flow_compares_experiments_in_one_table(checkout):
    variants = {"three": ["synthesize.clips.vidstg.test=3"], "five": ["synthesize.clips.vidstg.test=5"]}
    before = (checkout / "params.yaml").read_text()
    result = sweep(name="vidstg-size", variants=variants, targets=["pairs"], repo=str(checkout))
    assert result["experiments"] == {"three": "vidstg-size-three", "five": "vidstg-size-five"}
    assert (checkout / "params.yaml").read_text() == before  # --temp: the workspace is untouched
    rows = {line.split("|")[1].strip(): line for line in result["markdown"].splitlines() if line.startswith("| ")}
    three = int(rows["three"].split("|")[4])
    five = int(rows["five"].split("|")[4])
    assert five > three  # two more VidSTG test clips, each a sentence and a question
    assert "`synthesize.clips.vidstg.test=5`" in rows["five"]
    [artifact] = _artifacts(sweep_artifact_key("vidstg-size"))
    assert artifact.data == result["markdown"]


FANOUT_STAGE = textwrap.dedent('''
    """Toy fan-out stage: squares of 0..n-1, computed through the mapper the flow passes in."""
    import argparse
    import json
    import os


    def square(i):
        return {"i": i, "square": i * i, "pid": os.getpid()}


    def main(argv=None, *, mapper=map):
        parser = argparse.ArgumentParser()
        parser.add_argument("--n", type=int, required=True)
        parser.add_argument("--out", required=True)
        args = parser.parse_args(argv)
        rows = list(mapper(square, range(args.n)))
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump([{"i": r["i"], "square": r["square"]} for r in rows], f)


    if __name__ == "__main__":
        main()
''')


def test_task_runner_kinds():
    assert isinstance(make_task_runner("threads", 2), ThreadPoolTaskRunner)
    assert isinstance(make_task_runner("processes", 2), ProcessPoolTaskRunner)
    assert isinstance(make_task_runner("dask", 2), DaskTaskRunner)
    with pytest.raises(ValueError, match="flows.task_runner"):
        make_task_runner("ray", 2)


# Processes behave as Dask's worker processes do for this test (pickled `fn`, a fresh interpreter) but start
# slower; the Dask LocalCluster covers that path.
@pytest.mark.parametrize("runner", ["threads", "dask"])
def test_fan_out_maps_chunks_over_the_task_runner_and_commits_the_stage(tmp_path, monkeypatch, runner):
    repo = toy_repo(
        tmp_path / "repo",
        {"toy_fanout.py": FANOUT_STAGE},
        {
            "squares": {
                "cmd": "python -m toy_fanout --n 10 --out out/squares.json",
                "deps": ["toy_fanout.py"],
                "outs": ["out/squares.json"],
            }
        },
        {"flows": {"fanout": ["squares"], "task_runner": runner, "workers": 2, "chunk_size": 3}},
    )
    # The flow imports the stage module; process and Dask workers import it again to unpickle `square`.
    monkeypatch.syspath_prepend(str(repo))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))

    @flow
    def one_stage():
        return run_stage("squares", str(repo), load_flow_settings(repo))

    state = one_stage(return_state=True)
    assert state.result() == "fanout"
    assert json.loads((repo / "out/squares.json").read_text()) == [{"i": i, "square": i * i} for i in range(10)]
    with get_client(sync_client=True) as client:
        [fanout_run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [state.state_details.flow_run_id]})
        )
    chunk_runs = _task_run_names(fanout_run.id)
    assert chunk_runs == ["squares chunk 0", "squares chunk 1", "squares chunk 2", "squares chunk 3"]
    assert "squares" in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    status = subprocess.run([DVC, "status", "--json"], cwd=repo, check=True, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}
    # Up to date now: a second run does no work.
    assert one_stage() == "cached"


TRAIN_STAGE = textwrap.dedent('''
    """Toy train stage: every rank records what torchrun told it."""
    import json
    import os
    import sys

    out = sys.argv[sys.argv.index("--out") + 1]
    os.makedirs(out, exist_ok=True)
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
    with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({k: int(os.environ[k]) for k in keys}, f)
''')


def test_train_runs_under_torchrun_with_topology_from_params(tmp_path):
    repo = toy_repo(
        tmp_path / "repo",
        {"toy_train.py": TRAIN_STAGE},
        {"train": {"cmd": "python -m toy_train --out out/train", "deps": ["toy_train.py"], "outs": ["out/train"]}},
        {"flows": {"torchrun": {"nproc_per_node": 2, "nnodes": 1}}},
    )

    @flow
    def one_stage():
        return run_stage("train", str(repo), load_flow_settings(repo))

    assert one_stage() == "torchrun"
    ranks = sorted(json.loads(p.read_text())["RANK"] for p in (repo / "out/train").glob("rank*.json"))
    assert ranks == [0, 1]
    assert json.loads((repo / "out/train/rank1.json").read_text())["WORLD_SIZE"] == 2
    status = subprocess.run([DVC, "status", "--json"], cwd=repo, check=True, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}


FLAKY_STAGE = textwrap.dedent('''
    """Fails the first time it runs with the message in sys.argv[1], then succeeds."""
    import pathlib
    import sys

    attempts = pathlib.Path("attempts.txt")
    n = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(n))
    if n == 1:
        sys.exit(sys.argv[1])
    pathlib.Path("out").mkdir(exist_ok=True)
    pathlib.Path("out/done.txt").write_text("ok")
''')


@pytest.mark.parametrize(
    ("message", "attempts"), [("OSError: [Errno 5] Input/output error", 2), ("ValueError: bad record in shard 3", 1)]
)
def test_stage_retries_transient_failures_only(tmp_path, message, attempts):
    repo = toy_repo(
        tmp_path / "repo",
        {"flaky.py": FLAKY_STAGE, ".gitignore": "attempts.txt\n"},
        {"flaky": {"cmd": f"python flaky.py '{message}'", "deps": ["flaky.py"], "outs": ["out"]}},
        {"flows": {}},
    )

    @flow
    def one_stage():
        return with_retries(repro_stage, retries=3, backoff_s=0)("flaky", str(repo))

    state = one_stage(return_state=True)
    assert int((repo / "attempts.txt").read_text()) == attempts
    assert state.is_completed() == (attempts == 2)


def test_sweep_table_names_missing_experiments():
    exp_show = [{"rev": "workspace", "name": None, "data": {"params": {}, "metrics": {}}, "experiments": None}]
    with pytest.raises(KeyError, match="s-a"):
        sweep_table(exp_show, {"a": ["model.context_mode=both"]}, {"a": "s-a"})


def test_transient_failures_are_told_from_deterministic_ones():
    assert DvcCommandError(["dvc", "repro"], 1, "OSError: [Errno 116] Stale file handle").transient
    assert DvcCommandError(["dvc", "repro"], -9, "").transient  # OOM-killed or pre-empted
    assert not DvcCommandError(["dvc", "repro"], 1, "KeyError: 'boxes' in outputs/normalize").transient


def test_torchrun_argv_keeps_the_stage_command():
    single = torchrun_argv("python -m pipeline.train --shards outputs/shard", Torchrun(nproc_per_node=4), "run1")
    assert single[1:] == [
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=4",
        "--standalone",
        "-m",
        "pipeline.train",
        "--shards",
        "outputs/shard",
    ]
    multi = torchrun_argv("python -m pipeline.train", Torchrun(2, 3, "node0:29400"), "run1")
    assert "--rdzv-endpoint=node0:29400" in multi and "--nnodes=3" in multi and "--rdzv-id=run1" in multi
    with pytest.raises(ValueError, match="python -m"):
        torchrun_argv("bash train.sh", Torchrun(), "run1")


def test_flow_settings_errors_name_the_file_and_key(tmp_path):
    (tmp_path / "params.yaml").write_text("flows:\n  task_runner: ray\n")
    with pytest.raises(ValueError, match=r"params.yaml:flows.task_runner"):
        load_flow_settings(tmp_path)
    (tmp_path / "params.yaml").write_text("flows:\n  torchrun: {nproc_per_node: 0}\n")
    with pytest.raises(ValueError, match=r"flows.torchrun.nproc_per_node"):
        load_flow_settings(tmp_path)
    (tmp_path / "params.yaml").write_text("flows: {}\n")
    assert load_flow_settings(tmp_path) == FlowSettings()


def test_repository_params_have_a_valid_flows_section():
    settings = load_flow_settings(Path(__file__).resolve().parents[1])
    assert settings.task_runner in ("threads", "processes", "dask")
    assert settings.sweep, "flows.sweep should list the ICR ablation variants"


def test_gpu_job_template_renders_gpus_image_and_shared_memory():
    template = json.loads((REPO / "flows/k8s-gpu-job-template.json").read_text())
    values = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    values.update(image="registry.local/cgstvg:1", gpus=8, command="python -m prefect.engine")
    job = apply_values(template["job_configuration"], values)["job_manifest"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.local/cgstvg:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert container["env"]["HF_HUB_OFFLINE"] == "1"


def test_prefect_yaml_deploys_existing_flows_to_the_two_pools():
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    pools = {d["name"]: d["work_pool"]["name"] for d in config["deployments"]}
    assert pools == {
        "local-pipeline": "cgstvg-local",
        "local-sweep": "cgstvg-local",
        "gpu-pipeline": "cgstvg-gpu",
        "gpu-sweep": "cgstvg-gpu",
    }
    for deployment in config["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        assert f"def {name}(" in (REPO / path).read_text()
