"""What frozen motion features say about the target's action, frame by frame: a linear probe on STVG clips.

    python bench/motion_probe.py [--motion random PATH ...] [--train-clips 800 --test-clips 200 --threads 2]

Why this exists: grounding needs from the frozen Video Swin what the *described* object does in *each frame*,
read at its place (ICG pools the motion features inside the predicted box; the decoders read each frame's
cells). This bench measures exactly that for each motion checkpoint (`random` = the random frozen Swin of
`model.backbones.motion`; a path = a Kinetics-layout file as `model.init.motion` takes it):
- the default data's generator (params.yaml `synthesize`) draws the `hcstvg_v1` training and test clips, frames
  and true target boxes included;
- the backbone runs over every clip's frames; its features are mean-pooled inside the target's box in every
  frame (the release's ICG pooling, `cgstvg.model.instance_context.box_mean_pool`);
- a linear classifier (standardised features, cross-entropy, Adam, full batch) is fitted on the training clips'
  frames to the target's action in that frame (five actions or none) and scored on the test clips' frames.

The last line printed is one JSON object: per checkpoint, the test accuracy of the action, the accuracy of
"inside the GT segment or not" derived from it (predicted action == the sentence's action), and the majority
class's accuracy; and `ratio_over_first` = each checkpoint's action accuracy / the first checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cgstvg.data.collate import normalize_frames  # noqa: E402
from cgstvg.data.synthetic import SynthesizeConfig, make_clip  # noqa: E402
from cgstvg.data.synthetic.scene import ACTIONS  # noqa: E402
from cgstvg.model.backbone_weights import load_kinetics_init  # noqa: E402
from cgstvg.model.instance_context import box_mean_pool  # noqa: E402
from cgstvg.model.motion import build_motion  # noqa: E402
from cgstvg.utils.params import load_params, section  # noqa: E402


def clip_features(backbone, cfg: SynthesizeConfig, split: str, clips: int):
    """Per frame of every clip: the box-pooled feature, the target's action index (0 = none), the sentence's."""
    scene = cfg.scene
    size = torch.tensor([scene.width, scene.height, scene.width, scene.height], dtype=torch.float32)
    feats, labels, described = [], [], []
    for index in range(clips):
        clip = make_clip(cfg.seed, "hcstvg_v1", split, index, scene)
        frames = normalize_frames(torch.from_numpy(clip.frames).permute(0, 3, 1, 2))
        with torch.no_grad():
            grid = backbone(frames, num_frames=len(frames))  # (T, C, h, w)
        xyxy = torch.from_numpy(clip.target_boxes.astype(np.float32)) / size
        cxcywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], dim=1)
        feats.append(box_mean_pool(grid.permute(0, 2, 3, 1), cxcywh))
        per_frame = np.zeros(len(frames), np.int64)
        for action, start, end in clip.scene.target_object.actions:
            per_frame[start : end + 1] = ACTIONS.index(action) + 1
        labels.append(torch.from_numpy(per_frame))
        described.append(torch.full((len(frames),), ACTIONS.index(clip.scene.action) + 1))
    return torch.cat(feats), torch.cat(labels), torch.cat(described)


def linear_probe(x_train, y_train, x_test, steps: int = 1500, lr: float = 1e-2) -> torch.Tensor:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-5
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    torch.manual_seed(0)
    probe = torch.nn.Linear(x_train.shape[1], len(ACTIONS) + 1)
    optimizer = torch.optim.Adam(probe.parameters(), lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(probe(x_train), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return probe(x_test).argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--motion", nargs="+", default=["random", "outputs/pretrain_motion/swin_k400.pth"])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--train-clips", type=int, default=800)
    parser.add_argument("--test-clips", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    cfg = SynthesizeConfig.from_params(section(params, "synthesize", args.params), args.params)
    motion_cfg = section(params, "model", args.params)["backbones"]["motion"]
    results = {}
    for source in args.motion:
        torch.manual_seed(int(section(params, "base", args.params)["seed"]))
        backbone = build_motion(motion_cfg)
        if source != "random":
            load_kinetics_init(backbone, source)
        backbone.eval()
        x_train, y_train, _ = clip_features(backbone, cfg, "train", args.train_clips)
        x_test, y_test, described = clip_features(backbone, cfg, "test", args.test_clips)
        predicted = linear_probe(x_train, y_train, x_test)
        in_gt = y_test == described
        results[source] = {
            "action_accuracy": round(float((predicted == y_test).float().mean()), 4),
            "in_gt_accuracy": round(float(((predicted == described) == in_gt).float().mean()), 4),
            "majority_accuracy": round(float((y_test == 0).float().mean()), 4),
            "test_frames": len(y_test),
        }
        print(source, results[source], file=sys.stderr, flush=True)
    first = results[args.motion[0]]["action_accuracy"]
    ratios = {k: round(v["action_accuracy"] / first, 3) for k, v in results.items()}
    print(json.dumps({"checkpoints": results, "ratio_over_first": ratios}))


if __name__ == "__main__":
    main()
