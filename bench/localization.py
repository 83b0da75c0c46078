"""How many steps the CG-STVG head needs to learn to box a visible target, with the release's switches and with the
small-run switches (`query_init: text`, `box_refine: anchor`, 32-wide heads).

    python bench/localization.py [--steps 600 --eval-every 25 --seeds 0 1 --threads 1]

Why this exists: on the synthetic default the box losses of the small CG-STVG stay at the constant-box level for
the whole CPU budget (README, "Training the default"). This bench removes everything but localization: the head
gets per-cell appearance features in which the target's cell is plainly marked (+2 on 4 of 8 noise channels), the
cell-centre (x, y) channels that `small_cnn.coord_channels` appends, random motion and text features, and GT boxes
on every frame; only the box terms (5 L1 + 2 GIoU, every stage) train it. Each variant trains from the same seed on
the same batches (AdamW 1e-3, clip 1.0) and is scored every `--eval-every` steps on 64 held-out videos: mean IoU
of the last stage's boxes.

The last line printed is one JSON object: per variant, the held-out IoU at each evaluation and the first step at
which it reaches 0.5 (null: not within `--steps`), averaged over the seeds, and `speedup` = release steps /
small-run steps to IoU 0.5 (when both reach it; otherwise the IoU ratio at the last step, `iou_ratio_final`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchvision.ops import box_convert, box_iou  # noqa: E402

from cgstvg.model.config import CGSTVGConfig  # noqa: E402
from cgstvg.model.criterion import CGSTVGCriterion  # noqa: E402
from cgstvg.model.head import CGSTVGHead  # noqa: E402
from cgstvg.model.targets import GroundingTargets  # noqa: E402

T, H, W, L, NOISE_CH = 8, 6, 8, 6, 8
BASE = dict(
    appearance_dim=NOISE_CH + 2,
    motion_dim=8,
    text_dim=8,
    d_model=64,
    ffn_dim=128,
    enc_layers=1,
    dec_layers=3,
    context_ffn_dim=64,
    max_video_len=32,
    dropout=0.0,
    context_mode="none",
)
VARIANTS = {
    "release": dict(heads=4, context_heads=4, query_init="zeros", box_refine="absolute"),
    "small_run": dict(heads=2, context_heads=2, query_init="text", box_refine="anchor"),
}
WEIGHTS = {"loss_bbox": 5.0, "loss_giou": 2.0}


def make_batch(batch: int, gen: torch.Generator) -> tuple[dict, GroundingTargets]:
    """Videos whose target stays in one random cell; boxes 0.15 x 0.2 centred on that cell."""
    ys, xs = (torch.arange(H) + 0.5) / H, (torch.arange(W) + 0.5) / W
    feat = torch.randn(batch, T, NOISE_CH + 2, H, W, generator=gen) * 0.5
    feat[:, :, NOISE_CH] = xs
    feat[:, :, NOISE_CH + 1] = ys[:, None]
    cy = torch.randint(0, H, (batch,), generator=gen)
    cx = torch.randint(0, W, (batch,), generator=gen)
    for i in range(batch):
        feat[i, :, :4, cy[i], cx[i]] += 2.0
    boxes = torch.stack([xs[cx], ys[cy], torch.full((batch,), 0.15), torch.full((batch,), 0.2)], -1)
    inputs = {
        "vis_feat": feat,
        "vis_mask": torch.zeros(batch, T, H, W, dtype=torch.bool),
        "motion_feat": torch.randn(batch, T, 8, H, W, generator=gen),
        "text_hidden": torch.randn(batch, L, 8, generator=gen),
        "text_mask": torch.zeros(batch, L, dtype=torch.bool),
    }
    return inputs, GroundingTargets(boxes[:, None].expand(batch, T, 4).clone(), torch.ones(batch, T, dtype=torch.bool))


@torch.no_grad()
def mean_iou(head: CGSTVGHead, inputs: dict, targets: GroundingTargets) -> float:
    head.eval()
    pred = box_convert(head(**inputs).pred_boxes.flatten(0, 1), "cxcywh", "xyxy")
    gt = box_convert(targets.boxes.flatten(0, 1), "cxcywh", "xyxy")
    head.train()
    return box_iou(pred, gt).diagonal().mean().item()


def run(variant: dict, seed: int, steps: int, eval_every: int) -> list[tuple[int, float]]:
    torch.manual_seed(seed)
    head = CGSTVGHead(CGSTVGConfig(**BASE, **variant)).train()
    criterion = CGSTVGCriterion(WEIGHTS)
    optim = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    data = torch.Generator().manual_seed(1000 + seed)
    held_out = make_batch(64, torch.Generator().manual_seed(99))
    curve = []
    for step in range(1, steps + 1):
        inputs, targets = make_batch(8, data)
        losses = criterion(head(**inputs), targets)
        total = sum(
            WEIGHTS[base] * value
            for name, value in losses.items()
            for base in WEIGHTS
            if name == base or name.startswith(base + "_")
        )
        optim.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optim.step()
        if step % eval_every == 0:
            curve.append((step, mean_iou(head, *held_out)))
    return curve


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict = {"steps": args.steps, "seeds": args.seeds, "target_iou": 0.5}
    for name, variant in VARIANTS.items():
        curves = [run(variant, seed, args.steps, args.eval_every) for seed in args.seeds]
        mean_curve = [(step, sum(c[i][1] for c in curves) / len(curves)) for i, (step, _) in enumerate(curves[0])]
        reached = [next((s for s, iou in c if iou >= 0.5), None) for c in curves]
        result[name] = {
            "iou_curve": [[s, round(v, 4)] for s, v in mean_curve],
            "iou_final": round(mean_curve[-1][1], 4),
            "steps_to_iou_0.5": reached,
        }
        print(f"{name}: IoU {mean_curve[-1][1]:.3f} after {args.steps} steps; reaches 0.5 at {reached}", flush=True)
    rel, small = result["release"]["steps_to_iou_0.5"], result["small_run"]["steps_to_iou_0.5"]
    if None not in rel and None not in small:
        result["speedup"] = round(sum(rel) / sum(small), 2)
    else:
        result["speedup"] = None
    result["iou_ratio_final"] = round(result["small_run"]["iou_final"] / max(result["release"]["iou_final"], 1e-6), 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
