"""One training step of the full-size CG-STVG at the release's HC-STVG setting: ours against the release's way.

    python bench/train_full.py [--frames 64 --height 420 --width 588 --threads 2 --checkpoint-frames 8]
                               [--device cuda --amp --warmup 1]   # bf16 autocast; adds samples/s, CUDA peak memory

The model is the release's training setting with random weights: ResNet-101 (layer2-4 trained, stem and layer1
frozen), RoBERTa-base (trained; random weights of its size, no download), Video Swin-T (frozen), the head at d = 256,
8 heads, FFN 2048, 6 encoder + 6 decoder layers, dropout 0.1, the release's losses and weights (bbox 5, giou 4,
sted 10, actioness 2, conf 1, every stage). The ResNet's frozen BatchNorm statistics are calibrated on random frames,
as a pretrained ResNet's are normalised (bench/_full_model.calibrate_frozen_batchnorm). One video of T frames and
one sentence; one step = forward, backward, gradient clipping (0.1) and an AdamW step.

Two ways, each in its own fresh subprocess (so each peak RSS, `ru_maxrss`, is that way's own, model and optimizer
included), with the same seed, hence the same weights, input and dropout masks:
* `ours`: as `train` runs it (`BatchModel`): the motion features computed once before the step, as `extract` does
  (not timed; the Swin's peak is in the RSS), the ResNet with folded BatchNorm and channels-last, and every saver of
  `train.memory` on (activation checkpointing of the ResNet over `--checkpoint-frames` chunks, of each encoder layer
  and of each decoding stage; cgstvg/model/memory_savers.py);
* `reference`: the release's way in our code: the frozen Swin recomputed inside every step with torchvision's
  window attention, unfolded FrozenBatchNorm2d, no activation checkpointing (bench/_full_model.REFERENCE_FLAGS).
The ratios divide ours by the reference of the same run. Both save their gradients after the step, and the parent
prints their relative difference over all trained parameters (`rel_grad_diff_l2` = ||g_ours - g_ref|| / ||g_ref||)
and the largest per-tensor one.

Whether the two ways compute the same gradients is decided by `exactness` (`--check-frames/-height/-width`, small,
on the CPU), not by the full-size float32 figure: a random-weight ResNet-101 amplifies float32 rounding so much
that the reference's own float32 gradients lie ~6% (relative L2) from its float64 ones, far above any tolerance a
comparison of two float32 runs could hold. The check runs both ways in float64 (`exact_rel_grad_diff_l2`, which
must be <= 1e-6: the same function, every saver on) and both in float32 against the reference in float64 (ours
must be no further from the exact gradients than the reference's own float32 run, times 1.5).
`--max-rss-gb` kills a way that outgrows the machine (reported as `failed`) instead of letting it swap.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
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
from bench._part_timer import PartTimer  # noqa: E402

LOSS_WEIGHTS = {"loss_bbox": 5, "loss_giou": 4, "loss_sted": 10, "loss_actioness": 2, "loss_conf": 1}  # hcstvg.yaml
GRAD_CLIP = 0.1  # the release's SOLVER.MAX_GRAD_NORM
EXACT_TOLERANCE = 1e-6  # float64: rounding ~1e-16, amplified by the depth
FLOAT32_SLACK = 1.5  # ours in float32 vs exact, at most this times the reference in float32 vs exact


def child(args: argparse.Namespace) -> dict:
    """Build the model, run `--warmup` untimed steps and one timed step, save the gradients (in the subprocess)."""
    import torch

    from cgstvg.engine.batch_model import BatchModel
    from cgstvg.model.criterion import CGSTVGCriterion
    from cgstvg.model.memory_savers import MemorySavers, apply_memory_savers
    from cgstvg.model.targets import GroundingTargets

    device = child_setup(args)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = (
        build_full_model(args, calibrate_batchnorm=True).train().to(device)
    )  # the frozen Swin stays in eval mode (no DropPath)
    dtype = torch.float64 if args.float64 else torch.float32  # double: rounding ~1e-16 instead of ~1e-7
    model = model.to(dtype)
    t = args.frames
    frames = torch.randn(1, t, 3, args.height, args.width).to(device, dtype)
    gt_mask = torch.zeros(1, t, dtype=torch.bool, device=device)
    gt_mask[:, t // 4 : max(t // 4 + 1, 3 * t // 4)] = True
    boxes = torch.tensor([0.45, 0.5, 0.3, 0.6], device=device, dtype=dtype).expand(1, t, 4).clone()
    targets = GroundingTargets(boxes=boxes, gt_mask=gt_mask)
    criterion = CGSTVGCriterion(LOSS_WEIGHTS)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-4)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.amp and cuda)

    if args.way == "ours":
        with torch.no_grad(), amp:  # `extract`: the frozen Swin runs once, outside the training step
            motion = model.motion(frames.flatten(0, 1), t).unflatten(0, (1, t))
        apply_memory_savers(
            model, MemorySavers(args.checkpoint_frames, not args.no_checkpoint_encoder, not args.no_checkpoint_decoder)
        )
        net = BatchModel(model)
        batch = {
            "frames": frames,
            "pixel_mask": torch.ones(1, args.height, args.width, dtype=torch.bool),  # True = real (the loader's)
            "time_mask": torch.ones(1, t, dtype=torch.bool),
            "sentences": [SENTENCE],
            "features": {"motion": motion},
        }

        def forward():
            return net(batch, targets=targets)
    else:

        def forward():
            return model(frames, [SENTENCE], targets=targets)

    timer = PartTimer(model)  # made after ours' motion features: `extract`'s work is not the step's

    def step() -> float:
        with amp:
            out = timer.timed("forward", forward)
            losses = timer.timed("loss", lambda: criterion(out, targets))
            total = criterion.weighted_total(losses, model.head.cfg.dec_layers)
        timer.active = False  # checkpoint recomputations inside backward count as backward
        timer.timed("backward", total.backward)
        timer.timed("clip+optimizer", lambda: (torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP), optimizer.step()))
        timer.active = True
        return float(total)

    for i in range(args.warmup):  # CUDA: kernels, allocator, cuDNN choices settle before the timed step
        torch.manual_seed(100 + i)
        step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = peak_rss_gb()
    torch.manual_seed(2021)  # the dropout masks of the timed step, the same in both ways
    timer.seconds.clear()
    start, cpu_start = time.perf_counter(), time.process_time()
    loss = step()
    if cuda:
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    parts = timer.parts()
    result = {
        "seconds": round(seconds, 3),
        # CPU time of all threads: with other jobs on the machine, cpu_seconds / threads estimates the wall time
        # the step would take alone.
        "cpu_seconds": round(cpu, 2),
        "peak_rss_gb": round(peak_rss_gb(), 3),
        "peak_rss_gb_before_step": round(rss_before, 3),
        "loss": loss,
        "params_trained": sum(p.numel() for p in trainable),
    }
    if not cuda:  # CUDA runs asynchronously: host-side wall times between hooks would not be the kernels' times
        result["parts_seconds"] = {k: round(v, 3) for k, v in sorted(parts.items())}
    if cuda:
        result["samples_per_s"] = round(1 / seconds, 3)
        result["cuda_max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    # Gradients after clipping (the same factor in both ways, up to rounding); saved after the measurements.
    names = {p: n for n, p in model.named_parameters()}
    torch.save({names[p]: p.grad.float().cpu() for p in trainable if p.grad is not None}, args.grads_out)
    return result


def grad_difference(ours_path: str, ref_path: str) -> dict:
    """How far the two ways' gradients are apart: over all trained parameters together, ||a - b|| / ||b||; per
    tensor, the largest max|a - b| / max|b| and where. Tensors whose gradient is below 1e-6 of the largest entry are
    left out of the per-tensor figure: the key biases of every attention get a gradient that is exactly zero in
    exact arithmetic (softmax ignores a shift common to all keys), i.e. pure rounding noise."""
    import torch

    a, b = torch.load(ours_path), torch.load(ref_path)
    common = sorted(a.keys() & b.keys())
    largest = max(float(b[n].abs().max()) for n in common)
    worst, where, num, den = 0.0, "", 0.0, 0.0
    for name in common:
        num += float((a[name] - b[name]).double().pow(2).sum())
        den += float(b[name].double().pow(2).sum())
        scale = float(b[name].abs().max())
        if scale <= 1e-6 * largest:
            continue
        diff = float((a[name] - b[name]).abs().max()) / scale
        if diff > worst:
            worst, where = diff, name
    return {
        "rel_grad_diff_l2": (num / den) ** 0.5,
        "max_rel_grad_diff": worst,
        "worst_parameter": where,
        "compared_tensors": len(common),
        "grad_in_one_way_only": sorted(a.keys() ^ b.keys()),
    }


def ours_flags(args: argparse.Namespace) -> list[str]:
    """The child flags of ours: model flags and the memory savers as given to this run."""
    flags = [*ours_model_flags(args), "--checkpoint-frames", str(args.checkpoint_frames)]
    if args.no_checkpoint_encoder:
        flags.append("--no-checkpoint-encoder")
    if args.no_checkpoint_decoder:
        flags.append("--no-checkpoint-decoder")
    return flags


def two_ways(script: Path, args: argparse.Namespace, folder: Path, common: list[str], tag: str = "") -> dict:
    """Measure `ours` and `reference`, each in its own subprocess; their gradients go to folder/{way}{tag}.pt."""
    common = [*common, "--warmup", str(args.warmup)]
    flags = {"ours": ours_flags(args), "reference": REFERENCE_FLAGS}
    return {
        way: measure(
            script, [*common, *flags[way], "--way", way, "--grads-out", str(folder / f"{way}{tag}.pt")], args.max_rss_gb
        )
        for way in ("ours", "reference")
    }


def exactness(script: Path, args: argparse.Namespace, folder: Path) -> dict:
    """Both ways at the small check size on the CPU, in float64 and in float32: see the module docstring."""
    size = ["--frames", str(args.check_frames), "--height", str(args.check_height), "--width", str(args.check_width)]
    common = [*size, "--threads", str(args.threads), "--device", "cpu"]
    for tag, extra in (("64", ["--float64"]), ("32", [])):
        for way, out in two_ways(script, args, folder, common + extra, tag).items():
            if "failed" in out:
                return {"failed": f"{way} (float{tag}): {out['failed']}"}
    g = {name: str(folder / f"{name}.pt") for name in ("ours64", "reference64", "ours32", "reference32")}
    exact = grad_difference(g["ours64"], g["reference64"])
    ours32 = grad_difference(g["ours32"], g["reference64"])["rel_grad_diff_l2"]
    ref32 = grad_difference(g["reference32"], g["reference64"])["rel_grad_diff_l2"]
    return {
        "size": {"frames": args.check_frames, "height": args.check_height, "width": args.check_width},
        "exact_rel_grad_diff_l2": exact["rel_grad_diff_l2"],
        "exact_max_rel_grad_diff": exact["max_rel_grad_diff"],
        "exact_tolerance": EXACT_TOLERANCE,
        "float32_ours_vs_exact": ours32,
        "float32_reference_vs_exact": ref32,
        "grads_equal": exact["rel_grad_diff_l2"] <= EXACT_TOLERANCE
        and not exact["grad_in_one_way_only"]
        and ours32 <= FLOAT32_SLACK * ref32,
    }


SAVER_OFF_FLAGS = {
    "checkpoint_appearance_frames": ["--checkpoint-frames", "0"],
    "checkpoint_encoder": ["--no-checkpoint-encoder"],
    "checkpoint_decoder": ["--no-checkpoint-decoder"],
}


def switch_costs(script: Path, args: argparse.Namespace, folder: Path, ours: dict) -> dict:
    """Ours again with one saver off at a time (same size): the saver's time cost is ours' seconds minus that
    run's, its memory saving that run's peak RSS minus ours'."""
    common = [*common_flags(args), "--warmup", str(args.warmup), "--way", "ours"]
    base = ours_flags(args)
    costs = {}
    for saver, off in SAVER_OFF_FLAGS.items():
        out = measure(script, [*common, *base, *off, "--grads-out", str(folder / f"off-{saver}.pt")], args.max_rss_gb)
        if "failed" in out:
            costs[saver] = {"failed": out["failed"]}
            continue
        costs[saver] = {
            "off_seconds": out["seconds"],
            "off_peak_rss_gb": out["peak_rss_gb"],
            "costs_seconds": round(ours["seconds"] - out["seconds"], 2),
            "saves_rss_gb": round(out["peak_rss_gb"] - ours["peak_rss_gb"], 3),
            # where the time went without the saver: a recomputation shows up as a shorter backward
            "off_parts_seconds": out.get("parts_seconds", {}),
        }
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_flags(parser, frame_chunk=0)
    parser.add_argument("--checkpoint-frames", type=int, default=8, help="ours: frames per checkpointed ResNet chunk")
    parser.add_argument("--no-checkpoint-encoder", action="store_true", help="ours: encoder layers not checkpointed")
    parser.add_argument("--no-checkpoint-decoder", action="store_true", help="ours: decoder stages not checkpointed")
    parser.add_argument(
        "--switch-costs",
        action="store_true",
        help="also run ours once with each saver off: what each costs in seconds and saves in peak RSS",
    )
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps before the timed one (CUDA: 1)")
    parser.add_argument("--max-rss-gb", type=float, default=None, help="kill a way whose resident memory passes it")
    parser.add_argument(
        "--keep-grads", default="", help="a folder to keep both ways' gradients in (ours.pt, reference.pt)"
    )
    parser.add_argument(
        "--float64", action="store_true", help="both ways in double precision (the gradient check without rounding)"
    )
    parser.add_argument("--check-frames", type=int, default=4, help="exactness check size (0: no check)")
    parser.add_argument("--check-height", type=int, default=96)
    parser.add_argument("--check-width", type=int, default=128)
    parser.add_argument("--way", choices=("ours", "reference"), default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--grads-out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    script = Path(__file__).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep_grads or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        result: dict = two_ways(script, args, folder, [*common_flags(args)] + ["--float64"] * args.float64)
        if "failed" not in result["ours"] and "failed" not in result["reference"]:
            ours, ref = result["ours"], result["reference"]
            result.update(
                {
                    "seconds_ratio": round(ours["seconds"] / ref["seconds"], 3),
                    "cpu_seconds_ratio": round(ours["cpu_seconds"] / ref["cpu_seconds"], 3),
                    "rss_ratio": round(ours["peak_rss_gb"] / ref["peak_rss_gb"], 3),
                    **grad_difference(str(folder / "ours.pt"), str(folder / "reference.pt")),
                    "loss_diff": abs(ours["loss"] - ref["loss"]),
                }
            )
            if "cuda_max_memory_allocated_gb" in ref:
                result["cuda_memory_ratio"] = round(
                    ours["cuda_max_memory_allocated_gb"] / ref["cuda_max_memory_allocated_gb"], 3
                )
        if args.switch_costs and "failed" not in result["ours"]:
            result["switch_costs"] = switch_costs(script, args, folder, result["ours"])
        if args.check_frames > 0:
            result["exactness"] = exactness(script, args, folder)
        if "seconds_ratio" in result and "exactness" in result:
            result["bar"] = {
                "rss_ratio_le_0.33": result["rss_ratio"] <= 0.33,
                "seconds_ratio_le_0.5": result["seconds_ratio"] <= 0.5,
                "grads_equal": result["exactness"]["grads_equal"],
            }
    config = model_config(args)
    config.update({"checkpoint_frames": args.checkpoint_frames, "warmup": args.warmup})
    result.update({"config": config, "load_average_1min": load_average()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
