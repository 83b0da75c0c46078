"""Forward time and peak memory of the full-size CG-STVG at the release's evaluation size, on this CPU.

    python bench/model_forward.py [--frames 64 --height 420 --width 588 --threads 2 --frame-chunk 16]
                                  [--device cuda --amp]   # bf16 autocast; adds samples/s and CUDA peak memory

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
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._full_model import (  # noqa: E402
    REFERENCE_FLAGS,
    SENTENCE,
    add_model_flags,
    build_full_model,
    child_setup,
    common_flags,
    load_average,
    measure,
    model_config,
    ours_model_flags,
    peak_rss_gb,
)

RELEASE_NOTE = (
    "the authors' code on another 2-core machine: 198 s, 16.5 GB peak RSS "
    "(shared/reference/official-cgstvg-code.md section 7; not measured in this run, not used in the ratios)"
)


def child(args: argparse.Namespace) -> dict:
    """Build the full-size model, run one forward, return the measurements (runs in the subprocess)."""
    import torch

    device = child_setup(args)
    torch.manual_seed(0)
    model = build_full_model(args).eval()
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
    model, frames = model.to(device), frames.to(device)
    cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.amp and cuda)
    rss_before = peak_rss_gb()
    if cuda:
        with torch.no_grad(), amp:  # warm-up: CUDA kernels and allocator, so the timed forward is steady state
            model(frames, [SENTENCE])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad(), amp:
        start, cpu_start = time.perf_counter(), time.process_time()
        out = model(frames, [SENTENCE])
        if cuda:
            torch.cuda.synchronize()
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if not torch.isfinite(out.pred_boxes).all():
        raise RuntimeError("model_forward: non-finite boxes")
    result = {
        "outputs": {
            "boxes": out.pred_boxes.float().flatten().tolist(),
            "sted": out.pred_sted.float().flatten().tolist(),
        },
        "seconds": round(total, 3),
        # CPU time of all threads: with other jobs on the machine, cpu_seconds / threads estimates the wall time
        # this forward would take alone.
        "cpu_seconds": round(cpu, 2),
        "peak_rss_gb": round(peak_rss_gb(), 3),
        "peak_rss_gb_before_forward": round(rss_before, 3),
        "params": params,
        "module_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "boxes_shape": list(out.pred_boxes.shape),
    }
    if cuda:
        result["samples_per_s"] = round(1 / total, 3)
        result["cuda_max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_flags(parser, frame_chunk=16)
    parser.add_argument("--no-reference", action="store_true", help="measure ours only (no ratios)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    script, common = Path(__file__).resolve(), common_flags(args)
    ways = {"ours": measure(script, [*common, *ours_model_flags(args)])}
    if not args.no_reference:
        ways["reference"] = measure(script, [*common, *REFERENCE_FLAGS])
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
        if "cuda_max_memory_allocated_gb" in ref:
            result["cuda_memory_ratio"] = round(
                ways["ours"]["cuda_max_memory_allocated_gb"] / ref["cuda_max_memory_allocated_gb"], 3
            )
    result.update({"release_note": RELEASE_NOTE, "config": model_config(args), "load_average_1min": load_average()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
