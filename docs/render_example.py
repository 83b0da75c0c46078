"""Render the README's example prediction: a `hard` test clip (same-colour and same-shape distractors present)
whose vIoU is the median of the hard clips, from the `evaluate` stage's predictions.

    python docs/render_example.py [--outputs outputs --out docs/example_hard_clip.gif]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default=REPO / "outputs", type=Path)
    parser.add_argument("--dataset", default="hcstvg_v1")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=REPO / "docs" / "example_hard_clip.gif", type=Path)
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq

    from pipeline.evaluate import read_ground_truth, render

    o = args.outputs
    hard = {
        c["video_id"]
        for c in pq.read_table(o / "synthesize" / "clips.parquet").to_pylist()
        if c["hard"] and c["dataset"] == args.dataset and c["split"] == args.split
    }
    rows = [r for r in pq.read_table(o / "evaluate" / "predictions.parquet").to_pylist() if r["video_id"] in hard]
    if not rows:
        raise SystemExit(f"{o}: no hard {args.dataset}/{args.split} clip among the predictions")
    row = sorted(rows, key=lambda r: (r["vIoU"], r["sample_id"]))[len(rows) // 2]
    gt = read_ground_truth(o / "normalize" / args.dataset / f"{args.split}.parquet")
    with tempfile.TemporaryDirectory() as tmp:
        (written,) = render([row], o / "shard" / args.dataset / args.split, gt, Path(tmp))
        args.out.write_bytes(written.read_bytes())
    print(f'{args.out}: {row["sample_id"]} "{row["sentence"]}" vIoU {row["vIoU"]:.3f} tIoU {row["tIoU"]:.3f}')
    return args.out


if __name__ == "__main__":
    main()
