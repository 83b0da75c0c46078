"""Render the README's example prediction: a `hard` test clip (same-colour and same-shape distractors present)
whose vIoU is the median of the hard clips, from the `evaluate` stage's predictions.

    python docs/render_example.py [--outputs outputs --out docs/example_hard_clip.gif --fps 4]

It writes the animation (GIF or mp4, by the extension), one stored frame per step, boxes and segment markers drawn
as `evaluate`'s renders draw them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default=REPO / "outputs", type=Path)
    parser.add_argument("--dataset", default="hcstvg_v1")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=REPO / "docs" / "example_hard_clip.gif", type=Path)
    parser.add_argument("--fps", default=4.0, type=float, help="frames per second of the animation")
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq

    from cgstvg.data.shard_reader import iter_split_samples
    from cgstvg.visualize import write_video
    from pipeline.evaluate import draw_sample, read_ground_truth

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
    # `evaluate`'s renders are still contact sheets (DVCLive keeps one frame of a GIF); this one is the animation
    for sample in iter_split_samples(o / "shard" / args.dataset / args.split):
        if sample["__key__"] == row["sample_id"]:
            write_video(args.out, draw_sample(row, sample, gt[row["sample_id"]]), fps=args.fps)
            break
    else:
        raise SystemExit(f"{o}: sample {row['sample_id']} is not in the {args.dataset}/{args.split} shards")
    print(f'{args.out}: {row["sample_id"]} "{row["sentence"]}" vIoU {row["vIoU"]:.3f} tIoU {row["tIoU"]:.3f}')
    return args.out


if __name__ == "__main__":
    main()
