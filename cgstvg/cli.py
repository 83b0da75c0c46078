"""The `cgstvg` command line (console script `cgstvg = cgstvg.cli:main`).

    cgstvg ground --video clip.mp4 --text "the man in the red shirt sits down" --checkpoint model.pt \
        [--out tube.json] [--render out.mp4|out.gif] [--max-seconds 600] [--device auto|cpu|cuda]
    cgstvg ground --batch pairs.csv|pairs.jsonl --checkpoint model.pt --out results.jsonl

Exit status: 0 on success; 1 when the request fails (single mode) or any pair fails (batch mode); 2 for a usage
error. Every failure prints one line, `cgstvg ground: error: <message naming the file or input>`, on stderr.
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="CG-STVG: spatio-temporal video grounding.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_ground(sub)
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
    from cgstvg.inference.ground import ground
    from cgstvg.utils.atomic import write_json

    params = load_params_file(args.params, args.dataset) if args.params else None
    model = load_grounding_model(
        args.checkpoint, params=params, tokenizer_dir=args.tokenizer, device=_device(args.device)
    )

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = _parser()
    args = parser.parse_args(argv)
    from cgstvg.inference.errors import GroundingError
    from cgstvg.utils.atomic import WriteError

    try:
        return args.func(args, parser)
    except (GroundingError, WriteError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
