"""Shared pieces of the grounding tests: a tiny model and its checkpoint, tiny videos, the release key layout."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from safetensors import safe_open

from cgstvg.inference.checkpoint import save_grounding_checkpoint
from cgstvg.model.cgstvg import build_cgstvg
from cgstvg.model.convert import head_key
from cgstvg.model.tokenizer import build_tokenizer

SENTENCES = ["the blue square moves left", "a blue circle moves up", "the man in the red shirt sits down"]
SENTENCE = "the blue square moves left"
# 2 encoder + 3 decoder layers: the layer counts of the authors' head fixture, so its official key names cover
# this head exactly (used to write a release-layout checkpoint of the same weights).
TINY_MODEL = {
    "d_model": 16,
    "heads": 2,
    "ffn_dim": 32,
    "enc_layers": 2,
    "dec_layers": 3,
    "context_heads": 2,
    "context_ffn_dim": 32,
    "max_video_len": 20,
    "backbones": {
        "appearance": {"name": "small_cnn", "channels": [8, 16, 16]},
        "motion": {
            "embed_dim": 8,
            "depths": [1, 1],
            "num_heads": [1, 2],
            "window_size": [2, 4, 4],
            "stochastic_depth_prob": 0.0,
        },
        "text": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "max_positions": 34},
    },
}
# Video 80 x 64 at 8 fps; frames resized to 48 x 60 for the model; hcstvg rule at 4 fps (8 fps for two passes).
TINY_PARAMS = {
    "model": TINY_MODEL,
    "sampling": {"policy": "hcstvg", "hcstvg_fps": 4.0},
    "resize": {"mode": "aspect", "short_side": 48, "max_long_side": 64},
    "protocol": "two_pass",
}
BOX_CXCYWH = (0.5, 0.5, 0.5, 0.5)  # the box a "fixed-box" model predicts on every frame
VIDEO_HW, VIDEO_FPS = (64, 80), 8


def tiny_model(tokenizer_dir: Path, fixed_box: bool = False) -> torch.nn.Module:
    """The tiny untrained model (seeded). fixed_box: the box head always predicts `BOX_CXCYWH` (last layer weights
    zero, bias the logits), so rendered boxes are large and known."""
    torch.manual_seed(0)
    model = build_cgstvg(TINY_MODEL, tokenizer_dir)
    if fixed_box:
        last = model.head.box_head.layers[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(torch.logit(torch.tensor(BOX_CXCYWH)))
    return model


def make_tokenizer(directory: Path) -> Path:
    return build_tokenizer(SENTENCES, directory, vocab_size=300)


def make_checkpoint(path: Path, tokenizer_dir: Path, fixed_box: bool = False, **extra) -> Path:
    return save_grounding_checkpoint(
        path, tiny_model(tokenizer_dir, fixed_box).state_dict(), TINY_PARAMS, tokenizer_dir, **extra
    )


def make_video(path: Path, frames: int = 24, fps: int = VIDEO_FPS, size_hw: tuple[int, int] = VIDEO_HW) -> Path:
    """An H.264 mp4 of grey noise (no saturated colour, so pure red in a render comes from the drawing) with a
    blue square moving left."""
    rng = np.random.default_rng(0)
    h, w = size_hw
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = rng.integers(70, 150, size=(h, w, 3), dtype=np.uint8)
            x = max(0, w - 20 - 2 * i)
            frame[10:26, x : x + 16] = (40, 60, 200)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _official_swin_key(ours: str) -> str:
    """Inverse of `cgstvg.model.backbone_weights.swin_key` (torchvision Video Swin key -> the release's)."""
    match = re.fullmatch(r"features\.(\d+)\.(\d+)\.(.+)", ours)
    if match and int(match.group(1)) % 2 == 0:
        stage, block, rest = match.groups()
        rest = re.sub(r"^mlp\.0\.", "mlp.fc1.", re.sub(r"^mlp\.3\.", "mlp.fc2.", rest))
        return f"layers.{int(stage) // 2}.blocks.{block}.{rest}"
    match = re.fullmatch(r"features\.(\d+)\.(.+)", ours)
    if match:
        return f"downsamples.{int(match.group(1)) // 2}.{match.group(2)}"
    return ours  # patch_embed.*


def release_state_dict(ours: dict[str, torch.Tensor], head_fixture: Path) -> dict[str, torch.Tensor]:
    """Our state dict under the authors' key names: head names from the official head fixture's key list
    (through the converter's own `head_key`), backbone names by the release's prefixes."""
    with safe_open(head_fixture / "state_dict.safetensors", framework="pt") as f:
        official_head = {head_key(k): k for k in f.keys() if head_key(k) is not None}
    out = {}
    for key, value in ours.items():
        if key == "head.time_table":  # the release stores its sine table as (rows, 1, d)
            out["ground_decoder.time_embed.te"] = value[:, None]
        elif key.startswith("head."):
            out[official_head[key[len("head.") :]]] = value
        elif key.startswith("appearance."):
            out["vis_encoder.0.body." + key[len("appearance.") :]] = value
        elif key.startswith("motion."):
            out["vid." + _official_swin_key(key[len("motion.") :])] = value
        elif key.startswith("text.model."):
            out["text_encoder.body." + key[len("text.model.") :]] = value
        else:
            raise KeyError(key)
    return out
