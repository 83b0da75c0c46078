"""What dropout costs the full-size multimodal encoder on the CPU: training-mode forward and backward with the
release's dropout (0.1) against the same encoder with dropout 0, in this process, plus the share of the forward
that torch's profiler puts in `aten::bernoulli_` (the dropout masks).

    python bench/encoder_dropout.py [--frames 16 --tokens 560 --threads 2 --repeats 2]

The defaults are the full-size encoder of bench/train_full.py at T = 16 (6 layers, d = 256, 8 heads, FFN 2048;
560 tokens per frame: 266 appearance + 266 motion cells of a 420x588 frame at stride 32, and the sentence). The
last line printed is one JSON object; `forward_ratio` = forward seconds with dropout / without (the best of
`--repeats` steps of each, after one untimed step).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import torch
    from torch.profiler import profile

    from cgstvg.model.encoder import MultimodalEncoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=560)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, s, d = args.frames, args.tokens, 256
    x = torch.randn(n, s, d, requires_grad=True)
    pos = torch.randn(n, s, d)
    mask = torch.zeros(n, s, dtype=torch.bool)
    mask[:, -5:] = True  # a padded sentence tail, as in a batch
    result: dict = {"config": vars(args)}
    for dropout in (0.1, 0.0):
        encoder = MultimodalEncoder(d, 8, 2048, 6, dropout).train()
        forward, backward = [], []
        for _ in range(1 + args.repeats):
            start = time.perf_counter()
            out = encoder(x, pos, mask)
            middle = time.perf_counter()
            out.sum().backward()
            forward.append(middle - start)
            backward.append(time.perf_counter() - middle)
        key = f"dropout_{dropout}"
        result[key] = {"forward_s": round(min(forward[1:]), 3), "backward_s": round(min(backward[1:]), 3)}
        if dropout > 0:
            with profile() as prof:
                encoder(x, pos, mask)
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            bernoulli = sum(e.self_cpu_time_total for e in events if e.key == "aten::bernoulli_")
            result[key]["bernoulli_share_of_forward"] = round(bernoulli / total, 3)
    result["forward_ratio"] = round(result["dropout_0.1"]["forward_s"] / result["dropout_0.0"]["forward_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
