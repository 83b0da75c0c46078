"""Stage `train`: train CG-STVG on one dataset's training shards; resumes automatically; DDP under torchrun.

    python -m pipeline.train --shards outputs/shard --features outputs/extract --out outputs/train \
        [--normalized outputs/normalize] [--params params.yaml]
    torchrun --nproc_per_node 2 -m pipeline.train ...        # DDP (gloo on CPU, NCCL on GPU)

Reads `base.seed`, `model`, `shard` (the loader's augmentation, and the sampling/resize that the checkpoint records
for grounding raw videos), `train` and, for its held-out validation, `evaluate.protocol`, `evaluate.metric_protocol`,
`evaluate.batch_size` and `evaluate.amp` (scored as `evaluate` scores). Inputs (`train.input`):
- `frames`: the appearance CNN and the text encoder train end to end on the frames; motion comes from `extract`;
- `features`: appearance, motion and text all come from `extract` (those backbones frozen); only the head trains.
Writes (rank 0 only):
- `<out>/checkpoints/step_*.pt` (+ `.pt.sha256`): every `train.checkpoint_every` steps and at the end; a rerun
  resumes from the newest one that matches the params and data and verifies against its sha256 (the folder
  persists in dvc.yaml);
- `<out>/model.pt`: the EMA weights as a grounding checkpoint (`cgstvg.inference.checkpoint`), read by `evaluate`
  and by `cgstvg ground`;
- `<out>/live/`, DVCLive's folder (`cgstvg.engine.live`): `plots/metrics/train/loss/*.tsv` (total and each weighted
  term summed over the decoding stages, every `train.log_every` steps), `plots/metrics/train/lr/*.tsv` (each
  parameter group's learning rate), `plots/metrics/val/*.tsv` (m_tIoU, m_vIoU of the EMA weights on a fixed subset
  of `train.validation.split`, every `train.validation.every` steps; needs `--normalized` for the ground truth) and
  `metrics.json` (the step and the latest validation scores), for `dvc plots` and `dvc exp show`;
- `<out>/summary.json`: run bookkeeping, not a score (declared as a plain out, no DVC metric): steps, epochs,
  seconds, seconds per step and seconds of validation of this invocation, parameter counts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from cgstvg.data.augment import TrainAugment
from cgstvg.data.feature_loader import FeatureShardLoader
from cgstvg.engine.batch_model import BatchModel, grounding_targets
from cgstvg.engine.checkpoint import fingerprint
from cgstvg.engine.distributed import init_distributed, shutdown_distributed
from cgstvg.engine.frozen_backbones import cached_features, input_mode, load_frozen_backbones
from cgstvg.engine.init_weights import init_grounding
from cgstvg.engine.optim import group_specs_from_params
from cgstvg.engine.train_loop import TrainSettings, train
from cgstvg.engine.validation import ValidationSettings, Validator
from cgstvg.evaluation.evaluate_loop import GroundTruth
from cgstvg.evaluation.metrics import RELEASE_ON_MISSING
from cgstvg.inference.checkpoint import GroundingParams, save_grounding_checkpoint
from cgstvg.model.cgstvg import build_cgstvg
from cgstvg.model.criterion import LOSS_NAMES, CGSTVGCriterion
from cgstvg.model.memory_savers import MemorySavers, apply_memory_savers
from cgstvg.utils.atomic import write_json
from cgstvg.utils.hashing import sha256_file
from cgstvg.utils.integrity import IntegrityError
from cgstvg.utils.params import load_params, section
from pipeline import run_stage

# Keys of the `train` section that do not change the trained weights (left out of the resume fingerprint).
# `validation` leaves the weights as they are (tests/test_train_resume.py compares the bytes); the memory savers
# change them by float rounding only, so a run may resume with them switched.
NON_RESULT_KEYS = ("checkpoint_every", "keep_checkpoints", "log_every", "workers", "progress", "validation", "memory")


def build_training_model(params: dict, features_dir: Path, where) -> tuple[BatchModel, tuple[str, ...]]:
    """The seeded model with the frozen backbone weights of `extract`; returns it and the cached feature names."""
    if not (features_dir / "frozen_backbones.safetensors").is_file():
        raise FileNotFoundError(
            f"{features_dir}: no `extract` output (frozen_backbones.safetensors); run `extract` first"
        )
    mode = input_mode(params, where)
    names = cached_features(mode)
    tokenizer = features_dir / "tokenizer"
    torch.manual_seed(int(section(params, "base", where)["seed"]))
    model_params = section(params, "model", where)
    model = build_cgstvg(model_params, tokenizer if tokenizer.is_dir() else None)
    report = init_grounding(model, model_params, tokenizer)
    if report is not None:
        init = model_params["init"]
        paths = " then ".join(str(init[k]) for k in ("grounding", "action_grounding") if init.get(k) is not None)
        print(f"train: initialised {len(report.mapped)} tensors from {paths} ({len(report.dropped)} left out)")
    load_frozen_backbones(model, features_dir / "frozen_backbones.safetensors")
    for name in ("appearance", "text"):
        if name in names:  # cached means frozen
            getattr(model, name).requires_grad_(False)
    train_cfg = section(params, "train", where)
    apply_memory_savers(model, MemorySavers.from_params(train_cfg.get("memory"), f"{where}:train.memory"))
    return BatchModel(model), names


def make_loss_fn(criterion: CGSTVGCriterion, num_stages: int, device: torch.device):
    """loss_fn(model, batch) -> (weighted total, {base term: weighted sum over stages}) for the training loop."""
    weights = criterion.weight_dict(num_stages)

    def loss_fn(model, batch):
        targets = grounding_targets(batch, device)
        losses = criterion(model(batch, targets=targets), targets)
        total = criterion.weighted_total(losses, num_stages)
        terms = {}
        for base in LOSS_NAMES:
            parts = [
                weights[k] * v
                for k, v in losses.items()
                if (k == base or k.startswith(base + "_")) and weights.get(k, 0.0) != 0.0
            ]
            if parts:
                terms[base] = torch.stack([p.float() for p in parts]).sum()
        return total, terms

    return loss_fn


def ground_protocol(params: dict) -> str:
    """The protocol the checkpoint records for grounding raw videos: two passes when evaluation splits are sampled
    twice as densely as training (`shard.sampling.eval_multiplier`), the release's way; else one pass.
    (`evaluate.protocol` chooses how the stage scores, independently, so changing it does not retrain.)"""
    return "two_pass" if int(params["shard"]["sampling"].get("eval_multiplier", 2)) == 2 else "single_pass"


def build_validator(params: dict, args: argparse.Namespace, names: tuple[str, ...], env, where) -> Validator | None:
    """The held-out validation of `train.validation` (None when `every` is 0): the `evaluate` stage's scoring."""
    settings = ValidationSettings.from_params(section(params, "train", where)["validation"])
    if settings.every == 0:
        return None
    if args.normalized is None:
        raise SystemExit("train: train.validation.every > 0 needs --normalized (the ground truth it is scored on)")
    import pyarrow.parquet as pq

    dataset = params["train"]["dataset"]
    table = args.normalized / dataset / f"{settings.split}.parquet"
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no normalized table for train.validation.split {settings.split!r}")
    gt = {r["sample_id"]: GroundTruth.from_row(r) for r in pq.read_table(table).to_pylist()}
    cfg = section(params, "evaluate", where)
    return Validator.build(
        settings,
        args.shards / dataset / settings.split,
        args.features / dataset / settings.split,
        gt,
        env,
        feature_names=names,
        batch_size=int(cfg["batch_size"]),
        protocol=cfg["protocol"],
        metric_protocol=cfg["metric_protocol"],
        on_missing=RELEASE_ON_MISSING[dataset],
        amp=bool(cfg.get("amp", True)),
    )


