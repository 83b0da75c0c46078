"""Run a DVC stage's own command under `torchrun` (multi-GPU, multi-node), then record it with `dvc commit`.

`dvc repro` runs a stage's `cmd` exactly as written in dvc.yaml (`python -m pipeline.train ...`). To train on
several GPUs the flow runs that same command with `python` replaced by `python -m torch.distributed.run`
(torchrun, from the same interpreter) and then `dvc commit`s the stage, so dvc.lock and the cache end up as after
`dvc repro`. Only rank 0 writes outputs (`cgstvg.engine.distributed`), so the committed outputs are rank 0's.

Multi-node: this process is one node; with `nnodes > 1` torchrun waits at `rdzv_endpoint` until the other
nodes start the same command (a JobSet or PyTorchJob launches them; the Kubernetes work pool runs one pod).
"""

from __future__ import annotations

import os
import shlex
import sys

from prefect import task
from prefect.runtime import flow_run

from flows.dvc_tasks import run_streaming
from flows.settings import Torchrun


def stage_command(stage: str, repo: str | os.PathLike) -> str:
    """The stage's `cmd` from dvc.yaml with `${...}` templating resolved by DVC itself."""
    from dvc.repo import Repo

    # An absolute `dvc.yaml:stage` target: DVC resolves a bare name against the current directory.
    with Repo(os.fspath(repo)) as dvc_repo:
        stages = dvc_repo.stage.collect(f"{os.path.join(os.fspath(repo), 'dvc.yaml')}:{stage}")
    if len(stages) != 1:
        raise ValueError(f"{repo}/dvc.yaml: expected one stage named {stage!r}, found {len(stages)}")
    cmd = stages[0].cmd
    if isinstance(cmd, list):
        if len(cmd) != 1:
            raise ValueError(f"{repo}/dvc.yaml: stage {stage!r} has {len(cmd)} commands; torchrun launches one")
        cmd = cmd[0]
    return cmd


def torchrun_argv(cmd: str, torchrun: Torchrun, run_id: str, *, stage: str = "train") -> list[str]:
    """argv that runs `cmd` (which must be `python -m <module> ...`) under torchrun with `torchrun`'s topology."""
    argv = shlex.split(cmd)
    if len(argv) < 3 or argv[0] not in ("python", "python3") or argv[1] != "-m":
        raise ValueError(
            f"dvc.yaml: stage {stage!r} cmd must be `python -m <module> ...` to run under torchrun: {cmd!r}"
        )
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={torchrun.nnodes}",
        f"--nproc-per-node={torchrun.nproc_per_node}",
    ]
    if torchrun.nnodes == 1:
        # One node: a private rendezvous on a free port, so parallel runs on one machine do not collide.
        launch.append("--standalone")
    else:
        launch += ["--rdzv-backend=c10d", f"--rdzv-endpoint={torchrun.rdzv_endpoint}", f"--rdzv-id={run_id}"]
    return launch + argv[1:]


@task(task_run_name="torchrun {stage}")
def torchrun_stage(stage: str, repo: str, torchrun: Torchrun) -> str:
    """Run the stage's command under torchrun in `repo`; the caller commits the stage afterwards."""
    run_id = flow_run.get_id() or "cgstvg"
    return run_streaming(torchrun_argv(stage_command(stage, repo), torchrun, str(run_id), stage=stage), repo)
