"""Stage `pretrain_action_grounding`: frame-level grounding with motion and verbs, after `pretrain_grounding`.

    python -m pipeline.pretrain_action_grounding --grounding outputs/pretrain_grounding \
        --motion outputs/pretrain_motion --out outputs/pretrain_action_grounding [--params params.yaml]

Reads `synthesize` (the scene generator's settings), `model` (the sizes and `model.init`; the section's `model`
overrides keys while pretraining, e.g. no instance context) and `pretrain_action_grounding`. Starts from
`model.init.grounding` (the MDETR analogue) with the frozen Video Swin of `model.init.motion`, and trains on frames
of the generator's own `pretrain_action` clips (`cgstvg.data.synthetic.action_frames`) with the box loss and the
actioness loss (`cgstvg.engine.pretrain_action_grounding`). Writes (atomically):
- `<out>/weights.pth`: `{"model": state}` of the modules it trained, in our keys, which `train` loads over the
  `model.init.grounding` file when `model.init.action_grounding` names it;
- `<out>/tokenizer/`: a copy of the grounding stage's tokenizer (`train` checks it against `extract`'s);
- `<out>/curve.csv`: step, losses, learning rate and, every `eval_every` steps, the held-out box IoU and
  actioness accuracy and AUC;
- `<out>/summary.json`.

When `model.init.action_grounding` does not name this stage's output (on real data: null), it trains nothing and
writes only `summary.json` saying so.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import sys
import time
from pathlib import Path

import torch

from cgstvg.data.synthetic import SynthesizeConfig
from cgstvg.data.synthetic.action_frames import action_frames_clip
from cgstvg.engine.pretrain_action_grounding import (
    TRAINED_PREFIXES,
    ActionPretrainSettings,
    build_pool,
    pretrain_action_grounding,
    trained_state,
)
from cgstvg.model.backbone_weights import load_kinetics_init
from cgstvg.model.cgstvg import build_cgstvg
from cgstvg.model.convert import load_mdetr_init
from cgstvg.utils.atomic import atomic_path, write_json
from cgstvg.utils.params import load_params, section
from pipeline import run_stage

OUTPUT_NAME = "weights.pth"
# Keys of the section that are not `ActionPretrainSettings` fields.
DATA_KEYS = ("train_clips", "val_clips", "frames_per_clip", "p_positive", "threads", "model")


def uses_this_stage(model_params: dict, out: Path) -> bool:
    """Whether `model.init.action_grounding` names this stage's output."""
    init = (model_params.get("init") or {}).get("action_grounding")
    return init is not None and Path(init).resolve() == (out / OUTPUT_NAME).resolve()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grounding", required=True, type=Path, help="pretrain_grounding output (its tokenizer)")
    parser.add_argument("--motion", required=True, type=Path, help="pretrain_motion output folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    where = f"{args.params}:pretrain_action_grounding"
    cfg = section(params, "pretrain_action_grounding", args.params)
    model_params = section(params, "model", args.params)
    if not uses_this_stage(model_params, args.out):
        summary = {
            "trained": False,
            "reason": f"model.init.action_grounding = {(model_params.get('init') or {}).get('action_grounding')!r}"
            f" does not name {args.out / OUTPUT_NAME}",
        }
        with atomic_path(args.out, is_dir=True) as tmp:
            write_json(tmp / "summary.json", summary)
        print(f"pretrain_action_grounding: not used ({summary['reason']}); nothing trained")
        return summary
    init = model_params.get("init") or {}
    if init.get("grounding") is None or init.get("motion") is None:
        raise ValueError(
            f"{args.params}:model.init: pretrain_action_grounding starts from the grounding and the motion inits; "
            f"both must name a file (got grounding={init.get('grounding')!r}, motion={init.get('motion')!r})"
        )
    tokenizer = args.grounding / "tokenizer"
    if not tokenizer.is_dir():
        raise FileNotFoundError(f"{tokenizer}: no tokenizer (run `pretrain_grounding` first)")

    settings = ActionPretrainSettings.from_params({k: v for k, v in cfg.items() if k not in DATA_KEYS}, where)
    overrides = cfg.get("model") or {}
    unknown = sorted(set(overrides) - set(model_params) - {"context_mode"})
    if unknown:
        raise KeyError(f"{where}.model: keys {unknown} are not `model` keys")
    torch.set_num_threads(int(cfg.get("threads", 2)))
    scene = SynthesizeConfig.from_params(section(params, "synthesize", args.params), str(args.params)).scene
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    model = build_cgstvg({**model_params, **overrides}, tokenizer)
    report = load_mdetr_init(model, init["grounding"])
    load_kinetics_init(model.motion, init["motion"])
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(TRAINED_PREFIXES))

    def pool(split: str, clips: int):
        per_clip, p_positive = int(cfg["frames_per_clip"]), float(cfg["p_positive"])
        samples = (action_frames_clip(settings.seed, split, i, per_clip, scene, p_positive) for i in range(clips))
        return build_pool(model.motion, samples, clips * per_clip)

    train_pool, val_pool = pool("train", int(cfg["train_clips"])), pool("val", int(cfg["val_clips"]))
    print(
        f"pretrain_action_grounding: {len(train_pool)} training samples on {len(train_pool.frames)} frames "
        f"({train_pool.active.mean():.2f} active), {len(val_pool)} held-out; started from {init['grounding']} "
        f"({len(report.mapped)} tensors) and {init['motion']} ({time.perf_counter() - start:.0f} s to generate)"
    )

    def log(row: dict) -> None:
        if "val_iou" in row:
            print(
                f"pretrain_action_grounding: step {row['step']}/{settings.steps} loss {row['loss']:.3f} "
                f"held-out IoU {row['val_iou']:.3f} actioness acc {row['val_act_acc']:.3f} "
                f"AUC {row['val_act_auc']:.3f} {row['seconds']:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    rows = pretrain_action_grounding(model, train_pool, val_pool, settings, log=log)
    with atomic_path(args.out, is_dir=True) as tmp:
        with open(tmp / OUTPUT_NAME, "wb") as f:  # a file object: the same weights give the same bytes
            torch.save({"model": trained_state(model)}, f)
        shutil.copytree(tokenizer, tmp / "tokenizer")
        columns = ["step", "loss", "loss_box", "loss_actioness", "lr", "seconds"]
        columns += ["val_iou", "val_iou@0.5", "val_act_acc", "val_act_auc"]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        (tmp / "curve.csv").write_text(text.getvalue())
        last = [r for r in rows if "val_iou" in r][-1]
        summary = {
            "trained": True,
            "steps": settings.steps,
            "frames_per_step": settings.frames,
            "train_samples": len(train_pool),
            "train_frames": int(len(train_pool.frames)),
            "train_active": round(float(train_pool.active.mean()), 4),
            "val_samples": len(val_pool),
            "val_active": last["val_act_positive"],
            "seconds": round(time.perf_counter() - start, 1),
            **{k: last[f"val_{k}"] for k in ("iou", "iou@0.5", "act_acc", "act_auc")},
        }
        write_json(tmp / "summary.json", summary)
    print(
        f"pretrain_action_grounding: {settings.steps} steps, held-out IoU {summary['iou']:.3f}, actioness "
        f"AUC {summary['act_auc']:.3f}; wrote {args.out / OUTPUT_NAME}"
    )
    return summary


if __name__ == "__main__":
    run_stage("pretrain_action_grounding", main)
