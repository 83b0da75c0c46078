"""The sweep flow: one `dvc exp run -S ...` per variant, then one comparison table from `dvc exp show --json`.

    python -m flows.sweep                      # the variants in params.yaml `flows.sweep` (the ICR ablation)
    python -m flows.sweep --name icr-ablation

Each variant runs as a DVC experiment in a temporary copy of the repository (`dvc exp run --temp`), so the
workspace stays as it was and stages that a variant does not change come from the DVC cache. Variants run one
after another: they compete for the same GPU(s), and each experiment is a full pipeline run. Inside
`dvc exp run` each stage runs its dvc.yaml command as written, so `train` runs as one process (no torchrun).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from prefect import flow

from flows.artifacts import publish_sweep, sweep_table
from flows.dvc_tasks import check_param_overrides, exp_push, exp_run, exp_show, with_retries
from flows.settings import load_flow_settings

REPO = Path(__file__).resolve().parents[1]


def experiment_name(sweep: str, variant: str) -> str:
    """`<sweep>-<variant>`, reduced to the characters git allows in a ref name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{sweep}-{variant}").strip("-.")


@flow(name="cgstvg-sweep", log_prints=True)
def sweep(
    name: str = "sweep",
    variants: dict[str, list[str]] | None = None,
    targets: list[str] | None = None,
    push_after: bool = False,
    git_remote: str = "origin",
    repo: str | None = None,
) -> dict[str, Any]:
    """Run each variant as a DVC experiment, then compare them in one table.

    Returns the experiment names and the markdown table published as the `cgstvg-sweep-<name>` artifact.

    Args:
        name: prefix of the experiment names (`<name>-<variant>`) and of the artifact.
        variants: variant name -> its `section.key=value` overrides (default: `flows.sweep` of params.yaml, the
            paper's Table 4 ICG/ICR ablation); every override is checked before the first experiment starts.
        targets: limit each experiment to these stages (default: the whole pipeline).
        push_after: send each experiment to `git_remote` and the DVC remote (`dvc exp push`).
        git_remote: the git remote experiments are pushed to.
        repo: the repository to run in (default: the one this module belongs to).
    """
    root = str(Path(repo or REPO).resolve())
    settings = load_flow_settings(root)
    variants = dict(variants if variants is not None else settings.sweep)
    if not variants:
        raise ValueError(f"{root}/params.yaml: flows.sweep lists no variants and none were passed")
    for overrides in variants.values():  # every variant's overrides, before the first experiment starts
        check_param_overrides(overrides, root)
    names = {variant: experiment_name(name, variant) for variant in variants}
    # A variant that dies on a pre-empted node or a flaky disk is rerun like the `train` stage.
    run = with_retries(exp_run, settings.retries.get("train", 0), settings.retry_backoff_s)
    for variant, overrides in variants.items():
        run(names[variant], overrides, root, targets)
    markdown = sweep_table(exp_show(root), variants, names)
    publish_sweep(name, markdown)
    if push_after:
        for experiment in names.values():
            exp_push(git_remote, experiment, root)
    return {"experiments": names, "markdown": markdown}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the params.yaml `flows.sweep` variants as DVC experiments.")
    parser.add_argument("--name", default="sweep", help="sweep name, the prefix of each experiment name")
    parser.add_argument("--targets", nargs="+", help="stages each experiment runs (default: all)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _parse()
    sweep(name=args.name, targets=args.targets)
