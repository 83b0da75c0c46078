"""The `cgstvg` command line (console script `cgstvg = cgstvg.cli:main`).

    cgstvg ground --video clip.mp4 --text "the man in the red shirt sits down" --checkpoint model.pt \
        [--out tube.json] [--render out.mp4|out.gif] [--max-seconds 600] [--device auto|cpu|cuda]
    cgstvg ground --batch pairs.csv|pairs.jsonl --checkpoint model.pt --out results.jsonl
    cgstvg evaluate --checkpoint hcstvg.pth --params conf/hcstvg_v1.yaml --tokenizer roberta-base/ \
        [--normalized outputs/normalize] [--shards outputs/shard] --out outputs/zoo/hcstvg_v1
    cgstvg preset hcstvg_v1|hcstvg_v2|vidstg|cpu|<file.yaml> [--params params.yaml] [--dry-run]
    cgstvg preset --list | --table

Exit status: 0 on success; 1 when the request fails (single mode) or any pair fails (batch mode); 2 for a usage
error. Every failure prints one line, `cgstvg <command>: error: <message naming the file or input>`, on stderr.
The output format is `cgstvg.inference.ground.GroundingResult.to_json`; the batch format is
`cgstvg.inference.batch`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from cgstvg.inference.video import DEFAULT_MAX_SECONDS  # a light import: torch loads only when frames are read

PROG = "cgstvg"


def _add_ground(sub) -> None:
    p = sub.add_parser(
        "ground",
        help="ground a sentence in a video with a trained checkpoint",
        description="Predict the spatio-temporal tube that a sentence describes in a video.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="the video file (any format decord reads)")
    source.add_argument(
        "--batch",
        help="a .csv (columns video, sentence) or .jsonl of (video, sentence) pairs; "
        "relative paths are relative to this file's folder",
    )
    p.add_argument("--text", help="the sentence (single-video mode)")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint from `train`, or the authors' release (with --params and --tokenizer)",
    )
    p.add_argument(
        "--out",
        help="where to write the tube JSON (single mode; default: stdout) or the JSON lines (batch mode; required)",
    )
    p.add_argument("--render", help="also write the video with the predicted tube drawn (.mp4 or .gif; single mode)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help=f"refuse videos longer than this many seconds (default {DEFAULT_MAX_SECONDS:g})",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the model runs (auto: cuda when available)",
    )
    p.add_argument(
        "--params",
        help="a YAML with the model config, sampling and resize that replaces the "
        "checkpoint's (the grounding layout, or a whole params.yaml)",
    )
    p.add_argument(
        "--dataset",
        help="with a whole params.yaml as --params: the dataset whose sampling policy "
        "to use (default: the first of normalize.datasets)",
    )
    p.add_argument("--tokenizer", help="a tokenizer directory replacing the one stored in the checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar in batch mode")
    p.set_defaults(func=_ground)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint (e.g. the authors' hcstvg.pth) on a normalized and sharded split",
        description="Score a checkpoint on one split with the release's protocol (cgstvg.inference.evaluate).",
    )
    p.add_argument("--checkpoint", required=True, help="the authors' release (hcstvg.pth, ...) or a cgstvg checkpoint")
    p.add_argument(
        "--params",
        required=True,
        help="a preset (conf/hcstvg_v1.yaml, ...) or a params.yaml: the model, train.dataset and evaluate",
    )
    p.add_argument("--tokenizer", help="a local roberta-base (tokenizer) directory; needed by the release")
    p.add_argument("--normalized", default="outputs/normalize", help="the normalize stage's output")
    p.add_argument("--shards", default="outputs/shard", help="the shard stage's output")
    p.add_argument("--out", required=True, help="folder for metrics.json, metrics_detail.json, predictions, run.json")
    p.add_argument("--dataset", choices=("hcstvg_v1", "hcstvg_v2", "vidstg"), help="default: train.dataset of --params")
    p.add_argument("--split", help="default: evaluate.split of --params")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, help="videos per batch (default: evaluate.batch_size, else 1)")
    p.add_argument("--features", help="keep the motion features here and reuse them on a rerun")
    p.set_defaults(func=_evaluate)


def _add_preset(sub) -> None:
    p = sub.add_parser(
        "preset",
        help="write a preset's settings (conf/<name>.yaml) into params.yaml, keeping its comments",
        description="Select the release's settings for a dataset, or the CPU default (cgstvg.presets).",
    )
    p.add_argument("name", nargs="?", help="cpu | hcstvg_v1 | hcstvg_v2 | vidstg (in --dir), or a preset file")
    p.add_argument("--params", default="params.yaml", help="the params file to edit (default: params.yaml)")
    p.add_argument("--dir", default="conf", help="where preset names are looked up (default: conf)")
    p.add_argument("--dry-run", action="store_true", help="list the keys that would change; write nothing")
    p.add_argument("--list", action="store_true", help="list the presets in --dir")
    p.add_argument("--table", action="store_true", help="print the README's table of the shipped presets")
    p.set_defaults(func=_preset)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="CG-STVG: spatio-temporal video grounding.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_ground(sub)
    _add_evaluate(sub)
    _add_preset(sub)
    return parser


def _device(name: str) -> str:
    import torch

    from cgstvg.inference.errors import InputError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    return name


def _ground(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.video is not None and args.text is None:
        parser.error("ground: --video needs --text")
    if args.batch is not None and (args.text is not None or args.render is not None):
        parser.error("ground: --text and --render apply to --video only; a batch file holds the sentences")
    if args.batch is not None and args.out is None:
        parser.error("ground: --batch needs --out (the JSON lines file)")
    if args.render is not None and os.path.splitext(args.render)[1].lower() not in (".mp4", ".gif"):
        parser.error(f"ground: --render {args.render}: the rendered video must end in .mp4 or .gif")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
    from cgstvg.inference import batch as batch_mode
    from cgstvg.inference.errors import InputError
    from cgstvg.inference.video import open_video

    if args.video is not None:
        # Cheap input checks first (before the model and transformers are even imported), so a typo fails fast.
        if not args.text.strip():
            raise InputError(f"{args.video}: the sentence is empty")
        open_video(args.video, args.max_seconds)
    pairs = batch_mode.read_pairs(args.batch) if args.batch is not None else None

    from cgstvg.inference.checkpoint import load_grounding_model, load_params_file
    from cgstvg.inference.evaluate import checkpoint_params
    from cgstvg.inference.ground import ground
    from cgstvg.utils.atomic import write_json

    params, tokenizer = None, args.tokenizer
    if args.params:
        params, tokenizer = checkpoint_params(load_params_file(args.params, args.dataset), args.tokenizer)
    model = load_grounding_model(args.checkpoint, params=params, tokenizer_dir=tokenizer, device=_device(args.device))

    if pairs is None:
        result = ground(model, args.video, args.text, max_seconds=args.max_seconds, render=args.render)
        record = result.to_json(model.checkpoint)
        if args.out:
            write_json(args.out, record)
        else:
            print(json.dumps(record, indent=2, sort_keys=True))
        return 0

    def ground_one(pair: batch_mode.Pair) -> dict:
        return ground(model, pair.video, pair.sentence, max_seconds=args.max_seconds).to_json(model.checkpoint)

    records = batch_mode.ground_pairs(pairs, ground_one, progress=not args.no_progress)
    count, failed = batch_mode.write_jsonl(args.out, records)
    print(f"{PROG} ground: {count - failed} of {count} pairs grounded, {failed} failed -> {args.out}", file=sys.stderr)
    return 1 if failed else 0


def _evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("evaluate: --batch-size must be >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
    from cgstvg.inference.evaluate import evaluate_checkpoint

    if args.device == "cuda":
        _device("cuda")  # one line when there is none
    metrics = evaluate_checkpoint(
        args.checkpoint,
        args.params,
        out=args.out,
        normalized=args.normalized,
        shards=args.shards,
        tokenizer_dir=args.tokenizer,
        dataset=args.dataset,
        split=args.split,
        device=args.device,
        batch_size=args.batch_size,
        features=args.features,
    )
    m = metrics["model"]
    print(
        f"{PROG} evaluate: {args.checkpoint} ({m['n']} samples): m_tIoU {m['m_tIoU']:.4f} m_vIoU {m['m_vIoU']:.4f} "
        f"vIoU@0.3 {m['vIoU@0.3']:.4f} vIoU@0.5 {m['vIoU@0.5']:.4f} -> {args.out}"
    )
    for qtype, q in m.get("qtype", {}).items():
        print(f"{PROG} evaluate: {qtype}: m_tIoU {q['m_tIoU']:.4f} m_vIoU {q['m_vIoU']:.4f}")
    return 0


def _preset(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from cgstvg.presets import apply_preset, available, preset_path, preset_table

    if args.list:
        print("\n".join(available(args.dir)))
        return 0
    if args.table:
        print(preset_table(args.dir), end="")
        return 0
    if args.name is None:
        parser.error("preset: name a preset (or --list / --table)")
    path = preset_path(args.name, args.dir)
    changes = apply_preset(path, args.params, dry_run=args.dry_run)
    verb = "would change" if args.dry_run else "changed"
    print(f"{PROG} preset: {path} -> {args.params}: {verb} {len(changes)} keys" + (":" if changes else ""))
    for key in changes:
        print(f"  {key}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = _parser()
    args = parser.parse_args(argv)
    from cgstvg.inference.errors import GroundingError
    from cgstvg.utils.atomic import WriteError
    from cgstvg.utils.params_schema import ParamsError  # a ValueError: PresetError and schema problems

    try:
        return args.func(args, parser)
    except (GroundingError, WriteError, ParamsError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
