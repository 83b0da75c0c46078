"""The training curves through DVCLive: per-row losses and learning rates, the periodic held-out validation.

Layout under the live folder (`outputs/train/live` in dvc.yaml), DVCLive's own:
- `plots/metrics/train/loss/<term>.tsv` (step, value): `total` and each weighted loss term;
- `plots/metrics/train/lr/<group>.tsv`: each AdamW parameter group's learning rate;
- `plots/metrics/val/<score>.tsv`: `m_tIoU` and `m_vIoU` of the held-out validation;
- `metrics.json`: `step` and the latest `val` scores only (the training terms are left out of it, so that
  `dvc exp show` gains two score columns, not a dozen loss ones).

DVCLive is told to write no dvc.yaml (ours declares these files) and to save no experiment (the stage runs under
`dvc repro` or `dvc exp run`, which records the experiment). Resume: a checkpoint holds every row logged up to its
step, so a resumed run starts the folder afresh (`Live(resume=False)` clears it) and logs those rows again before
it goes on. DVCLive's own `resume=True` would append after whatever the killed run wrote, steps past the checkpoint
included (logged again after the resume: duplicates), and would find nothing at all under `dvc repro`, which deletes
a stage's unpersisted outputs before it runs.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LOSS_PREFIX = "train/loss"
LR_PREFIX = "train/lr"
VAL_PREFIX = "val"


class LiveCurves:
    """A DVCLive logger of curve rows (`step`, `epoch`, `total`, terms, `lr_<group>`) and validation rows (`step`
    and scores). Rank 0 only."""

    def __init__(self, directory: str | os.PathLike):
        from dvclive import Live  # imported here: only rank 0 of a run that logs needs it

        self.live = Live(
            os.fspath(directory), resume=False, report=None, save_dvc_exp=False, dvcyaml=False, monitor_system=False
        )

    def log(self, step: int, row: Mapping[str, Any] | None, validation: Mapping[str, Any] | None) -> None:
        """The row and/or the validation scores of `step` (either may be None), then DVCLive's step end (metrics.json,
        Studio and VS Code updates)."""
        if row is None and validation is None:
            return
        self.live.step = step
        for key, value in (row or {}).items():
            if key in ("step", "epoch"):
                continue
            name = f"{LR_PREFIX}/{key.removeprefix('lr_')}" if key.startswith("lr_") else f"{LOSS_PREFIX}/{key}"
            self.live.log_metric(name, value)
        for key, value in (validation or {}).items():
            if key != "step":
                self.live.log_metric(f"{VAL_PREFIX}/{key}", value)
        self.live.summary.pop("train", None)  # losses and learning rates stay out of metrics.json
        self.live.next_step()

    def replay(self, rows: Iterable[Mapping[str, Any]], validation: Iterable[Mapping[str, Any]]) -> None:
        """Log again, in step order, the rows a checkpoint holds (a resumed run)."""
        by_step: dict[int, list[Any]] = {}
        for r in rows:
            by_step.setdefault(int(r["step"]), [None, None])[0] = r
        for v in validation:
            by_step.setdefault(int(v["step"]), [None, None])[1] = v
        for step in sorted(by_step):
            self.log(step, *by_step[step])

    def end(self) -> None:
        self.live.end()


def read_metric(directory: str | os.PathLike, name: str) -> list[tuple[int, float]]:
    """(step, value) rows of one logged metric, e.g. `train/loss/total` or `val/m_vIoU`, from a live folder."""
    path = Path(directory) / "plots" / "metrics" / f"{name}.tsv"
    column = name.rsplit("/", 1)[-1]
    with open(path, newline="") as f:
        return [(int(r["step"]), float(r[column])) for r in csv.DictReader(f, delimiter="\t")]


__all__ = ["LOSS_PREFIX", "LR_PREFIX", "VAL_PREFIX", "LiveCurves", "read_metric"]
