"""Is the temporal decoder short of steps or of signal? Refit it alone, for many cheap steps, on frozen memory.

    python bench/temporal_refit.py [--model outputs/train/model.pt --steps 2000 --eval-every 500 --threads 1]

A joint training step costs about a second on the CPU default, so the temporal decoding blocks (TDB) and their
start/end and actioness heads see 900 steps of 8 clips. This bench separates "too few steps" from "too little
signal in what the TDB reads": it runs the trained model once over the training and test clips (no augmentation,
as `evaluate` runs it) and keeps what the first TDB layer receives (the encoder memory with its decoder positions,
the time table, the masks); then it trains a freshly initialised TDB stack and fresh heads (the release's Xavier
init, its losses: loss_sted x 10 + loss_actioness x 2 on every stage, eos_coef 0.3, sigma 2; AdamW 1e-3, batches of
8 clips, gradient clipping 1.0) on that frozen memory alone, a few milliseconds a step. Every `--eval-every`
steps it decodes segments as `evaluate` does (the best start < end pair of the last stage) and prints the mean
frame-level tIoU on the test clips and on 240 training clips, beside the trained model's own.

Each line printed is a JSON object; the last one holds the final figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cgstvg.data.feature_loader import FeatureShardLoader  # noqa: E402
from cgstvg.engine.batch_model import BatchModel, grounding_targets  # noqa: E402
from cgstvg.evaluation.metrics import tiou  # noqa: E402
from cgstvg.inference.checkpoint import load_grounding_model  # noqa: E402
from cgstvg.model.blocks import MLP  # noqa: E402
from cgstvg.model.criterion import CGSTVGCriterion  # noqa: E402
from cgstvg.model.head import StageOutput  # noqa: E402
from cgstvg.model.memory import DecoderMemory  # noqa: E402
from cgstvg.model.postprocess import post_process  # noqa: E402
from cgstvg.model.targets import GroundingTargets  # noqa: E402
from cgstvg.model.temporal_decoder import TemporalDecoder  # noqa: E402


def cache_memory(model: BatchModel, loader) -> list[dict]:
    """Per batch: the first TDB layer's inputs (fp16 memory) and the GT, plus the model's own start/end logits."""
    captured: dict = {}
    hook = model.head.temporal_decoder.layers[0].register_forward_pre_hook(
        lambda m, args: captured.__setitem__("args", args)
    )
    batches = []
    with torch.no_grad():
        for batch in loader:
            out = model(batch)
            _, time_pos, time_mask, tokens, key, pad, _ = captured["args"]
            gt = grounding_targets(batch)
            batches.append(
                {
                    "tokens": tokens.half(),
                    "pos": (key - tokens).half(),
                    "pad": pad,
                    "time_pos": time_pos,
                    "time_mask": time_mask,
                    "targets": gt,
                    "own_sted": out.pred_sted,
                }
            )
    hook.remove()
    return batches


class TemporalOnly(torch.nn.Module):
    """A fresh TDB stack with fresh start/end and actioness heads, as `CGSTVGHead` builds them."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.decoder = TemporalDecoder(cfg)
        for p in self.decoder.parameters():
            if p.dim() > 1:
                torch.nn.init.xavier_uniform_(p)
        self.sted_head = MLP(d, d, 2, 2, cfg.head_dropout, cfg.dropout_on_logits)
        self.actioness_head = MLP(d, d, 1, 2, cfg.head_dropout, cfg.dropout_on_logits)

    def forward(self, c: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        b, t = c["time_mask"].shape
        memory = DecoderMemory(
            tokens=c["tokens"].float(),
            pos=c["pos"].float(),
            pad=c["pad"],
            visible=None,
            time_pos=c["time_pos"],
            time_mask=c["time_mask"],
            grid=(1, 1),  # unused by the TDB
        )
        queries = torch.zeros(b, t, self.cfg.d_model)
        stages = []
        for k in range(self.cfg.dec_layers):
            queries, hidden = self.decoder.stage(k, queries, memory, None)
            stages.append((self.sted_head(hidden), self.actioness_head(hidden).squeeze(-1)))
        return stages


def segment_tiou(pred_sted: torch.Tensor, c: dict) -> list[float]:
    """Frame-level tIoU of the decoded segments (inclusive ends) against the GT segments of one batch."""
    b, t, _ = pred_sted.shape
    tube = post_process(pred_sted, torch.zeros(b, t, 4), torch.arange(t).expand(b, t), torch.ones(b, 2), c["time_mask"])
    out = []
    for i in range(b):
        gt = c["targets"].gt_mask[i].nonzero().flatten()
        # the evaluator's formula on sampled frames, without its end quirk ('strict'): the predicted end exclusive
        pred = (int(tube.start_index[i]), int(tube.end_index[i]) + 1)
        out.append(tiou((int(gt[0]), int(gt[-1])), pred, protocol="strict"))
    return out


def mean_tiou(net: TemporalOnly, batches: list[dict]) -> float:
    net.eval()
    with torch.no_grad():
        values = [v for c in batches for v in segment_tiou(net(c)[-1][0], c)]
    net.train()
    return round(float(np.mean(values)), 4)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=REPO / "outputs" / "train" / "model.pt", type=Path)
    parser.add_argument("--outputs", default=REPO / "outputs", type=Path)
    parser.add_argument("--dataset", default="hcstvg_v1")
    parser.add_argument("--steps", default=2000, type=int)
    parser.add_argument("--eval-every", default=500, type=int)
    parser.add_argument("--lr", default=1e-3, type=float)
    parser.add_argument("--threads", default=1, type=int)
    parser.add_argument("--seed", default=0, type=int)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    model = BatchModel(load_grounding_model(args.model).model).eval()
    t0 = time.perf_counter()
    data = {}
    for split in ("train", "test"):
        loader = FeatureShardLoader(
            args.outputs / "shard" / args.dataset / split,
            args.outputs / "extract" / args.dataset / split,
            features=("motion",),
            batch_size=8,
            train=False,
        )
        data[split] = cache_memory(model, loader)
    own = round(float(np.mean([v for c in data["test"] for v in segment_tiou(c["own_sted"], c)])), 4)
    print(json.dumps({"cached_s": round(time.perf_counter() - t0), "model_own_test_frame_tiou": own}), flush=True)

    cfg = model.head.cfg.replace(context_in_temporal=False)
    net = TemporalOnly(cfg).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    criterion = CGSTVGCriterion({"loss_sted": 10.0, "loss_actioness": 2.0}, eos_coef=0.3, sigma=2.0)
    probe_train = data["train"][:30]
    t0 = time.perf_counter()
    last: dict = {}
    for step in range(1, args.steps + 1):
        c = rng.choice(data["train"])
        real = ~c["time_mask"]
        targets: GroundingTargets = c["targets"]
        loss = torch.zeros(())
        for sted, actioness in net(c):
            stage = StageOutput(pred_boxes=torch.zeros(0), boxes_conf=None, pred_sted=sted, pred_actioness=actioness)
            loss = loss + 10.0 * criterion.loss_sted(stage, targets, real)["loss_sted"]
            loss = loss + 2.0 * criterion.loss_actioness(stage, targets, real)["loss_actioness"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            last = {
                "step": step,
                "test_frame_tiou": mean_tiou(net, data["test"]),
                "train_frame_tiou": mean_tiou(net, probe_train),
                "model_own_test_frame_tiou": own,
                "seconds": round(time.perf_counter() - t0),
            }
            print(json.dumps(last), flush=True)
    return last


if __name__ == "__main__":
    main()
