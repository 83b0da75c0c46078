"""Where a training step of the default goes: data, each module's forward, the loss, backward, optimizer, EMA.

    python bench/step_profile.py [--params params.yaml --steps 20 --threads 2]

Builds the model, loader, criterion and optimizer exactly as `pipeline.train` does (from `outputs/shard` and
`outputs/extract`, so run `dvc repro extract` first) and times `--steps` steps after two warm-up steps. Forward
times per module come from forward pre/post hooks (the CPU runs synchronously, so wall time between them is the
module's own time, its children's included; the decoders are timed layer by layer, since the head drives their
layers itself); `head.other` is the head's time outside its listed parts (input projections, anchor init, the
decoders' query maths, output MLPs). The last line printed is one JSON object: seconds per step
of each part and each part's share of the step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._part_timer import PartTimer  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"), type=Path)
    parser.add_argument("--shards", default=REPO / "outputs" / "shard", type=Path)
    parser.add_argument("--features", default=REPO / "outputs" / "extract", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from cgstvg.data.augment import TrainAugment
    from cgstvg.data.feature_loader import FeatureShardLoader
    from cgstvg.engine.batch_model import grounding_targets
    from cgstvg.engine.ema import build_ema
    from cgstvg.engine.optim import build_optimizer, group_specs_from_params
    from cgstvg.model.criterion import CGSTVGCriterion
    from cgstvg.utils.params import load_params
    from pipeline.train import build_training_model

    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    cfg = params["train"]
    model, names = build_training_model(params, args.features, args.params)
    dataset, split = cfg["dataset"], cfg.get("split", "train")
    loader = FeatureShardLoader(
        args.shards / dataset / split,
        args.features / dataset / split,
        features=names,
        batch_size=int(cfg["batch_size"]),
        train=True,
        shuffle_buffer=int(params["shard"]["loader"]["shuffle_buffer"]),
        augment=TrainAugment.from_params(params["shard"]["loader"]),
        seed=0,
    )
    criterion = CGSTVGCriterion(**params["model"]["loss"])
    optimizer = build_optimizer(model, group_specs_from_params(cfg["optim"]), float(cfg["optim"]["weight_decay"]))
    ema = build_ema(model, float(cfg["ema_decay"]))

    timer = PartTimer(model)  # per-module forward times (bench/_part_timer.py)
    timed = timer.timed

    model.train()
    it = iter(loader)
    num_stages = model.head.cfg.dec_layers
    for step in range(args.steps + 2):
        if step == 2:  # warm-up done
            timer.seconds.clear()
            started = time.perf_counter()
        batch = timed("data", lambda: next(it))
        targets = grounding_targets(batch)
        # timed() calls each lambda at once, so they see this step's batch, targets and out
        out = timed("forward", lambda: model(batch, targets=targets))  # noqa: B023
        total = timed("loss", lambda: criterion.weighted_total(criterion(out, targets), num_stages))  # noqa: B023
        optimizer.zero_grad(set_to_none=True)
        timed("backward", total.backward)
        timed(
            "clip+optimizer",
            lambda: (torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg["grad_clip"])), optimizer.step()),
        )
        timed("ema", lambda: ema.update_parameters(model))
    step_seconds = (time.perf_counter() - started) / args.steps
    per_step = timer.parts(args.steps)
    result = {
        "step_seconds": round(step_seconds, 4),
        "steps": args.steps,
        "threads": args.threads,
        "seconds_per_step": {k: round(v, 4) for k, v in per_step.items()},
        "share": {k: round(v / step_seconds, 3) for k, v in per_step.items() if k != "forward"},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
