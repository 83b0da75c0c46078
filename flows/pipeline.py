"""The pipeline flow: the DVC stages as Prefect tasks, then the run's `dvc metrics diff` as a markdown artifact.

    python -m flows.pipeline                                   # every stage of dvc.yaml, like `dvc repro`
    python -m flows.pipeline --stages synthesize normalize     # some stages (each pulls in what it depends on)
    python -m flows.pipeline --set train.epochs=2 --name short # overrides, recorded as a DVC experiment
    python -m flows.pipeline --set train.optim.lr=1e-4 --set model.context_mode=none --name lr-ctx

Each stage is one `dvc repro <stage>` task (a no-op when DVC has it cached), in dvc.yaml order. Two stages may
run differently, both ending in `dvc commit` so dvc.lock and the cache are as after `dvc repro`:
- a stage listed in `flows.fanout` has its per-item work mapped over Prefect tasks (flows/fanout.py);
- `train` runs under torchrun when `flows.torchrun` asks for more than one process (flows/launch.py).
Overrides are checked first (a key params.yaml lacks, or a value its schema refuses, is one line naming it, and
nothing is written), then applied to params.yaml with DVC's own `-S` code; with overrides or a name the result is
saved as a DVC experiment (`dvc exp run -n <name>` once the stages are up to date), so `dvc exp show`,
`dvc exp push` and `dvc exp apply` see it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.artifacts import publish_metrics_diff
from flows.dvc_tasks import (
    OverrideError,
    apply_param_overrides,
    check_param_overrides,
    commit_stage,
    dvc_json,
    exp_push,
    exp_record,
    metrics_diff,
    pipeline_stages,
    pull,
    push,
    repro_stage,
    stage_metrics_files,
    with_retries,
)
from flows.fanout import run_fan_out, supports_fan_out
from flows.launch import torchrun_stage
from flows.settings import FlowSettings, load_flow_settings

REPO = Path(__file__).resolve().parents[1]


def _changed_stages(stage: str, repo: str) -> list[str]:
    """Stages out of date among `stage` and everything upstream of it (`dvc status --with-deps`)."""
    status = dvc_json(["status", "--with-deps", stage], repo)
    return [name.split(":")[-1] for name in status]


def run_stage(stage: str, repo: str, settings: FlowSettings) -> str:
    """Run one stage the way the settings ask; returns how it ran ('repro', 'fanout', 'torchrun' or 'cached')."""
    retries, backoff = settings.retries.get(stage, 0), settings.retry_backoff_s
    fanout = stage in settings.fanout
    if fanout and not supports_fan_out(stage, repo):
        get_run_logger().warning(
            "flows.fanout lists %r but its module has no main(argv, *, mapper): running `dvc repro %s` unmapped",
            stage,
            stage,
        )
        fanout = False
    torchrun = stage == "train" and settings.torchrun.world_size > 1
    if not (fanout or torchrun):
        with_retries(repro_stage, retries, backoff)(stage, repo)
        return "repro"
    changed = _changed_stages(stage, repo)
    upstream = [name for name in changed if name != stage]
    # Upstream stages go through `dvc repro` first, so the launch below reads current inputs.
    for name in upstream:
        repro_stage(name, repo)
    if upstream:
        changed = _changed_stages(stage, repo)
    if stage not in changed:
        return "cached"
    if fanout:
        run_fan_out(stage, repo, settings)
    else:
        with_retries(torchrun_stage, retries, backoff)(stage, repo, settings.torchrun)
    commit_stage(stage, repo)
    return "fanout" if fanout else "torchrun"


@flow(name="cgstvg-pipeline", log_prints=True)
def pipeline(
    stages: list[str] | None = None,
    overrides: list[str] | None = None,
    experiment: str | None = None,
    baseline: str | None = None,
    pull_first: bool = False,
    push_after: bool = False,
    git_remote: str = "origin",
    repo: str | None = None,
) -> dict[str, Any]:
    """Run DVC stages with params overrides, then publish the metrics diff against a baseline rev.

    Returns how each stage ran and the metrics diff. (The Args below are what the Prefect UI shows beside each
    parameter of a deployment run.)

    Args:
        stages: dvc.yaml stages to run, in pipeline order (default: all of them).
        overrides: params.yaml overrides `section.key=value`, as `dvc exp run -S` takes them; a key that
            params.yaml lacks, or a value its schema refuses, stops the run before anything is written.
        experiment: save the run as a DVC experiment of this name (`dvc exp show`, `dvc exp apply`).
        baseline: git rev the metrics are compared against (default `flows.baseline` of params.yaml, i.e. HEAD).
        pull_first: on a cluster pod, first fetch what the DVC remote already has, so cached stages are skipped.
        push_after: upload the results afterwards (`dvc push`, plus `dvc exp push` for an experiment).
        git_remote: the git remote experiments are pushed to.
        repo: the repository to run in (default: the one this module belongs to).
    """
    root = str(Path(repo or REPO).resolve())
    overrides = list(overrides or [])
    if pull_first:
        pull(root)
    if overrides:
        apply_param_overrides(overrides, root)
    settings = load_flow_settings(root)
    known = pipeline_stages(root)
    unknown = [s for s in stages or [] if s not in known]
    if unknown:
        raise ValueError(f"{root}/dvc.yaml: no stage {unknown}; stages are {known}")
    ran = {stage: run_stage(stage, root, settings) for stage in known if not stages or stage in stages}
    if overrides or experiment:
        exp_record(experiment, list(ran), root)
    rev = baseline or settings.baseline
    diff = metrics_diff(rev, root)
    stale = [path for path, stage in stage_metrics_files(root).items() if stage not in ran]
    markdown = publish_metrics_diff(diff, rev, stale)
    if push_after:
        push(root)
        if experiment:
            exp_push(git_remote, experiment, root)
    return {"stages": ran, "metrics_diff": diff, "markdown": markdown}


SET_EXAMPLE = "train.optim.lr=1e-4"
# The usage lines of the module docstring (each `python -m flows.pipeline ...`), shown by --help.
EXAMPLES = "\n".join(line for line in __doc__.splitlines() if line.lstrip().startswith("python -m flows.pipeline"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.pipeline",
        description="Run the DVC pipeline as a Prefect flow.",
        epilog="examples:\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stages", nargs="+", help="stages to run (default: all of dvc.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a params.yaml key (dotted, as `dvc exp run -S`), e.g. {SET_EXAMPLE}; repeatable",
    )
    parser.add_argument("--name", dest="experiment", help="save the run as a DVC experiment with this name")
    parser.add_argument("--baseline", help="git rev to diff metrics against (default: flows.baseline)")
    parser.add_argument("--pull-first", action="store_true", help="`dvc pull` before the stages")
    parser.add_argument("--push-after", action="store_true", help="`dvc push` (and `dvc exp push`) afterwards")
    return parser


def _parse(argv: list[str] | None = None, repo: str | Path = REPO) -> argparse.Namespace:
    """The command line, with the `--set` overrides checked against params.yaml (nothing is written): a bad one
    exits with one line naming it, before any Prefect server or stage starts."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        check_param_overrides(args.overrides, repo)
    except OverrideError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return args


if __name__ == "__main__":
    args = _parse()
    pipeline(
        stages=args.stages,
        overrides=args.overrides,
        experiment=args.experiment,
        baseline=args.baseline,
        pull_first=args.pull_first,
        push_after=args.push_after,
    )
