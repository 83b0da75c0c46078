"""Shared loading of the authors' head fixtures (shared/fixtures/official/head), once per test process."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from cgstvg.model.config import CGSTVGConfig
from cgstvg.model.convert import convert_head_state_dict
from cgstvg.model.head import CGSTVGHead, CGSTVGOutput
from cgstvg.model.targets import GroundingTargets

HEAD = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "official" / "head"
REGIME_FILES = {
    "a": "regime_a_infer_default",
    "b": "regime_b_infer_lowered",
    "c": "regime_c_train_gt",
    "d": "regime_d_padmask",
}


@functools.cache
def fixture(name: str) -> dict[str, torch.Tensor]:
    """One safetensors file of head/ (inputs, shared_intermediates, state_dict or a regime file)."""
    return load_file(HEAD / f"{REGIME_FILES.get(name, name)}.safetensors")


@functools.cache
def official_head_state_dict() -> dict[str, torch.Tensor]:
    """The official head weights (float32) with the dead parameters zero-filled, as the fixture README says."""
    sd = {k: v.float() for k, v in fixture("state_dict").items()}
    for key, shape, dtype in json.loads((HEAD / "unused_parameters.json").read_text())["keys"]:
        sd[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
    return sd


def regime_config(regime: str) -> CGSTVGConfig:
    """The fixture's head config (d 256, 4 heads, FFN 128, 2 + 3 layers) with the regime's thresholds."""
    config = json.loads((HEAD / "config.json").read_text())
    thetas = config["regimes"][REGIME_FILES[regime].removeprefix("regime_")]["thresholds"]
    train = regime == "c"
    return CGSTVGConfig(
        heads=4,
        ffn_dim=128,
        enc_layers=2,
        dec_layers=3,
        theta_s=thetas["SPAT_THETA"],
        theta_t=thetas["TEMP_THETA"],
        theta_s_gt=thetas["SPAT_GT_THETA"],
        dropout=0.0 if train else 0.1,
        head_dropout=0.0 if train else 0.3,  # regime c: train mode, dropout 0
    )


def fixture_targets() -> GroundingTargets:
    inputs = fixture("inputs")
    gt = inputs["gt_actioness"].bool()[None]
    boxes = torch.zeros(1, gt.shape[1], 4)
    boxes[gt] = inputs["gt_boxes_cxcywh"]
    return GroundingTargets(boxes, gt)


@functools.cache
def run_regime(regime: str) -> tuple[CGSTVGHead, CGSTVGOutput]:
    """Our head with the converted fixture weights, run on the fixture inputs as the regime prescribes."""
    torch.manual_seed(0)
    head = CGSTVGHead(regime_config(regime))
    ours, _ = convert_head_state_dict(official_head_state_dict())
    head.load_state_dict(ours, strict=True)
    inputs = fixture("inputs")
    train = regime == "c"
    head.train(train)
    vis_mask = inputs["vis_mask_padded" if regime == "d" else "vis_mask"]
    with torch.set_grad_enabled(train):
        out = head(
            inputs["vis_feat"][None],
            vis_mask[None],
            inputs["motion_feat"][None],
            inputs["text_last_hidden_state"],
            inputs["text_attention_mask"] != 1,  # HF 1 = real token -> True = padding
            targets=fixture_targets() if train else None,
            return_intermediates=True,
        )
    return head, out
