"""Stage `extract`: run the frozen backbones once over the frame shards; fp16 features as WebDataset shards.

    python -m pipeline.extract --shards outputs/shard --out outputs/extract [--normalized outputs/normalize] \
        [--params params.yaml]

Reads `base.seed`, `model` (the backbones and `init`), `extract` and `train.input`. Writes:
- `<out>/tokenizer/`: the byte-level BPE tokenizer trained on the sentences of every `train` split (unless the text
  backbone is a pretrained directory, which brings its own);
- `<out>/frozen_backbones.safetensors`: the weights of the frozen backbones that produced the features (the Video
  Swin from `model.init.motion`, and with `features` the appearance CNN and text encoder from
  `model.init.grounding`; seeded random weights where those are null); `train` loads them, so its checkpoint
  grounds raw videos consistently;
- `<out>/<dataset>/<split>/shard-*.tar` + `manifest.json`: per sample `motion` always, and `appearance` and `text`
  when `train.input` is `features` (those backbones then stay frozen); see `cgstvg.engine.features`;
- `<out>/summary.json`: samples, bytes, features and seconds per split.
Resumable: finished feature shards whose marker matches are kept (the output folder persists in dvc.yaml).
Verify on read: the splits are those the shard stage's `summary.json` (and, with `--normalized`, the normalized
tables) list; before anything is computed, each must have its manifest, its shards must match it (size, sha256,
samples) and, with `--normalized`, hold every row of the split's table that is not in its rejects.parquet.
Otherwise the stage stops with one line naming the file, and deletes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from cgstvg.data.schema import DATASETS
from cgstvg.data.shard_reader import iter_split_samples, verified_manifest
from cgstvg.engine.checkpoint import fingerprint
from cgstvg.engine.distributed import init_distributed
from cgstvg.engine.features import (
    FEATURE_LAYOUT,
    FeatureExtractor,
    extract_shard,
    extract_split,
    finish_extraction,
    plan_extraction,
)
from cgstvg.engine.frozen_backbones import (
    cached_features,
    frozen_state,
    input_mode,
    load_frozen_backbones,
    make_extractor,
)
from cgstvg.engine.init_weights import init_grounding
from cgstvg.model.backbone_weights import load_kinetics_init
from cgstvg.model.cgstvg import build_cgstvg
from cgstvg.model.tokenizer import build_tokenizer
from cgstvg.utils.atomic import atomic_path, write_json
from cgstvg.utils.hashing import sha256_file
from cgstvg.utils.integrity import IntegrityError
from cgstvg.utils.params import load_params, section
from pipeline import run_stage

TRAIN_SPLITS = ("train",)


def find_splits(shards: Path, normalized: Path | None = None) -> list[tuple[str, str]]:
    """(dataset, split) of every split the shard stage wrote, in a fixed order: those its `summary.json` lists (and
    the normalized tables, when given). A listed split without its manifest, or a manifest the summary does not
    list, is an IntegrityError naming it, never a skip (the stage would then delete that split's features)."""
    summary = shards / "summary.json"
    if not summary.is_file():
        raise IntegrityError(f"{summary}: no shard summary (run the `shard` stage first)")
    listed = {tuple(key.split("/", 1)) for key in json.loads(summary.read_text())}
    expected = set(listed)
    if normalized is not None:
        expected |= {(d, p.stem) for d in DATASETS for p in (normalized / d).glob("*.parquet")}
    for d, split in sorted(expected):
        if not (shards / d / split / "manifest.json").is_file():
            source = summary if (d, split) in listed else normalized / d / f"{split}.parquet"
            raise IntegrityError(f"{shards / d / split / 'manifest.json'}: missing ({source} lists the split)")
    for d in DATASETS:
        for p in (shards / d).glob("*/manifest.json"):
            if (d, p.parent.name) not in expected:
                raise IntegrityError(f"{summary}: does not list {d}/{p.parent.name}, whose {p} exists")
    return sorted(expected, key=lambda ds: (DATASETS.index(ds[0]), ds[1]))


def training_sentences(shards: Path) -> list[str]:
    """The sentences of every training split (read from the shards' JSON members)."""
    out = []
    for dataset, split in find_splits(shards):
        if split not in TRAIN_SPLITS:
            continue
        out.extend(json.loads(sample["json"])["sentence"] for sample in iter_split_samples(shards / dataset / split))
    return out


def tokenizer_dir_for(model_params: dict, out: Path, shards: Path) -> Path | None:
    """Build the tokenizer from the training sentences unless the text backbone is pretrained (None then)."""
    text = model_params["backbones"]["text"]
    if text.get("pretrained_dir"):
        return None
    sentences = training_sentences(shards)
    if not sentences:
        raise FileNotFoundError(f"{shards}: no training split to build the tokenizer from")
    return build_tokenizer(sentences, out / "tokenizer", vocab_size=int(text["tokenizer_vocab_size"]))


_WORKER_EXTRACTORS: dict[tuple[str, str], FeatureExtractor] = {}


def extract_shard_job(item: dict) -> tuple[dict, bool]:
    """`extract_shard` for one item of a mapped run (see `main`), in whatever worker runs it.

    The worker rebuilds the extractor once from the params and the frozen weights `main` saved, so it computes
    the same bytes as the in-process run.
    """
    key = (item["params"], item["out"])
    extractor = _WORKER_EXTRACTORS.get(key)
    if extractor is None:
        params = load_params(item["params"])
        cfg = section(params, "extract", item["params"])
        torch.set_num_threads(int(cfg.get("threads", 2)))
        out = Path(item["out"])
        tokenizer = out / "tokenizer" if (out / "tokenizer").is_dir() else None
        model = build_cgstvg(section(params, "model", item["params"]), tokenizer)
        load_frozen_backbones(model, out / "frozen_backbones.safetensors")
        extractor = make_extractor(model, tuple(item["features"]), cfg, torch.device(item["device"]))
        _WORKER_EXTRACTORS[key] = extractor
    return extract_shard(item["frame_dir"], item["out_dir"], item["shard"], extractor, item["fingerprint"])


def extract_split_mapped(
    frame_dir: Path, out_dir: Path, extractor: FeatureExtractor, fp: str, mapper, context: dict
) -> dict:
    """One split with its shards mapped over `mapper(extract_shard_job, items)`: plan, map, finish."""
    manifest = plan_extraction(frame_dir, out_dir)
    where = {"frame_dir": str(frame_dir.resolve()), "out_dir": str(out_dir.resolve()), "fingerprint": fp}
    items = [dict(context, **where, shard=shard) for shard in manifest["shards"]]
    return finish_extraction(manifest, out_dir, mapper(extract_shard_job, items), fp, extractor.backbones.names)


def main(argv: list[str] | None = None, *, mapper=None) -> dict:
    """Run the stage. `mapper(fn, items)`, an ordered map (flows/fanout.py passes one that runs Prefect tasks), runs
    the shards of every split through `extract_shard_job`; without it they run in this process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, type=Path, help="shard output, e.g. outputs/shard")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. outputs/extract")
    parser.add_argument(
        "--normalized", type=Path, help="normalize output, e.g. outputs/normalize: check the shards complete against it"
    )
    parser.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args(argv)
    try:
        return _run(args, mapper)
    except IntegrityError as err:
        raise SystemExit(f"extract: {err}") from err


def _run(args: argparse.Namespace, mapper) -> dict:
    params = load_params(args.params)
    cfg = section(params, "extract", args.params)
    model_params = section(params, "model", args.params)
    seed = int(section(params, "base", args.params)["seed"])
    mode = input_mode(params, args.params)
    torch.set_num_threads(int(cfg.get("threads", 2)))
    device = init_distributed(str(cfg.get("device", "auto"))).device
    splits = find_splits(args.shards, args.normalized)
    if not splits:
        raise SystemExit(f"extract: {args.shards}: no <dataset>/<split>/manifest.json (run the `shard` stage first)")
    for dataset, split in splits:  # every split verified before anything is computed or deleted
        table = args.normalized / dataset / f"{split}.parquet" if args.normalized is not None else None
        verified_manifest(args.shards / dataset / split, table)

    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_dir_for(model_params, args.out, args.shards)
    torch.manual_seed(seed)
    model = build_cgstvg(model_params, tokenizer)
    motion_init = (model_params.get("init") or {}).get("motion")
    if motion_init is not None:  # the release's Kinetics-400 Video Swin; here `pretrain_motion`'s output
        loaded = load_kinetics_init(model.motion, motion_init)
        print(f"extract: motion backbone initialised from {motion_init} ({loaded} tensors)")
    names = cached_features(mode)
    if "appearance" in names:  # cached appearance and text come from the weights `train` would start from
        report = init_grounding(model, model_params, tokenizer)
        if report is not None:
            init = model_params["init"]
            paths = " then ".join(str(init[k]) for k in ("grounding", "action_grounding") if init.get(k) is not None)
            print(f"extract: appearance and text initialised from {paths}")
    weights = frozen_state(model, names)
    with atomic_path(args.out / "frozen_backbones.safetensors") as tmp:
        save_file(weights, str(tmp))
    extractor = make_extractor(model, names, cfg, device)
    fp = fingerprint(
        {
            "backbones": model_params["backbones"],
            "seed": seed,
            "features": names,
            "motion_init": sha256_file(Path(motion_init)) if motion_init is not None else None,
            "batch_frames": extractor.batch_frames,
            "layout": FEATURE_LAYOUT,
            "device": device.type,
            "amp": extractor.amp,
            "tokenizer": ({p.name: sha256_file(p) for p in sorted(tokenizer.iterdir())} if tokenizer else None),
            # the weights themselves: they also depend on what the params do not show (a pretrained text directory)
            "weights": sha256_file(args.out / "frozen_backbones.safetensors"),
        }
    )

    summary = {}
    progress = sys.stderr.isatty()
    for dataset, split in splits:
        t0 = time.perf_counter()
        context = {
            "params": str(args.params.resolve()),
            "out": str(args.out.resolve()),
            "features": list(names),
            "device": str(device),
        }
        frame_dir, out_dir = args.shards / dataset / split, args.out / dataset / split
        if mapper is None:
            manifest = extract_split(frame_dir, out_dir, extractor, fp, progress)
        else:
            manifest = extract_split_mapped(frame_dir, out_dir, extractor, fp, mapper, context)
        seconds = time.perf_counter() - t0
        summary[f"{dataset}/{split}"] = {
            "samples": manifest["samples"],
            "bytes": manifest["bytes"],
            "features": manifest["features"],
        }
        print(
            f"extract: {dataset}/{split}: {manifest['samples']} samples, {manifest['bytes'] / 2**20:.1f} MiB "
            f"({', '.join(manifest['features'])}), {manifest['reused_shards']} shards reused, {seconds:.1f} s"
        )
    expected = {args.out / d / s for d, s in splits}
    for stale in args.out.glob("*/*"):  # splits no longer sharded
        if stale.is_dir() and stale.parent.name in DATASETS and stale not in expected:
            for f in stale.iterdir():
                f.unlink()
            stale.rmdir()
    write_json(args.out / "summary.json", summary)
    return summary


if __name__ == "__main__":
    run_stage("extract", main)
