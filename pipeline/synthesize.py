"""Stage `synthesize`: write the embedded synthetic STVG dataset in the real raw formats.

    python -m pipeline.synthesize --out outputs/synthesize [--params params.yaml] [--workers 2]

Reads the `synthesize` section of params.yaml and builds the whole tree in a temporary sibling of `--out`, which
replaces `--out` only once everything is written (an interrupted run leaves the old output untouched).
"""

from __future__ import annotations

import argparse
import json
import time

from cgstvg.data.synthetic import SynthesizeConfig, write_synthetic_dataset
from cgstvg.utils.atomic import atomic_path
from cgstvg.utils.params import load_params, section
from pipeline import run_stage


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    parser.add_argument("--params", default="params.yaml", help="params file with a `synthesize` section")
    parser.add_argument("--workers", type=int, default=2, help="processes that generate and encode clips")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    config = SynthesizeConfig.from_params(section(load_params(args.params), "synthesize", args.params), args.params)
    start = time.perf_counter()
    with atomic_path(args.out, is_dir=True) as tmp:
        summary = write_synthetic_dataset(tmp, config, workers=args.workers, progress=not args.no_progress)
    clips = sum(n for splits in summary["clips"].values() for n in splits.values())
    print(f"synthesize: {clips} clips in {time.perf_counter() - start:.1f} s -> {args.out}")
    print(json.dumps(summary["clips"]))
    return summary


if __name__ == "__main__":
    run_stage("synthesize", main)
