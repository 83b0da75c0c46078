"""What the full-size benchmarks share (bench/model_forward.py, bench/train_full.py): the release-size model with
random weights, the reference way's flags, and one way measured in a fresh subprocess (its own peak RSS).

The reference way computes the release's way in our code: torchvision's Video Swin attention, unfolded
FrozenBatchNorm2d, no frame chunks, contiguous memory (`REFERENCE_FLAGS`, the flags of `add_model_flags`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# The reference way: the release's computation (see the module docstring).
REFERENCE_FLAGS = ["--frame-chunk", "0", "--no-channels-last", "--no-fold-batchnorm", "--attention", "torchvision"]
SENTENCE = "The man in the brown coat walks to the table, picks up a cup and turns to the woman beside him."


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def add_model_flags(parser: argparse.ArgumentParser, frame_chunk: int = 16) -> None:
    """The size, device and backbone flags of a full-size benchmark."""
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--height", type=int, default=420)
    parser.add_argument("--width", type=int, default=588)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--frame-chunk", type=int, default=frame_chunk, help="ResNet frames per chunk (0 = all)")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--no-fold-batchnorm", action="store_true")
    parser.add_argument("--attention", default="sdpa", choices=("sdpa", "torchvision"))
    parser.add_argument("--attention-chunk", type=int, default=512)


def common_flags(args: argparse.Namespace) -> list[str]:
    """The flags both ways share: size, threads, device."""
    flags = ["--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width)]
    flags += ["--threads", str(args.threads), "--device", args.device] + ["--amp"] * args.amp
    return flags


def ours_model_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--frame-chunk", str(args.frame_chunk), "--attention", args.attention]
    flags += ["--attention-chunk", str(args.attention_chunk)]
    return flags + ["--no-channels-last"] * args.no_channels_last + ["--no-fold-batchnorm"] * args.no_fold_batchnorm


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "frames": args.frames,
        "height": args.height,
        "width": args.width,
        "threads": args.threads,
        "device": args.device,
        "amp": args.amp,
        "frame_chunk": args.frame_chunk,
        "channels_last": not args.no_channels_last,
        "fold_batchnorm": not args.no_fold_batchnorm,
        "attention": args.attention,
        "attention_chunk": args.attention_chunk,
    }


def calibrate_frozen_batchnorm(trunk: Any, height: int = 128, width: int = 160) -> None:
    """Set every FrozenBatchNorm2d's statistics to those of its input on two fixed random frames, in place.

    Why: with random weights and the identity statistics (mean 0, var 1) a ResNet-101 is not normalised at all; its
    layer3 activations grow to ~1e4 and layer4's to ~1e5, where float32 rounding alone moves training gradients by
    several percent between two equal computations. Calibrated statistics make it as well-scaled as a pretrained
    one (unit-variance BN outputs), so that two ways' gradients can be compared. Deterministic: own generator, and
    computed in float64 on a contiguous copy, so that both ways (channels-last or not) get the same statistics.
    """
    import copy

    import torch
    from torchvision.ops import FrozenBatchNorm2d

    stats: dict[str, tuple[Any, Any]] = {}
    probe = copy.deepcopy(trunk).double()

    def calibrate(name: str) -> Any:
        def hook(bn: Any, inputs: tuple) -> None:
            x = inputs[0]
            var = x.var(dim=(0, 2, 3))
            # Channels that are (nearly) zero on these frames would get a scale of up to 1/sqrt(eps) = 316 and
            # amplify rounding elsewhere; a floor at a tenth of the layer's mean variance keeps every scale moderate.
            mean, var = x.mean(dim=(0, 2, 3)), var.clamp_min(0.1 * float(var.mean()))
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            stats[name] = (mean, var)

        return hook

    for name, module in probe.named_modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.register_forward_pre_hook(calibrate(name))
    frames = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        probe._trunk(frames)  # the unfolded modules, so that each BN sees its own (already calibrated) input
    for name, module in trunk.named_modules():
        if name in stats:
            module.running_mean.copy_(stats[name][0])
            module.running_var.copy_(stats[name][1])


def build_full_model(args: argparse.Namespace, calibrate_batchnorm: bool = False) -> Any:
    """The release-size CGSTVG with random weights from the current torch seed (the same in every process);
    `calibrate_batchnorm`: see `calibrate_frozen_batchnorm` (consumes no global RNG)."""
    from cgstvg.model.appearance import ResNetTrunk
    from cgstvg.model.cgstvg import CGSTVG
    from cgstvg.model.config import RELEASE_CONFIG
    from cgstvg.model.motion import VideoSwinBackbone
    from cgstvg.model.text import ROBERTA_BASE, TextEncoder
    from cgstvg.model.tokenizer import build_tokenizer

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
    resnet = ResNetTrunk(
        "resnet101",
        frame_chunk=args.frame_chunk,
        channels_last=not args.no_channels_last,
        fold_batchnorm=not args.no_fold_batchnorm,
    )
    model = CGSTVG(
        resnet,
        VideoSwinBackbone(attention=args.attention, attention_chunk=args.attention_chunk),
        text,
        RELEASE_CONFIG,
    )
    if calibrate_batchnorm:
        calibrate_frozen_batchnorm(resnet)
    return model


def child_setup(args: argparse.Namespace) -> Any:
    """In a measuring subprocess: the torch device, threads, and this process first in line for the OOM killer
    (a way that outgrows the machine must not take other jobs with it)."""
    import torch

    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here (--device cuda)")
    return device


def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 0.0


def measure(script: Path, flags: list[str], max_rss_gb: float | None = None) -> dict:
    """One way's figures: the last stdout line (JSON) of `script --child FLAGS` run in a fresh subprocess.

    With `max_rss_gb`, the subprocess is killed when its resident memory passes it (polled every 0.1 s), and the
    result is {"failed": why}, so that a way too large for the machine is reported instead of swapping it out.
    """
    cmd = [sys.executable, str(script), "--child", *flags]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list[float] = []

    def watch() -> None:
        while proc.poll() is None:
            rss = _rss_gb(proc.pid)
            if max_rss_gb is not None and rss > max_rss_gb:
                killed.append(rss)
                proc.kill()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if killed:
        return {"failed": f"killed at {killed[0]:.1f} GB resident, over --max-rss-gb {max_rss_gb}"}
    if proc.returncode == -9:
        return {"failed": "killed by the kernel (out of memory?)"}
    if proc.returncode != 0:
        sys.stderr.write(err)
        raise SystemExit(f"{script.name}: the measuring subprocess failed (exit {proc.returncode}): {flags}")
    return json.loads(out.strip().splitlines()[-1])


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


__all__ = [
    "REFERENCE_FLAGS",
    "SENTENCE",
    "add_model_flags",
    "build_full_model",
    "calibrate_frozen_batchnorm",
    "child_setup",
    "common_flags",
    "load_average",
    "measure",
    "model_config",
    "ours_model_flags",
    "peak_rss_gb",
]
