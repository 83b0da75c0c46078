"""Where a trained model loses the temporal signal: linear probes of "inside the GT segment" frame by frame.

    python bench/temporal_probe.py [--model outputs/train/model.pt --outputs outputs --split test --threads 2]

Why this exists: the default's segments hardly depend on the video (README "What the default run gives"), while
its boxes follow the target. This bench runs a trained grounding checkpoint over one split's cached features
(as `evaluate` does, one pass) and asks, for every real frame, which internal tensor still tells whether the
frame lies inside the GT segment:
- `raw_motion_in_box`: the frozen Video Swin features mean-pooled inside the model's predicted box (the release's
  ICG pooling, `cgstvg.model.instance_context.box_mean_pool`);
- `memory_motion_in_box`, `memory_appearance_in_box`: the encoder's motion / appearance tokens pooled likewise;
- `memory_frame_mean`: the mean of all the frame's encoder tokens;
- `temporal_hidden`: the last temporal decoding block's output after its norm (what the start/end and actioness
  heads read);
- `actioness_logit`, `start_end_logits`: the heads' own outputs.
Each probe is a logistic regression (standardised features, L-BFGS, L2 1e-3) fitted on the frames of the even
clips and scored on the odd ones; `majority` is the larger class's share among the scored frames. Also printed:
the AUC of the actioness logit, and the mean frame-level tIoU of segments decoded from it (the best run of
`logit - threshold`) beside the model's own start/end decoding and a fixed middle segment (30%-75% of the clip).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cgstvg.data.feature_loader import FeatureShardLoader  # noqa: E402
from cgstvg.engine.batch_model import BatchModel, grounding_targets  # noqa: E402
from cgstvg.evaluation.metrics import tiou  # noqa: E402
from cgstvg.inference.checkpoint import load_grounding_model  # noqa: E402
from cgstvg.model.instance_context import box_mean_pool  # noqa: E402
from cgstvg.model.postprocess import post_process  # noqa: E402


def collect(model: BatchModel, loader) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, list]:
    """Per real frame: every probed tensor, the in-GT label and the clip index; per clip the model's segment."""
    captured: dict[str, torch.Tensor] = {}
    hidden: list[torch.Tensor] = []
    hooks = [
        model.head.encoder.register_forward_hook(lambda m, i, o: captured.__setitem__("memory", o)),
        model.head.temporal_decoder.norm.register_forward_hook(lambda m, i, o: hidden.append(o)),
    ]
    feats: dict[str, list[torch.Tensor]] = {}
    labels, clips, segments = [], [], []
    n = 0
    with torch.no_grad():
        for batch in loader:
            hidden.clear()
            out = model(batch)
            real = batch["time_mask"].bool()  # True = real frame
            b, t = real.shape
            memory = captured["memory"]
            raw = batch["features"]["motion"].float()  # (B, T, C, H', W')
            h, w = raw.shape[-2:]
            boxes = out.pred_boxes.reshape(b * t, 4)
            probes = {
                "raw_motion_in_box": box_mean_pool(raw.flatten(0, 1).permute(0, 2, 3, 1), boxes),
                "memory_motion_in_box": box_mean_pool(memory[:, -h * w :].unflatten(1, (h, w)), boxes),
                "memory_appearance_in_box": box_mean_pool(memory[:, : h * w].unflatten(1, (h, w)), boxes),
                "memory_frame_mean": memory.mean(dim=1),
                "temporal_hidden": hidden[-1].reshape(b * t, -1),
                "actioness_logit": out.pred_actioness.reshape(b * t, 1),
                "start_end_logits": out.pred_sted.reshape(b * t, 2),
            }
            keep = real.reshape(-1)
            for name, value in probes.items():
                feats.setdefault(name, []).append(value[keep])
            labels.append(grounding_targets(batch).gt_mask.reshape(-1)[keep])
            clips.append((torch.arange(b)[:, None].expand(b, t).reshape(-1) + n)[keep])
            # the evaluator's decoding, in sampled-frame indices (frame ids and sizes do not change the pair)
            tube = post_process(out.pred_sted, out.pred_boxes, torch.arange(t).expand(b, t), torch.ones(b, 2), ~real)
            segments.extend(zip(tube.start_index.tolist(), tube.end_index.tolist()))
            n += b
    for hook in hooks:
        hook.remove()
    return {k: torch.cat(v).float() for k, v in feats.items()}, torch.cat(labels).float(), torch.cat(clips), segments


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, fit: torch.Tensor) -> float:
    """Held-out accuracy of a logistic regression fitted on the `fit` rows, scored on the others."""
    mean, std = x[fit].mean(0), x[fit].std(0) + 1e-6
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x[fit] @ w + b, y[fit]) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((((x[~fit] @ w + b) > 0).float() == y[~fit]).float().mean())


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Probability that a random in-GT frame scores above a random outside one (ties count half)."""
    pos, neg = score[label > 0.5], score[label <= 0.5]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def best_run(values: np.ndarray) -> tuple[int, int]:
    """[start, end] (inclusive) of the contiguous run with the largest sum (Kadane)."""
    best, current, begin, span = -np.inf, 0.0, 0, (0, 0)
    for i, v in enumerate(values):
        if current <= 0:
            current, begin = float(v), i
        else:
            current += float(v)
        if current > best:
            best, span = current, (begin, i)
    return span


def frame_tiou(pred: tuple[int, int], gt: tuple[int, int]) -> float:
    """tIoU of two inclusive sampled-frame segments: the evaluator's formula without its end quirk ('strict')."""
    return tiou(gt, (pred[0], pred[1] + 1), protocol="strict")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=REPO / "outputs" / "train" / "model.pt", type=Path)
    parser.add_argument("--outputs", default=REPO / "outputs", type=Path)
    parser.add_argument("--dataset", default="hcstvg_v1")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", default=2, type=int)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = BatchModel(load_grounding_model(args.model).model).eval()
    loader = FeatureShardLoader(
        args.outputs / "shard" / args.dataset / args.split,
        args.outputs / "extract" / args.dataset / args.split,
        features=("motion",),
        batch_size=8,
        train=False,
    )
    feats, y, clip, segments = collect(model, loader)
    fit = clip % 2 == 0
    result: dict = {
        "model": str(args.model),
        "split": f"{args.dataset}/{args.split}",
        "frames": int(y.numel()),
        "majority": round(float(max(y[~fit].mean(), 1 - y[~fit].mean())), 3),
        "probe_accuracy": {name: round(probe_accuracy(x, y, fit), 3) for name, x in feats.items()},
    }
    logit, label, clips = feats["actioness_logit"].squeeze(1).numpy(), y.numpy(), clip.numpy()
    result["actioness_auc"] = round(auc(logit, label), 3)
    gt = {c: np.nonzero(label[clips == c])[0] for c in np.unique(clips)}
    truth = {c: (int(g[0]), int(g[-1])) for c, g in gt.items()}
    decoded = {}
    for threshold in (-0.5, 0.0, 0.5, 1.0):
        ious = [frame_tiou(best_run(logit[clips == c] - threshold), truth[c]) for c in truth]
        decoded[f"actioness_run_above_{threshold}"] = round(float(np.mean(ious)), 3)
    decoded["model_start_end"] = round(float(np.mean([frame_tiou(segments[c], truth[c]) for c in truth])), 3)
    lengths = {c: int((clips == c).sum()) for c in truth}
    middle = [frame_tiou((int(0.3 * lengths[c]), int(0.75 * lengths[c])), truth[c]) for c in truth]
    decoded["fixed_middle_segment"] = round(float(np.mean(middle)), 3)
    result["segment_frame_tiou"] = decoded
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