def _manifest_digest(path: Path) -> str:
    return sha256_file(path)[:16] if path.is_file() else "missing"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, type=Path, help="shard output, e.g. outputs/shard")
    parser.add_argument("--features", required=True, type=Path, help="extract output, e.g. outputs/extract")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. outputs/train")
    parser.add_argument("--normalized", type=Path, help="normalize output (the validation's ground truth)")
    parser.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    params = load_params(args.params)
    cfg = section(params, "train", args.params)
    model_params = section(params, "model", args.params)
    seed = int(section(params, "base", args.params)["seed"])
    torch.set_num_threads(int(cfg.get("threads", 2)))
    env = init_distributed(str(cfg.get("device", "auto")))
    try:
        dataset, split = cfg["dataset"], cfg.get("split", "train")
        split_dir = args.shards / dataset / split
        model, names = build_training_model(params, args.features, args.params)
        loader = FeatureShardLoader(
            split_dir,
            args.features / dataset / split,
            features=names,
            batch_size=int(cfg["batch_size"]),
            train=True,
            num_workers=int(cfg.get("workers", 0)),
            shuffle_buffer=int(section(params, "shard", args.params)["loader"]["shuffle_buffer"]),
            augment=TrainAugment.from_params(params["shard"]["loader"]),
            seed=seed,
        )
        settings = TrainSettings.from_params(
            cfg, steps_per_epoch=len(loader), seed=seed, find_unused_parameters=env.is_distributed
        )
        loss_params = dict(model_params.get("loss", {}))
        criterion = CGSTVGCriterion(**loss_params)
        fp = fingerprint(
            {
                "model": model_params,
                "train": {k: v for k, v in cfg.items() if k not in NON_RESULT_KEYS},
                "loader": params["shard"]["loader"],
                "seed": seed,
                "world_size": env.world_size,
                "shards": _manifest_digest(split_dir / "manifest.json"),
                "features": _manifest_digest(args.features / dataset / split / "manifest.json"),
            }
        )

        def batches(epoch: int, skip: int):
            loader.set_epoch(epoch)
            it = iter(loader)
            for _ in range(skip):  # resume mid-epoch: the stream is deterministic, so drop what was trained on
                next(it)
            return it

        result = train(
            model,
            group_specs_from_params(cfg["optim"]),
            make_loss_fn(criterion, model.head.cfg.dec_layers, env.device),
            batches,
            settings,
            env,
            args.out / "checkpoints",
            fp,
            live_dir=args.out / "live",
            validate=build_validator(params, args, names, env, args.params),
            progress=bool(cfg.get("progress", sys.stderr.isatty())),
        )
        summary = {
            "dataset": dataset,
            "split": split,
            "input": input_mode(params, args.params),
            "steps": result.step,
            "epochs": settings.epochs,
            "steps_per_epoch": settings.steps_per_epoch,
            "batch_size": int(cfg["batch_size"]),
            "world_size": env.world_size,
            "device": env.device.type,
            "resumed_from": result.resumed_from,
            "steps_run": result.steps_run,
            "seconds": round(result.seconds, 1),
            "seconds_per_step": round(result.seconds / max(1, result.steps_run), 4),
            "validation_seconds": round(result.validation_seconds, 1),  # included in `seconds`
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "params_total": sum(p.numel() for p in model.parameters()),
            "final_loss": result.curve[-1]["total"] if result.curve else None,
        }
        if env.is_main:
            tokenizer = args.features / "tokenizer"
            save_grounding_checkpoint(
                args.out / "model.pt",
                result.ema.module.state_dict(),
                GroundingParams.from_params_yaml(
                    params, dataset, protocol=ground_protocol(params), where=str(args.params)
                ),
                tokenizer if tokenizer.is_dir() else None,
                step=result.step,
            )
            write_json(args.out / "summary.json", summary)
            print(
                f"train: {result.step} steps ({result.steps_run} run now, {summary['seconds_per_step']} s/step), "
                f"final loss {summary['final_loss']:.4f}; wrote {args.out / 'model.pt'}"
            )
        return summary
    except IntegrityError as err:  # a shard or feature shard that does not verify: one line naming it
        raise SystemExit(f"train: {err}") from err
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    run_stage("train", main)
