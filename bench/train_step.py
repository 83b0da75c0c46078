"""Seconds per training step with cached motion features against recomputing the frozen Video Swin every step.

    python bench/train_step.py [--params params.yaml --batch 8 --frames 31 --steps 5 --threads 2 --motion swin_t]

The release keeps Video Swin frozen yet runs it in every training step; `extract` runs it once and `train` reads
its features. Both ways train the same model (params.yaml `model`, CPU default: small CNN + RoBERTa trained end to
end) on the same batch of random frames, one after the other in this process: "cached" feeds the batch's motion
features computed once beforehand, "recomputed" runs the frozen Swin (no grad) inside each step. The first step of
each way is a warm-up and is not timed. The last line printed is one JSON object: seconds per step of both ways
and `speedup` = recomputed / cached.

`--motion params` uses params.yaml's motion backbone (the CPU default's is tiny, so the gain is small);
`--motion swin_t` the release's Video Swin-T (embed 96, window 8x7x7) cut after its third stage, so that its
stride-16 grid matches the small CNN's on the default's 96 x 128 frames.
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

SWIN_T_STRIDE16 = {
    "embed_dim": 96,
    "depths": [2, 2, 6],
    "num_heads": [3, 6, 12],
    "patch_size": [1, 4, 4],
    "window_size": [8, 7, 7],
    "stochastic_depth_prob": 0.2,
    "attention": "sdpa",
}
SENTENCES = [
    "the red square moves left",
    "a blue circle is moving up",
    "the triangle that is green grows",
    "a yellow square gets bigger",
    "the purple circle moves right",
    "a green triangle moves down",
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--batch", type=int, default=8, help="videos per step (params.yaml train.batch_size: 8)")
    parser.add_argument("--frames", type=int, default=31, help="frames per video (the default's sampled clip)")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per way (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--motion",
        choices=("params", "swin_t"),
        default="params",
        help="motion backbone: params.yaml's, or Video Swin-T's first three stages",
    )
    args = parser.parse_args(argv)

    import torch
    import yaml

    from cgstvg.engine.batch_model import BatchModel
    from cgstvg.model.cgstvg import build_cgstvg
    from cgstvg.model.criterion import CGSTVGCriterion
    from cgstvg.model.targets import GroundingTargets
    from cgstvg.model.tokenizer import build_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params = yaml.safe_load(open(args.params))
    if args.motion == "swin_t":
        params["model"]["backbones"]["motion"] = SWIN_T_STRIDE16
    b, t = args.batch, args.frames
    vocab = params["model"]["backbones"]["text"]["tokenizer_vocab_size"]
    with tempfile.TemporaryDirectory() as tmp:
        model = build_cgstvg(params["model"], build_tokenizer(SENTENCES, Path(tmp) / "tok", vocab))
    model = BatchModel(model).train()
    criterion = CGSTVGCriterion(**params["model"]["loss"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    frames = torch.randn(b, t, 3, args.height, args.width)
    gt_mask = torch.zeros(b, t, dtype=torch.bool)
    gt_mask[:, t // 4 : t // 2] = True
    targets = GroundingTargets(boxes=torch.tensor([0.5, 0.5, 0.2, 0.2]).expand(b, t, 4).clone(), gt_mask=gt_mask)
    batch = {
        "frames": frames,
        "pixel_mask": torch.ones(b, args.height, args.width, dtype=torch.bool),
        "time_mask": torch.ones(b, t, dtype=torch.bool),
        "sentences": [SENTENCES[i % 6] for i in range(b)],
    }
    with torch.no_grad():
        cached = model.motion(frames.flatten(0, 1), t).unflatten(0, (b, t))

    def step(recompute: bool) -> None:
        if recompute:  # the release's way: the frozen backbone runs in every step
            with torch.no_grad():
                motion = model.motion(batch["frames"].flatten(0, 1), t).unflatten(0, (b, t))
        else:
            motion = cached
        losses = criterion(model(dict(batch, features={"motion": motion}), targets=targets), targets)
        criterion.weighted_total(losses, model.head.cfg.dec_layers).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = {}
    for name, recompute in (("cached", False), ("recomputed", True)):
        step(recompute)  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            step(recompute)
        seconds[name] = (time.perf_counter() - start) / args.steps
    result = {
        "bench": "train_step",
        "batch": b,
        "frames": t,
        "size": [args.height, args.width],
        "threads": args.threads,
        "steps": args.steps,
        "seconds_per_step_cached_motion": round(seconds["cached"], 4),
        "seconds_per_step_recomputed_motion": round(seconds["recomputed"], 4),
        "speedup": round(seconds["recomputed"] / seconds["cached"], 3),
        "motion_backbone": params["model"]["backbones"]["motion"],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
