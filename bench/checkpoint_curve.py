"""Held-out learning curve of a training run: each kept checkpoint's EMA weights scored like `evaluate`.

    python bench/checkpoint_curve.py [--params params.yaml --out docs/learning_curves/train_heldout.csv]

Reads every `outputs/train/checkpoints/step_*.pt` (the default keeps all of them: `train.keep_checkpoints`),
writes its EMA weights as a grounding checkpoint in a temporary folder and runs the `evaluate` stage's code on it
(`evaluate.split`, `evaluate.protocol`, the release's metric). Writes one CSV row per checkpoint (step, m_tIoU,
m_vIoU, vIoU@0.3, vIoU@0.5, and the hard subset's m_vIoU) and prints, last, one JSON object with the rows.
The split is the test split (the synthetic HC-STVG-v1 has no validation split): the curve shows learning, it
selects nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=REPO / "params.yaml", type=Path)
    parser.add_argument("--outputs", default=REPO / "outputs", type=Path)
    parser.add_argument("--out", default=REPO / "docs" / "learning_curves" / "train_heldout.csv", type=Path)
    args = parser.parse_args(argv)

    from cgstvg.engine.checkpoint import list_checkpoints, load_checkpoint
    from cgstvg.inference.checkpoint import GroundingParams, save_grounding_checkpoint
    from cgstvg.utils.params import load_params
    from pipeline import evaluate
    from pipeline.train import ground_protocol

    params = load_params(args.params)
    dataset = params["train"]["dataset"]
    o = args.outputs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for step, path in list_checkpoints(o / "train" / "checkpoints"):
            state = load_checkpoint(path)
            ema = {k.removeprefix("module."): v for k, v in state["model_ema"].items() if k.startswith("module.")}
            model = Path(tmp) / f"step_{step}.pt"
            save_grounding_checkpoint(
                model,
                ema,
                GroundingParams.from_params_yaml(
                    params, dataset, protocol=ground_protocol(params), where=str(args.params)
                ),
                o / "extract" / "tokenizer",
                step=step,
            )
            metrics = evaluate.main(
                [
                    "--normalized",
                    str(o / "normalize"),
                    "--shards",
                    str(o / "shard"),
                    "--features",
                    str(o / "extract"),
                    "--model",
                    str(model),
                    "--out",
                    str(Path(tmp) / f"eval_{step}"),
                    "--params",
                    str(args.params),
                    "--clips",
                    str(o / "synthesize" / "clips.parquet"),
                ]
            )
            m = metrics["model"]
            rows.append(
                {
                    "step": step,
                    **{k: round(m[k], 4) for k in ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5")},
                    "hard_m_vIoU": round(metrics.get("subsets", {}).get("hard", {}).get("m_vIoU", float("nan")), 4),
                }
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
