"""Stage `pretrain_grounding`: image-level grounding on synthetic frames, the analogue of the release's MDETR init.

    python -m pipeline.pretrain_grounding --normalized outputs/normalize --out outputs/pretrain_grounding \
        [--params params.yaml]

Reads `synthesize` (the scene generator's settings), `model` (the sizes; `pretrain_grounding.model` overrides
keys for pretraining, e.g. no context, which MDETR does not have) and `pretrain_grounding`. Trains the appearance
CNN, the text encoder, the input projection, the multimodal encoder and the spatial decoder with its box head on
frames of the generator's own `pretrain` clips (never an STVG clip; `cgstvg.data.synthetic.grounding_frames`),
then writes (atomically):
- `<out>/mdetr.pth`: those modules in MDETR's key layout (`{"model": state_dict}`), which `train` loads through
  the same path as a downloaded MDETR checkpoint (`model.init.grounding`);
- `<out>/tokenizer/`: the tokenizer it trained with, built from the training sentences of the normalized tables
  exactly as `extract` builds its own (`train` checks that both are the same);
- `<out>/curve.csv`: step, loss, learning rate and, every `eval_every` steps, the held-out mean IoU;
- `<out>/summary.json`: steps, seconds, final held-out IoU, sample counts.

When `model.init.grounding` does not name this stage's output (a real MDETR file, or null for random weights), the
stage trains nothing: it writes only `summary.json` saying so, in about a second.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from cgstvg.data.synthetic import SynthesizeConfig
from cgstvg.data.synthetic.grounding_frames import grounding_frames
from cgstvg.engine.pretrain_grounding import PretrainSettings, pretrain_grounding
from cgstvg.model.cgstvg import build_cgstvg
from cgstvg.model.convert import to_mdetr_state_dict
from cgstvg.model.tokenizer import build_tokenizer
from cgstvg.utils.atomic import atomic_path, write_json
from cgstvg.utils.params import load_params, section
from pipeline import run_stage

OUTPUT_NAME = "mdetr.pth"
TRAIN_SPLITS = ("train",)
# Keys of the section that are not `PretrainSettings` fields.
DATA_KEYS = ("train_clips", "val_clips", "frames_per_clip", "threads", "model")


def training_sentences(normalized: Path) -> list[str]:
    """Every training sentence of the normalized tables (the set `extract` builds its tokenizer from)."""
    sentences = []
    for table in sorted(normalized.glob("*/*.parquet")):
        if table.stem in TRAIN_SPLITS:
            sentences += pq.read_table(table, columns=["sentence"]).column("sentence").to_pylist()
    if not sentences:
        raise FileNotFoundError(f"{normalized}: no training split (*/train.parquet) to build the tokenizer from")
    return sentences


def uses_this_stage(model_params: dict, out: Path) -> bool:
    """Whether `model.init.grounding` names this stage's output."""
    init = (model_params.get("init") or {}).get("grounding")
    return init is not None and Path(init).resolve() == (out / OUTPUT_NAME).resolve()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normalized", required=True, type=Path, help="normalize output (for the tokenizer)")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. outputs/pretrain_grounding")
    parser.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    where = f"{args.params}:pretrain_grounding"
    cfg = section(params, "pretrain_grounding", args.params)
    model_params = section(params, "model", args.params)
    if not uses_this_stage(model_params, args.out):
        summary = {
            "trained": False,
            "reason": f"model.init.grounding = {model_params.get('init', {}).get('grounding')!r}"
            f" does not name {args.out / OUTPUT_NAME}",
        }
        with atomic_path(args.out, is_dir=True) as tmp:
            write_json(tmp / "summary.json", summary)
        print(f"pretrain_grounding: not used ({summary['reason']}); nothing trained")
        return summary

    settings = PretrainSettings.from_params({k: v for k, v in cfg.items() if k not in DATA_KEYS}, where)
    overrides = cfg.get("model") or {}
    unknown = sorted(set(overrides) - set(model_params) - {"context_mode"})
    if unknown:
        raise KeyError(f"{where}.model: keys {unknown} are not `model` keys")
    torch.set_num_threads(int(cfg.get("threads", 2)))
    scene = SynthesizeConfig.from_params(section(params, "synthesize", args.params), str(args.params)).scene
    start = time.perf_counter()
    train_pool = grounding_frames(settings.seed, "train", int(cfg["train_clips"]), int(cfg["frames_per_clip"]), scene)
    val_pool = grounding_frames(settings.seed, "val", int(cfg["val_clips"]), int(cfg["frames_per_clip"]), scene)
    print(
        f"pretrain_grounding: {len(train_pool)} training samples on {len(train_pool.frames)} frames, "
        f"{len(val_pool)} held-out samples ({time.perf_counter() - start:.0f} s to generate)"
    )

    with atomic_path(args.out, is_dir=True) as tmp:
        tokenizer = build_tokenizer(
            training_sentences(args.normalized),
            tmp / "tokenizer",
            vocab_size=int(model_params["backbones"]["text"]["tokenizer_vocab_size"]),
        )
        torch.manual_seed(settings.seed)
        model = build_cgstvg({**model_params, **overrides}, tokenizer)
        # Only what MDETR has trains (and is written out): the rest, motion included (its tokens are zeros here),
        # keeps its initial values, so `train` starts from exactly the model pretraining ended with on that part.
        _, left_out = to_mdetr_state_dict(model.state_dict())
        for name, param in model.named_parameters():
            param.requires_grad_(name not in left_out)

        def log(row: dict) -> None:
            if "val_iou" in row:
                print(
                    f"pretrain_grounding: step {row['step']}/{settings.steps} loss {row['loss']:.3f} "
                    f"held-out IoU {row['val_iou']:.3f} (IoU>0.5: {row['val_iou@0.5']:.3f}) "
                    f"{row['seconds']:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

        rows = pretrain_grounding(model, train_pool, val_pool, settings, log=log)
        state, _ = to_mdetr_state_dict({k: v.detach().contiguous() for k, v in model.state_dict().items()})
        with open(tmp / OUTPUT_NAME, "wb") as f:  # a file object: the same weights give the same bytes
            torch.save({"model": state}, f)
        columns = ["step", "loss", "lr", "seconds", "val_iou", "val_iou@0.5"]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        (tmp / "curve.csv").write_text(text.getvalue())
        evals = [r for r in rows if "val_iou" in r]
        summary = {
            "trained": True,
            "steps": settings.steps,
            "frames_per_step": settings.frames,
            "train_samples": len(train_pool),
            "train_frames": int(len(train_pool.frames)),
            "val_samples": len(val_pool),
            "seconds": round(time.perf_counter() - start, 1),
            "val_iou": evals[-1]["val_iou"],
            "val_iou@0.5": evals[-1]["val_iou@0.5"],
            "mdetr_keys": len(state),
        }
        write_json(tmp / "summary.json", summary)
    print(
        f"pretrain_grounding: {settings.steps} steps, held-out IoU {summary['val_iou']:.3f}; "
        f"wrote {args.out / OUTPUT_NAME}"
    )
    return summary


if __name__ == "__main__":
    run_stage("pretrain_grounding", main)
