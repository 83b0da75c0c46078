"""Stage `shard`: normalized Parquet tables + videos -> WebDataset shards, one folder per dataset and split.

    python -m pipeline.shard --normalized outputs/normalize --raw <raw_root> --out outputs/shard [--params params.yaml]

Reads the `shard` section of params.yaml. For every `<normalized>/<dataset>/<split>.parquet` it writes
`<out>/<dataset>/<split>/shard-*.tar`, `manifest.json` and `rejects.parquet` (see `cgstvg.data.shard_writer`), and
`<out>/summary.json` with the counts of every split. Reruns keep the shards that still match (an interrupted run
resumes); folders of splits that are no longer in the input are removed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq

from cgstvg.data.schema import DATASETS
from cgstvg.data.shard_writer import ShardConfig, encode_task, plan_shards, write_shards, write_split
from cgstvg.utils.atomic import write_json
from cgstvg.utils.params import load_params, section
from pipeline import run_stage


def find_tables(normalized: Path) -> list[tuple[str, str, Path]]:
    """(dataset, split, path) of every normalized table, in a fixed order."""
    found = []
    for dataset in DATASETS:
        for path in sorted((normalized / dataset).glob("*.parquet")):
            found.append((dataset, path.stem, path))
    return found


def shard_split(table, raw_root: Path, out_dir: Path, cfg: ShardConfig, *, progress: bool, mapper=None) -> dict:
    """One split: with `mapper(fn, items)` (an ordered map, see `main`) the videos are decoded through it, else in
    the writer's own process pool; the bytes written are the same."""
    if mapper is None:
        return write_split(table, raw_root, out_dir, cfg, progress=progress)
    work = plan_shards(table, raw_root, out_dir, cfg)
    return write_shards(work, mapper(encode_task, work.tasks), progress=progress)


def shard(normalized: Path, raw_root: Path, out: Path, cfg: ShardConfig, *, progress: bool, mapper=None) -> dict:
    tables = find_tables(normalized)
    if not tables:
        raise FileNotFoundError(f"{normalized}: no <dataset>/<split>.parquet tables (datasets: {', '.join(DATASETS)})")
    summary = {}
    for dataset, split, path in tables:
        manifest = shard_split(
            pq.read_table(path), raw_root, out / dataset / split, cfg, progress=progress, mapper=mapper
        )
        summary[f"{dataset}/{split}"] = {k: manifest[k] for k in ("samples", "rejected", "bytes")} | {
            "shards": len(manifest["shards"])
        }
        print(
            f"shard: {dataset}/{split}: {manifest['samples']} samples in {len(manifest['shards'])} shards, "
            f"{manifest['rejected']} rejected, {manifest['bytes'] / 2**20:.1f} MiB"
        )
    expected = {out / d / s for d, s, _ in tables}
    for stale in out.glob("*/*"):  # the stage owns `out`: drop splits whose table is gone
        if stale.is_dir() and stale not in expected:
            shutil.rmtree(stale)
    write_json(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None, *, mapper=None) -> None:
    """Run the stage. `mapper(fn, items)`, an ordered map (flows/fanout.py passes one that runs Prefect tasks), decodes
    the videos instead of the writer's process pool."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normalized", required=True, type=Path, help="normalize output, e.g. outputs/normalize")
    parser.add_argument("--raw", required=True, type=Path, help="raw-data root the table's video_path is relative to")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. outputs/shard")
    parser.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args(argv)
    cfg = ShardConfig.from_params(section(load_params(args.params), "shard", args.params))
    try:
        shard(args.normalized, args.raw, args.out, cfg, progress=sys.stderr.isatty(), mapper=mapper)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise SystemExit(f"shard: {err}") from err


if __name__ == "__main__":
    run_stage("shard", main)
