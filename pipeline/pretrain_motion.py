"""Stage `pretrain_motion`: action recognition on synthetic clips, the analogue of the release's Kinetics-400 Swin.

    python -m pipeline.pretrain_motion --out outputs/pretrain_motion [--params params.yaml]

Reads `synthesize` (the scene generator), `model.backbones.motion` (the Video Swin to train), `model.init.motion`
and `pretrain_motion`. Two phases, both on the generator's own `pretrain_motion` clips (never an STVG clip;
`cgstvg.data.synthetic.action_windows`):
1. clip level (the Kinetics-400 analogue): a linear classifier names the action (or none) that the one object
   of a clip performs in a window of frames;
2. `pretrain_motion.objects` (as action-detection models are fine-tuned from Kinetics, AVA-style): in the STVG
   generator's multi-object scenes, a linear classifier on the features RoIAlign-pooled inside each object's box
   names what that object does in each frame. Phase 1 alone leaves the per-frame features at the target's box
   nearly uninformative about its action (README "pretrain_motion"). `objects: {steps: 0}` skips it.
Then it writes (atomically):
- `<out>/swin_k400.pth`: the backbone in the Kinetics-400 (mmaction) layout, `{"state_dict": ...}`, which
  `extract` loads through the same converter as a downloaded Kinetics Video Swin (`model.init.motion`);
- `<out>/curve.csv`: step, loss, learning rate and the held-out accuracy every `eval_every` steps;
- `<out>/summary.json`.

When `model.init.motion` does not name this stage's output, the stage trains nothing and writes only
`summary.json` saying so.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import torch

from cgstvg.data.synthetic import SynthesizeConfig
from cgstvg.data.synthetic.action_windows import ACTION_CLASSES, action_windows, object_action_windows
from cgstvg.engine.pretrain_motion import MotionPretrainSettings, pretrain_motion
from cgstvg.model.backbone_weights import to_kinetics_swin_state_dict
from cgstvg.model.motion import build_motion
from cgstvg.utils.atomic import atomic_path, write_json
from cgstvg.utils.params import load_params, section
from pipeline import run_stage

OUTPUT_NAME = "swin_k400.pth"
DATA_KEYS = ("train_clips", "val_clips", "window", "threads", "objects")
CURVE_COLUMNS = ["phase", "step", "loss", "lr", "seconds", "val_accuracy"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. outputs/pretrain_motion")
    parser.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    where = f"{args.params}:pretrain_motion"
    cfg = section(params, "pretrain_motion", args.params)
    model_params = section(params, "model", args.params)
    init = (model_params.get("init") or {}).get("motion")
    if init is None or Path(init).resolve() != (args.out / OUTPUT_NAME).resolve():
        summary = {"trained": False, "reason": f"model.init.motion = {init!r} does not name {args.out / OUTPUT_NAME}"}
        with atomic_path(args.out, is_dir=True) as tmp:
            write_json(tmp / "summary.json", summary)
        print(f"pretrain_motion: not used ({summary['reason']}); nothing trained")
        return summary

    settings = MotionPretrainSettings.from_params({k: v for k, v in cfg.items() if k not in DATA_KEYS}, where)
    objects_cfg = dict(cfg.get("objects") or {"steps": 0})
    objects_data = {k: objects_cfg.pop(k) for k in ("train_clips", "val_clips", "window") if k in objects_cfg}
    # `objects: {steps: 0}` (or no `objects`) skips phase 2; MotionPretrainSettings itself needs steps >= 1
    skip_objects = objects_cfg.get("steps") == 0
    objects_settings = None if skip_objects else MotionPretrainSettings.from_params(objects_cfg, f"{where}.objects")
    torch.set_num_threads(int(cfg.get("threads", 2)))
    scene = SynthesizeConfig.from_params(section(params, "synthesize", args.params), str(args.params)).scene
    start = time.perf_counter()
    window = int(cfg["window"])
    train_pool = action_windows(settings.seed, "train", int(cfg["train_clips"]), window, scene)
    val_pool = action_windows(settings.seed, "val", int(cfg["val_clips"]), window, scene)
    counts = {c: int((train_pool.labels == i).sum()) for i, c in enumerate(ACTION_CLASSES)}
    print(
        f"pretrain_motion: {len(train_pool)} training windows {counts}, {len(val_pool)} held out "
        f"({time.perf_counter() - start:.0f} s to generate)"
    )
    torch.manual_seed(settings.seed)
    backbone = build_motion(model_params["backbones"]["motion"], f"{args.params}:model.backbones.motion")

    def logger(phase: str, steps: int):
        def log(row: dict) -> None:
            if "val_accuracy" in row:
                print(
                    f"pretrain_motion ({phase}): step {row['step']}/{steps} loss {row['loss']:.3f} "
                    f"held-out accuracy {row['val_accuracy']:.3f} {row['seconds']:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

        return log

    rows = [
        {"phase": "clip", **r}
        for r in pretrain_motion(backbone, train_pool, val_pool, settings, logger("clip", settings.steps))
    ]
    summary = {
        "trained": True,
        "steps": settings.steps,
        "train_windows": len(train_pool),
        "val_windows": len(val_pool),
        "window": window,
        "classes": list(ACTION_CLASSES),
        "chance_accuracy": round(max(counts.values()) / len(train_pool), 4),
        "val_accuracy": rows[-1]["val_accuracy"],
    }
    if objects_settings is not None:
        del train_pool, val_pool  # the frames of both phases need not be held at once
        obj_window = int(objects_data.get("window", window))
        obj_train = object_action_windows(
            objects_settings.seed, "train", int(objects_data.get("train_clips", cfg["train_clips"])), obj_window, scene
        )
        obj_val = object_action_windows(
            objects_settings.seed, "val", int(objects_data.get("val_clips", cfg["val_clips"])), obj_window, scene
        )
        present = obj_train.labels[obj_train.labels >= 0]
        print(
            f"pretrain_motion (objects): {len(obj_train)} windows of {obj_window} frames, "
            f"{len(present)} object-frames, {int((present > 0).sum())} acting"
        )
        obj_rows = pretrain_motion(
            backbone, obj_train, obj_val, objects_settings, logger("objects", objects_settings.steps)
        )
        rows += [{"phase": "objects", **r} for r in obj_rows]
        summary["objects"] = {
            "steps": objects_settings.steps,
            "train_windows": len(obj_train),
            "window": obj_window,
            "chance_accuracy": round(float((present == 0).mean()), 4),
            "val_accuracy": obj_rows[-1]["val_accuracy"],
        }
    state = to_kinetics_swin_state_dict({k: v.detach().contiguous() for k, v in backbone.state_dict().items()})
    text = io.StringIO()
    writer = csv.DictWriter(text, CURVE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    with atomic_path(args.out, is_dir=True) as tmp:
        with open(tmp / OUTPUT_NAME, "wb") as f:  # a file object: the same weights give the same bytes
            torch.save({"state_dict": state}, f)
        (tmp / "curve.csv").write_text(text.getvalue())
        write_json(tmp / "summary.json", summary)
    objects = summary.get("objects")
    then = (
        f"; objects: {objects['steps']} steps, held-out accuracy {objects['val_accuracy']:.3f} "
        f"(majority class {objects['chance_accuracy']:.3f})"
        if objects
        else ""
    )
    print(
        f"pretrain_motion: {settings.steps} steps, held-out accuracy {summary['val_accuracy']:.3f} "
        f"(majority class {summary['chance_accuracy']:.3f}){then}; wrote {args.out / OUTPUT_NAME}"
    )
    return summary


if __name__ == "__main__":
    run_stage("pretrain_motion", main)
