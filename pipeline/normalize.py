"""Stage `normalize`: raw HC-STVG / VidSTG annotations -> one Parquet table of pairs per dataset and split.

    python -m pipeline.normalize --raw <raw_root> --out outputs/normalize [--params params.yaml]

Reads the `normalize` section of params.yaml (`datasets`; the splits are whatever annotation files exist),
prints `input pairs = rows + rejects` per dataset/split and fails if a line does not hold. A malformed
annotation file stops the stage with a message naming the file and the record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cgstvg.data.normalize import normalize, reconciliation, write_outputs
from cgstvg.data.raw_json import AnnotationError
from cgstvg.utils.params import load_params, section
from pipeline import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True, type=Path, help="raw-data root (the documented layout)")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. outputs/normalize")
    parser.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args(argv)

    params = section(load_params(args.params), "normalize", args.params)
    try:
        results = normalize(args.raw, list(params["datasets"]), progress=sys.stderr.isatty())
    except (AnnotationError, FileNotFoundError) as err:
        raise SystemExit(f"normalize: {err}") from err
    lines, ok = reconciliation(results)
    print("\n".join(lines))
    if not ok:
        raise SystemExit("normalize: input pairs != rows + rejects for the splits marked MISMATCH; nothing written")
    write_outputs(results, args.out)
    rows = sum(len(r.rows) for r in results)
    rejects = sum(len(r.rejects) for r in results)
    print(f"normalize: wrote {rows} rows and {rejects} rejects to {args.out}")


if __name__ == "__main__":
    run_stage("normalize", main)
