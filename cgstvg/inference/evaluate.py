"""`cgstvg evaluate`: score a checkpoint (the authors' release or ours) on a normalized and sharded split.

    cgstvg evaluate --checkpoint hcstvg.pth --params conf/hcstvg_v1.yaml --tokenizer roberta-base/ \
        --normalized outputs/normalize --shards outputs/shard --out outputs/zoo/hcstvg_v1

The model is built from `--params` (a preset or a whole params.yaml: `model`, `train.dataset`, `evaluate.split`,
`evaluate.protocol`, `evaluate.metric_protocol`) and loaded by `cgstvg.inference.checkpoint.load_grounding_model`,
which converts the release's key names (`cgstvg.model.convert`). Then, as the pipeline's `extract` and `evaluate`
stages do: the checkpoint's own Video Swin runs once over the split's frame shards (`extract_split`, per pass of
the two-pass protocol), and `cgstvg.evaluation.evaluate_loop.evaluate_model` scores the predictions with the
release's metric protocol. Written to `--out`: `metrics.json` and `metrics_detail.json` in the evaluate stage's
layout (`cgstvg.evaluation.report`), `predictions.parquet`, and `run.json` (what was scored, with which file).

Every failure is an `EvaluateError`, one line naming the file: a missing checkpoint, one that is not a release
or cgstvg checkpoint or does not fit the params, a missing tokenizer directory, a split that was not normalized
or not sharded (or whose shards do not verify).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cgstvg.inference.checkpoint import GroundingParams
from cgstvg.inference.errors import GroundingError, InputError

# Files of a transformers tokenizer directory (a saved roberta-base has vocab.json + merges.txt and/or
# tokenizer.json; ours, from cgstvg.model.tokenizer, has tokenizer.json).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


class EvaluateError(GroundingError):
    """An evaluation request that cannot run; the message is one line naming the file at fault."""


def checkpoint_params(params: GroundingParams, tokenizer_dir: str | os.PathLike | None) -> tuple[GroundingParams, Any]:
    """`params` for loading a checkpoint, and the tokenizer directory to use.

    Loading a checkpoint replaces every weight, so a pretrained text directory (`model.backbones.text.
    pretrained_dir`, as in the real-data presets) is not read for weights: RoBERTa is built at the params' size
    and the directory serves as the tokenizer when `tokenizer_dir` is None."""
    text = params.model.get("backbones", {}).get("text", {})
    pretrained = text.get("pretrained_dir") if isinstance(text, dict) else None
    if not pretrained:
        return params, tokenizer_dir
    model = copy.deepcopy(params.model)
    model["backbones"]["text"]["pretrained_dir"] = None
    return dataclasses.replace(params, model=model), tokenizer_dir if tokenizer_dir is not None else pretrained


def check_tokenizer_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: tokenizer directory not found (pass a local roberta-base directory)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{path}: not a tokenizer directory (it holds neither {' nor '.join(TOKENIZER_FILES)})")
    return path


@dataclasses.dataclass(frozen=True)
class Split:
    """The split to score: its normalized table, its frame shards and the ground truth that is scored."""

    dataset: str
    name: str
    table: Path
    shards: Path
    gt: dict
    rejects: dict[str, str]


def read_ground_truth(table: Path) -> dict:
    """sample_id -> GroundTruth of a normalized table."""
    import pyarrow.parquet as pq

    from cgstvg.evaluation.evaluate_loop import GroundTruth

    return {r["sample_id"]: GroundTruth.from_row(r) for r in pq.read_table(table).to_pylist()}


def open_split(normalized: Path, shards: Path, dataset: str, split: str) -> Split:
    """The split's files, checked before any model is built: a table, a shard manifest, shards that verify."""
    from cgstvg.data.shard_reader import read_rejects, verified_manifest
    from cgstvg.utils.integrity import IntegrityError

    table = normalized / dataset / f"{split}.parquet"
    if not table.is_file():
        raise EvaluateError(f"{table}: no normalized table for {dataset}/{split} (run the `normalize` stage)")
    split_dir = shards / dataset / split
    if not (split_dir / "manifest.json").is_file():
        raise EvaluateError(
            f"{split_dir}: the split {dataset}/{split} is not sharded (no manifest.json; run the `shard` stage)"
        )
    try:
        verified_manifest(split_dir, table)  # every sample of the table is sharded or a known reject
        rejects = read_rejects(split_dir)
    except (IntegrityError, FileNotFoundError, ValueError) as exc:
        raise EvaluateError(str(exc)) from None
    gt = read_ground_truth(table)
    rejects = {sid: why for sid, why in rejects.items() if sid in gt}
    scored = {sid: g for sid, g in gt.items() if sid not in rejects}
    if not scored:
        raise EvaluateError(f"{table}: all {len(gt)} samples were rejected by `shard`; nothing to score")
    return Split(dataset, split, table, split_dir, scored, rejects)


def _settings(params_path: Path, dataset: str | None, split: str | None) -> tuple[dict, str, str]:
    """(params, dataset, split) from the params file and the command line."""
    from cgstvg.utils.params import load_params
    from cgstvg.utils.params_schema import ParamsError

    if not params_path.is_file():
        raise EvaluateError(f"{params_path}: params file not found (e.g. conf/hcstvg_v1.yaml)")
    try:
        params = load_params(params_path)
    except ParamsError as exc:
        raise EvaluateError(str(exc)) from None
    from cgstvg.data.schema import DATASETS

    dataset = (
        dataset or params.get("train", {}).get("dataset") or (params.get("normalize", {}).get("datasets") or [None])[0]
    )
    if dataset not in DATASETS:
        raise EvaluateError(
            f"{params_path}: no dataset to score (set train.dataset or pass --dataset {'|'.join(DATASETS)})"
        )
    split = split or params.get("evaluate", {}).get("split", "test")
    return params, str(dataset), str(split)


