"""Forward time and peak memory of the full-size CG-STVG at the release's evaluation size, on this CPU.

    python bench/model_forward.py [--frames 64 --height 420 --width 588 --threads 2 --frame-chunk 16]

The model is the release's architecture with random weights: ResNet-101 (layer4), Video Swin-T (patch 1x4x4,
window 8x7x7, depths 2-2-6-2), RoBERTa-base (vocabulary 50265, 12 layers), and the grounding head at the
release's sizes (d = 256, 8 heads, FFN 2048, 6 encoder + 6 decoder layers). One video of T frames and one
sentence run through one no_grad forward in eval mode.

Two ways run, each in its own fresh subprocess (so each peak RSS, `ru_maxrss`, is that forward's own, model
weights included), one after the other, with the same seed and so the same weights and input:
* `ours`: the way `cgstvg ground` runs (the flags below);
* `reference`: the release's computation in our code: torchvision's Video Swin attention, unfolded
  FrozenBatchNorm2d, no frame chunks, contiguous memory (fixed: no flag changes it).
The ratios divide ours by the reference measured in the same run, so they hold on any CPU; the largest absolute
difference of their boxes and start/end logits is printed too. Ours differs from the release's in how, not what:
* the Video Swin attention runs through SDPA, grouped by shift-mask class and chunked over windows
  (`attention: sdpa`), instead of one explicit (windows, heads, 392, 392) score tensor per block (4.6 GB in
  stage 1 at this size);
* the ResNet folds each FrozenBatchNorm2d into its convolution, runs in channels-last memory order, and goes
  over chunks of `--frame-chunk` frames (all equal to rounding: the layers are per-frame);
* the head has no Python loop over frames (see cgstvg/model/head.py).
The authors' own code, run once on another machine (198 s, 16.5 GB), is printed as a note only
(`release_note`); nothing is divided by it. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RELEASE_NOTE = (
    "the authors' code on another 2-core machine: 198 s, 16.5 GB peak RSS "
    "(shared/reference/official-cgstvg-code.md section 7; not measured in this run, not used in the ratios)"
)
# The reference way: the release's computation (see the module docstring).
REFERENCE_FLAGS = ["--frame-chunk", "0", "--no-channels-last", "--no-fold-batchnorm", "--attention", "torchvision"]
SENTENCE = "The man in the brown coat walks to the table, picks up a cup and turns to the woman beside him."


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def child(args: argparse.Namespace) -> dict:
    """Build the full-size model, run one forward, return the measurements (runs in the subprocess)."""
    import torch

    from cgstvg.model.appearance import ResNetTrunk
    from cgstvg.model.cgstvg import CGSTVG
    from cgstvg.model.config import RELEASE_CONFIG
    from cgstvg.model.motion import VideoSwinBackbone
    from cgstvg.model.text import ROBERTA_BASE, TextEncoder
    from cgstvg.model.tokenizer import build_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        # roberta-base's own tokenizer is not available offline; a small BPE one gives ids inside its vocabulary.
        tokenizer_dir = build_tokenizer([SENTENCE], Path(tmp) / "tokenizer", vocab_size=400)
        text = TextEncoder.from_config(
            tokenizer_dir,
            ROBERTA_BASE["hidden_size"],
            ROBERTA_BASE["num_hidden_layers"],
            ROBERTA_BASE["num_attention_heads"],
            ROBERTA_BASE["intermediate_size"],
            ROBERTA_BASE["max_position_embeddings"],
            vocab_size=ROBERTA_BASE["vocab_size"],
        )
    model = CGSTVG(
        ResNetTrunk(
            "resnet101",
            frame_chunk=args.frame_chunk,
            channels_last=not args.no_channels_last,
            fold_batchnorm=not args.no_fold_batchnorm,
        ),
        VideoSwinBackbone(attention=args.attention, attention_chunk=args.attention_chunk),
        text,
        RELEASE_CONFIG,
    ).eval()
    params = sum(p.numel() for p in model.parameters())

    seconds: dict[str, float] = {}
    starts: dict[str, float] = {}
    for name in ("appearance", "motion", "text", "head"):
        module = getattr(model, name)
        module.register_forward_pre_hook(lambda *_, n=name: starts.__setitem__(n, time.perf_counter()))
        module.register_forward_hook(
            lambda *_, n=name: seconds.__setitem__(n, seconds.get(n, 0.0) + time.perf_counter() - starts[n])
        )

    frames = torch.randn(1, args.frames, 3, args.height, args.width)
    rss_before = _peak_rss_gb()
    with torch.no_grad():
        start, cpu_start = time.perf_counter(), time.process_time()
        out = model(frames, [SENTENCE])
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if not torch.isfinite(out.pred_boxes).all():
        raise RuntimeError("model_forward: non-finite boxes")
    return {
        "outputs": {"boxes": out.pred_boxes.flatten().tolist(), "sted": out.pred_sted.flatten().tolist()},
        "seconds": round(total, 2),
        # CPU time of all threads: with other jobs on the machine, cpu_seconds / threads estimates the wall time
        # this forward would take alone.
        "cpu_seconds": round(cpu, 2),
        "peak_rss_gb": round(_peak_rss_gb(), 3),
        "peak_rss_gb_before_forward": round(rss_before, 3),
        "params": params,
        "module_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "boxes_shape": list(out.pred_boxes.shape),
    }


def _measure(flags: list[str]) -> dict:
    """One way's figures, from a fresh subprocess of this script."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *flags]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"model_forward: the measuring subprocess failed (exit {proc.returncode}): {flags}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--height", type=int, default=420)
    parser.add_argument("--width", type=int, default=588)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frame-chunk", type=int, default=16, help="ResNet frames per chunk (0 = all at once)")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--no-fold-batchnorm", action="store_true")
    parser.add_argument("--attention", default="sdpa", choices=("sdpa", "torchvision"))
    parser.add_argument("--attention-chunk", type=int, default=512)
    parser.add_argument("--no-reference", action="store_true", help="measure ours only (no ratios)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    size = ["--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width)]
    common = [*size, "--threads", str(args.threads)]
    ours_flags = ["--frame-chunk", str(args.frame_chunk), "--attention", args.attention]
    ours_flags += ["--attention-chunk", str(args.attention_chunk)]
    ours_flags += ["--no-channels-last"] * args.no_channels_last + ["--no-fold-batchnorm"] * args.no_fold_batchnorm
    ways = {"ours": _measure([*common, *ours_flags])}
    if not args.no_reference:
        ways["reference"] = _measure([*common, *REFERENCE_FLAGS])
    outputs = {name: way.pop("outputs") for name, way in ways.items()}
    result: dict = {"ours": ways["ours"]}
    if "reference" in ways:
        ref = ways["reference"]
        result.update(
            {
                "reference": ref,
                "seconds_ratio": round(ways["ours"]["seconds"] / ref["seconds"], 3),
                "cpu_seconds_ratio": round(ways["ours"]["cpu_seconds"] / ref["cpu_seconds"], 3),
                "rss_ratio": round(ways["ours"]["peak_rss_gb"] / ref["peak_rss_gb"], 3),
                "max_abs_diff": {
                    k: max(abs(a - b) for a, b in zip(outputs["ours"][k], outputs["reference"][k]))
                    for k in ("boxes", "sted")
                },
            }
        )
    result.update(
        {
            "release_note": RELEASE_NOTE,
            "config": {
                "frames": args.frames,
                "height": args.height,
                "width": args.width,
                "threads": args.threads,
                "frame_chunk": args.frame_chunk,
                "channels_last": not args.no_channels_last,
                "fold_batchnorm": not args.no_fold_batchnorm,
                "attention": args.attention,
                "attention_chunk": args.attention_chunk,
            },
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
