"""The frozen backbones that `extract` runs once, and how `train` and `evaluate` find their outputs again.

`train.input` (params.yaml) says what is cached: `frames` caches the motion features only (the appearance CNN and the
text encoder train end to end); `features` caches all three backbones, which then stay frozen. `extract` saves the
weights that produced the features (`frozen_state`, in `frozen_backbones.safetensors`) and `train` loads them
(`load_frozen_backbones`), so a trained checkpoint grounds raw videos with the backbones its features came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
from safetensors.torch import load_file

from cgstvg.engine.features import FeatureExtractor, FrozenBackbones
from cgstvg.utils.params import section

INPUT_MODES = ("frames", "features")


def input_mode(params: dict, path) -> str:
    """`train.input` of the params (default 'frames'); `path` names the params file in errors."""
    mode = section(params, "train", path).get("input", "frames")
    if mode not in INPUT_MODES:
        raise ValueError(f"{path}: train.input must be one of {INPUT_MODES}, got {mode!r}")
    return mode


def cached_features(mode: str) -> tuple[str, ...]:
    """Which backbone outputs are cached: motion always; appearance and text when training on features."""
    return ("motion", "appearance", "text") if mode == "features" else ("motion",)


def frozen_state(model: torch.nn.Module, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """State-dict entries (`motion.*`, ...) of the frozen backbones `names`, contiguous CPU tensors."""
    prefixes = tuple(f"{n}." for n in names)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)}


def load_frozen_backbones(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Copy the weights of `frozen_backbones.safetensors` into `model` (a CGSTVG or BatchModel); returns the keys.

    Raises when a key is unknown to the model or a shape differs (the backbones' params changed since `extract`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no frozen backbone weights (run the `extract` stage first)")
    state = load_file(path)
    own = model.state_dict()
    bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{path}: weights {bad[:3]} do not fit the model (model.backbones changed since `extract`?)")
    model.load_state_dict(state, strict=False)
    return sorted(state)


def make_extractor(model: torch.nn.Module, names: tuple[str, ...], cfg: dict, device: torch.device) -> FeatureExtractor:
    """The extractor over `model`'s frozen backbones `names` (motion always first); `cfg`: params.yaml `extract`."""
    backbones = FrozenBackbones(
        cast(torch.nn.Module, model.motion),
        *(getattr(model, n) if n in names else None for n in ("appearance", "text")),
    )
    return FeatureExtractor(
        backbones, device, amp=bool(cfg.get("amp", True)), batch_frames=int(cfg.get("batch_frames", 256))
    )


__all__ = ["INPUT_MODES", "cached_features", "frozen_state", "input_mode", "load_frozen_backbones", "make_extractor"]