def _motion_features(grounding, split: Split, feature_root: Path, batch_frames: int, amp: bool) -> Path:
    """The checkpoint's Video Swin over the split's frame shards (the `extract` stage's code); returns the dir."""
    from cgstvg.engine.features import extract_split
    from cgstvg.engine.frozen_backbones import make_extractor

    out = feature_root / split.dataset / split.name
    extractor = make_extractor(
        grounding.model, ("motion",), {"amp": amp, "batch_frames": batch_frames}, grounding.device
    )
    # The fingerprint names the weights: a reused --features folder of another checkpoint is recomputed.
    fingerprint = json.dumps({"checkpoint": grounding.checkpoint["sha256"], "amp": amp}, sort_keys=True)
    extract_split(split.shards, out, extractor, fingerprint, progress=False)
    return out


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    params_path: str | os.PathLike,
    *,
    out: str | os.PathLike,
    normalized: str | os.PathLike = "outputs/normalize",
    shards: str | os.PathLike = "outputs/shard",
    tokenizer_dir: str | os.PathLike | None = None,
    dataset: str | None = None,
    split: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    features: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score `checkpoint` on one split and write the metrics files into `out`; returns `metrics_detail.json`'s dict.

    features: keep the motion features in this folder (as `<dataset>/<split>/`, the extract stage's layout) and
    reuse them on a rerun; default: a temporary folder."""
    params_path, out = Path(params_path), Path(out)
    params, dataset, split = _settings(params_path, dataset, split)
    if tokenizer_dir is not None:
        check_tokenizer_dir(tokenizer_dir)
    if not Path(checkpoint).is_file():
        raise EvaluateError(f"{checkpoint}: checkpoint not found")
    data = open_split(Path(normalized), Path(shards), dataset, split)
    cfg = params.get("evaluate", {})
    grounding_params = GroundingParams.from_params_yaml(
        params, dataset, cfg.get("protocol", "two_pass"), where=str(params_path)
    )
    with tempfile.TemporaryDirectory(prefix="cgstvg-evaluate-") as tmp:
        return _run(
            checkpoint, grounding_params, tokenizer_dir, data, cfg, out, Path(features or tmp), device, batch_size
        )


def _run(
    checkpoint: str | os.PathLike,
    grounding_params: GroundingParams,
    tokenizer_dir: str | os.PathLike | None,
    data: Split,
    cfg: dict,
    out: Path,
    feature_root: Path,
    device: str,
    batch_size: int | None,
) -> dict[str, Any]:
    """Load, extract, score, write (the body of `evaluate_checkpoint`, inside its temporary folder)."""
    import pyarrow as pa

    from cgstvg.data.feature_loader import FeatureShardLoader
    from cgstvg.engine.batch_model import BatchModel
    from cgstvg.engine.distributed import init_distributed
    from cgstvg.evaluation.evaluate_loop import evaluate_baselines, evaluate_model
    from cgstvg.evaluation.metrics import RELEASE_ON_MISSING
    from cgstvg.evaluation.report import DETAIL_FILE, HEADLINE_FILE, detail, headline
    from cgstvg.inference.checkpoint import load_grounding_model
    from cgstvg.utils.atomic import write_json, write_parquet
    from cgstvg.utils.integrity import IntegrityError

    env = init_distributed(device)
    grounding_params, tokenizer_dir = checkpoint_params(grounding_params, tokenizer_dir)
    grounding = load_grounding_model(
        checkpoint, params=grounding_params, tokenizer_dir=tokenizer_dir, device=env.device
    )
    amp = bool(cfg.get("amp", True))
    options = {
        "metric_protocol": cfg.get("metric_protocol", "release"),
        "on_missing": RELEASE_ON_MISSING[data.dataset],
        "per_qtype": data.dataset == "vidstg",
    }
    try:
        feature_dir = _motion_features(grounding, data, feature_root, 256, amp)
        size = batch_size or int(cfg.get("batch_size", 1))
        loader = FeatureShardLoader(data.shards, feature_dir, features=("motion",), batch_size=size, train=False)
        summary, rows = evaluate_model(
            BatchModel(grounding.model), loader, data.gt, env, protocol=grounding_params.protocol, amp=amp, **options
        )
    except (IntegrityError, ValueError, RuntimeError) as exc:  # shards that do not verify or fit the protocol
        raise EvaluateError(f"{data.shards}: {exc}") from None
    train_table = data.table.with_name("train.parquet")  # the baselines' box size is the training mean
    baselines = {}
    if train_table.is_file():
        baselines = evaluate_baselines(data.gt, read_ground_truth(train_table).values(), **options)
    metrics = detail(summary, baselines, rejects=data.rejects)
    write_json(out / HEADLINE_FILE, headline(summary, len(data.rejects)))
    write_json(out / DETAIL_FILE, metrics)
    write_parquet(out / "predictions.parquet", pa.Table.from_pylist(rows))
    run = {
        "checkpoint": grounding.checkpoint,
        "dataset": data.dataset,
        "split": data.name,
        "protocol": grounding_params.protocol,
        "metric_protocol": options["metric_protocol"],
        "scored": len(rows),
        "rejected": len(data.rejects),
    }
    write_json(out / "run.json", run)
    return metrics


__all__ = ["EvaluateError", "check_tokenizer_dir", "checkpoint_params", "evaluate_checkpoint", "open_split"]
