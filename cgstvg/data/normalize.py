"""The normalize stage: every requested dataset and split -> one table of pairs, one of rejects, statistics.

Outputs under `out_dir` (written as one directory swap, so a failed run leaves the previous outputs intact):
    <dataset>/<split>.parquet          `SAMPLE_SCHEMA` rows sorted by sample_id
    rejects.parquet                    `REJECT_SCHEMA` rows of every dataset and split, sorted
    stats.json                         DVC metrics: counts per dataset, split, qtype and reject reason;
                                       tube-length (frames) and box-size (pixels) summaries
    plots/tube_length/<dataset>-<split>.csv   tube-length quantiles for `dvc plots`

Every pair of the input ends in exactly one of the two tables: `reconciliation` checks
`input pairs == rows + rejects` per dataset and split. The same input gives byte-identical files.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from cgstvg.data import hcstvg, vidstg
from cgstvg.data.pairs import SplitPairs
from cgstvg.data.schema import DATASETS, QTYPES, SAMPLE_SCHEMA, reject_table
from cgstvg.utils.atomic import atomic_path, write_json, write_parquet

QUANTILES = np.linspace(0.0, 1.0, 101)


def find_splits(raw_root: Path, dataset: str) -> list[tuple[str, Path]]:
    """(split, annotation file) pairs of one dataset; an error if there are none."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}' in normalize.datasets (known: {', '.join(DATASETS)})")
    if dataset == "vidstg":
        found, pattern = vidstg.annotation_files(raw_root), f"vidstg/sent_annos/*{vidstg.SUFFIX}"
    else:
        found, pattern = hcstvg.annotation_files(raw_root, dataset), f"{dataset}/annos/*.json"
    if not found:
        raise FileNotFoundError(
            f"{raw_root}: no annotation files {pattern}; add them or remove '{dataset}' from normalize.datasets"
        )
    return found


def normalize(raw_root: str | Path, datasets: list[str], *, progress: bool = False) -> list[SplitPairs]:
    """Read every split of every dataset in `datasets` (in that order, splits sorted by name)."""
    raw_root = Path(raw_root)
    if len(set(datasets)) != len(datasets):
        raise ValueError(f"normalize.datasets lists a dataset twice: {datasets}")
    results = []
    for dataset in datasets:
        for split, file in find_splits(raw_root, dataset):
            if dataset == "vidstg":
                results.append(vidstg.read_split(raw_root, split, file, progress=progress))
            else:
                results.append(hcstvg.read_split(raw_root, dataset, split, file))
    return results


def reconciliation(results: list[SplitPairs]) -> tuple[list[str], bool]:
    """One line per dataset/split, `input pairs = rows + rejects`, and whether every line holds."""
    lines = []
    for r in results:
        reasons = Counter(reject["reason"] for reject in r.rejects)
        detail = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
        verdict = "ok" if r.reconciles else "MISMATCH"
        lines.append(
            f"{r.dataset}/{r.split}: {r.pairs_in} input pairs = {len(r.rows)} rows + {len(r.rejects)} rejects"
            f"{f' ({detail})' if detail else ''}: {verdict}"
        )
    return lines, all(r.reconciles for r in results)


def samples_table(rows: list[dict]) -> pa.Table:
    """`SAMPLE_SCHEMA` table sorted by sample_id. Each row's "boxes" is a float32 array of shape (N, 4).

    The boxes column is built from one flat array (offsets + values) rather than by `Table.from_pylist`, which
    would box every coordinate as a Python float (millions for VidSTG).
    """
    rows = sorted(rows, key=lambda row: row["sample_id"])
    lengths = np.array([len(row["boxes"]) for row in rows], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate([row["boxes"] for row in rows]).reshape(-1) if rows else np.zeros(0, np.float32)
    boxes = pa.ListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(pa.array(flat), 4))
    arrays = [
        boxes if f.name == "boxes" else pa.array([row[f.name] for row in rows], type=f.type) for f in SAMPLE_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=SAMPLE_SCHEMA)


def rejects_table(results: list[SplitPairs]) -> pa.Table:
    rows = [reject for r in results for reject in r.rejects]
    order = ("dataset", "split", "sample_id", "source", "reason", "message")
    return reject_table(sorted(rows, key=lambda row: tuple(row[k] for k in order)))


def _summary(values: np.ndarray) -> dict[str, float]:
    return {
        "min": round(float(values.min()), 4),
        "median": round(float(np.median(values)), 4),
        "mean": round(float(values.mean()), 4),
        "max": round(float(values.max()), 4),
    }


def split_statistics(r: SplitPairs) -> dict:
    """Counts (pairs in, rows per qtype, rejects per reason) and, when rows exist, tube/box summaries."""
    reasons = Counter(reject["reason"] for reject in r.rejects)
    qtypes = Counter(row["qtype"] for row in r.rows)
    stats = {
        "pairs_in": r.pairs_in,
        "rows": len(r.rows),
        "rejects": len(r.rejects),
        "rows_by_qtype": {q: qtypes[q] for q in QTYPES},
        "rejects_by_reason": dict(sorted(reasons.items())),  # reasons that occurred; absent means zero
    }
    if r.rows:
        boxes = np.concatenate([row["boxes"] for row in r.rows]).astype(np.float64)
        stats["tube_length"] = _summary(np.array([row["tube_end"] - row["tube_start"] + 1 for row in r.rows]))
        stats["box_width"] = _summary(boxes[:, 2] - boxes[:, 0])
        stats["box_height"] = _summary(boxes[:, 3] - boxes[:, 1])
    return stats


def statistics(results: list[SplitPairs]) -> dict:
    """`{dataset: {split: split_statistics}, "total": {pairs_in, rows, rejects}}` for stats.json."""
    stats: dict = {}
    for r in results:
        stats.setdefault(r.dataset, {})[r.split] = split_statistics(r)
    stats["total"] = {
        "pairs_in": sum(r.pairs_in for r in results),
        "rows": sum(len(r.rows) for r in results),
        "rejects": sum(len(r.rejects) for r in results),
    }
    return stats


def tube_length_quantiles(rows: list[dict]) -> list[tuple[float, int]]:
    """(quantile, tube length in frames) at 101 evenly spaced quantiles: a size-independent curve per split."""
    lengths = np.array([row["tube_end"] - row["tube_start"] + 1 for row in rows])
    values = np.quantile(lengths, QUANTILES, method="inverted_cdf")
    return [(round(float(q), 2), int(v)) for q, v in zip(QUANTILES, values)]


def write_outputs(results: list[SplitPairs], out_dir: str | Path) -> None:
    """Write the tables, stats.json and plot data; the directory is swapped in whole when all are written."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        for r in results:
            write_parquet(tmp / r.dataset / f"{r.split}.parquet", samples_table(r.rows))
            if r.rows:
                plot = tmp / "plots" / "tube_length" / f"{r.dataset}-{r.split}.csv"
                plot.parent.mkdir(parents=True, exist_ok=True)
                with plot.open("w", newline="") as f:
                    writer = csv.writer(f, lineterminator="\n")
                    writer.writerow(["quantile", "tube_length"])
                    writer.writerows(tube_length_quantiles(r.rows))
        write_parquet(tmp / "rejects.parquet", rejects_table(results))
        write_json(tmp / "stats.json", statistics(results))


__all__ = [
    "find_splits",
    "normalize",
    "reconciliation",
    "rejects_table",
    "samples_table",
    "split_statistics",
    "statistics",
    "tube_length_quantiles",
    "write_outputs",
]
