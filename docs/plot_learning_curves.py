"""Draw the README's `docs/learning_curves/box_losses.png` from the loss curves in `docs/learning_curves/*.csv`.

    python docs/plot_learning_curves.py [--curves docs/learning_curves --out docs/learning_curves/box_losses.png]

Each CSV is a `train` stage loss curve of one run (step, epoch, total and the weighted loss terms, each summed over
the decoding stages), archived from the former `outputs/train/plots/loss.csv`; a newer run's curves are DVCLive's
`outputs/train/live/plots/metrics/train/loss/<term>.tsv` (`live_to_csv` makes such a CSV of them).
The runs used different loss weights, so every term
is divided by its weight and by the number of stages: the panels show one stage's unweighted box L1, GIoU and
start/end KL, comparable across runs (the KL is over 32 frames in the default and 16 in the other run, so its
level is not). Headless: matplotlib's Agg backend, no display needed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = 3  # decoder stages whose terms each CSV row sums (model.dec_layers of both runs; aux_loss on)

# CSV file name -> legend label and the loss weights of that run (params.yaml model.loss.weights then).
RUNS = {
    "default_450_steps.csv": {
        "label": "default (release switches, 32 frames), 450 steps",
        "weights": {"loss_bbox": 5.0, "loss_giou": 4.0, "loss_sted": 10.0},
    },
    "small_run_aids_1200_steps.csv": {
        "label": "small-run aids (coords, text queries, anchor refine, 2 heads, 16 frames), 1200 steps",
        "weights": {"loss_bbox": 5.0, "loss_giou": 2.0, "loss_sted": 2.0},
    },
}
PANELS = {
    "loss_bbox": "box L1 (per stage, unweighted)",
    "loss_giou": "GIoU loss (per stage, unweighted)",
    "loss_sted": "start/end KL (per stage, unweighted)",
}


def read_curve(path: Path) -> dict[str, list[float]]:
    """Columns of one loss CSV as float lists."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = [c for c in ("step", *PANELS) if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: no column {missing} (columns: {list(rows[0])})")
    return {c: [float(r[c]) for r in rows] for c in rows[0]}


def live_to_csv(live: Path, out: Path) -> Path:
    """A `train` DVCLive folder's loss curves as one CSV in the layout above (step, total, the terms)."""
    folder = live / "plots" / "metrics" / "train" / "loss"
    columns: dict[str, dict[int, str]] = {}
    for tsv in sorted(folder.glob("*.tsv")):
        with open(tsv, newline="") as f:
            columns[tsv.stem] = {int(r["step"]): r[tsv.stem] for r in csv.DictReader(f, delimiter="\t")}
    if not columns:
        raise ValueError(f"{folder}: no loss curves")
    names = sorted(columns, key=lambda c: (c != "total", c))
    steps = sorted(set().union(*columns.values()))
    with open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["step", *names])
        writer.writerows([step, *(columns[c].get(step, "") for c in names)] for step in steps)
    return out


def plot(curves: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(12, 3.5), dpi=100)
    for name, run in RUNS.items():
        curve = read_curve(curves / name)
        for ax, term in zip(axes, PANELS):
            scale = run["weights"][term] * STAGES
            ax.plot(curve["step"], [v / scale for v in curve[term]], label=run["label"], linewidth=1.3)
    for ax, title in zip(axes, PANELS.values()):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(RUNS), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    # No timestamp or software version in the file, so reruns on the same matplotlib are byte-identical.
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", default=REPO / "docs" / "learning_curves", type=Path)
    parser.add_argument("--out", default=REPO / "docs" / "learning_curves" / "box_losses.png", type=Path)
    args = parser.parse_args(argv)
    return plot(args.curves, args.out)


if __name__ == "__main__":
    print(main())
