"""Backbone weight conversions: the release's, MDETR's and Video Swin Kinetics-400 layouts load strictly into ours."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import RobertaModel

from cgstvg.model.appearance import ResNetTrunk
from cgstvg.model.backbone_weights import (
    OFFICIAL_DROPPED,
    convert_kinetics_swin,
    is_official_backbone_key,
    mdetr_backbone_state_dict,
    mdetr_to_official_key,
    official_backbone_key,
    official_backbone_state_dict,
    read_checkpoint,
    state_dict_from,
)
from cgstvg.model.motion import VideoSwinBackbone
from cgstvg.model.text import ROBERTA_BASE, roberta_config
from tolerances import chain_atol

# Fixture and conversion numerics: also run by .ci/run under other CPU capabilities and thread counts.
pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def release_entries(fixtures_dir):
    """(key, shape, dtype) of every backbone entry of the release's full state dict."""
    entries = json.loads((fixtures_dir / "keys" / "full_state_dict_keys.json").read_text())["entries"]
    return [(k, tuple(shape), getattr(torch, dtype)) for k, shape, dtype, _ in entries if is_official_backbone_key(k)]


def _meta_backbones() -> nn.Module:
    """The three release-size backbones on the meta device (keys and shapes only), at their default prefixes."""
    with torch.device("meta"):
        model = nn.Module()
        model.appearance = ResNetTrunk("resnet101")
        model.motion = VideoSwinBackbone()
        model.text = nn.Module()
        c = ROBERTA_BASE
        model.text.model = RobertaModel(
            roberta_config(
                c["vocab_size"],
                c["hidden_size"],
                c["num_hidden_layers"],
                c["num_attention_heads"],
                c["intermediate_size"],
                c["max_position_embeddings"],
            ),
            add_pooling_layer=False,
        )
    return model


def _meta(shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def test_release_backbone_keys_load_strictly(release_entries):
    state = {k: _meta(shape, dtype) for k, shape, dtype in release_entries}
    ours = official_backbone_state_dict(state)
    dropped = sorted(k for k in state if official_backbone_key(k) is None)
    assert dropped == [
        "text_encoder.body.embeddings.position_ids",
        "text_encoder.body.pooler.dense.bias",
        "text_encoder.body.pooler.dense.weight",
    ]
    assert all(any(k.startswith(p) for p in OFFICIAL_DROPPED) for k in dropped)
    model = _meta_backbones()
    model.load_state_dict(ours, strict=True, assign=True)  # every key of ours filled, shapes checked
    assert len(ours) == len(model.state_dict()) == len(release_entries) - len(dropped)


def test_release_key_examples():
    assert official_backbone_key("vid.layers.2.blocks.5.mlp.fc2.bias") == "motion.features.4.5.mlp.3.bias"
    assert official_backbone_key("vid.downsamples.1.norm.weight") == "motion.features.3.norm.weight"
    assert official_backbone_key("vid.patch_embed.proj.weight") == "motion.patch_embed.proj.weight"
    assert official_backbone_key("vis_encoder.0.body.layer3.4.bn2.running_var") == "appearance.layer3.4.bn2.running_var"
    assert (
        official_backbone_key(
            "text_encoder.body.encoder.layer.3.output.dense.weight",
            {"appearance": "a.", "motion": "m.", "text": "lang."},
        )
        == "lang.model.encoder.layer.3.output.dense.weight"
    )
    with pytest.raises(KeyError, match="not a release backbone key"):
        official_backbone_key("text_encoder.resizer.fc.weight")


def _mdetr_layout(release_entries):
    """An MDETR-style state dict (meta tensors) holding what MDETR's ResNet-101 + RoBERTa checkpoint holds."""
    state = {}
    for key, shape, dtype in release_entries:
        if key.startswith("vis_encoder."):
            state["backbone." + key[len("vis_encoder.") :]] = _meta(shape, dtype)
        elif key.startswith("text_encoder.body."):
            state["transformer.text_encoder." + key[len("text_encoder.body.") :]] = _meta(shape, dtype)
    state.update(
        {
            "transformer.resizer.fc.weight": _meta((256, 768)),
            "transformer.encoder.layers.0.self_attn.in_proj_weight": _meta((768, 256)),
            "transformer.decoder.layers.0.cross_attn_image.in_proj_weight": _meta((768, 256)),
            "input_proj.weight": _meta((256, 2048, 1, 1)),
            "bbox_embed.layers.0.weight": _meta((256, 256)),
            "query_embed.weight": _meta((100, 256)),
            "class_embed.weight": _meta((256, 256)),
            "contrastive_align_projection_image.weight": _meta((64, 256)),
        }
    )
    return state


def test_mdetr_backbones_load_strictly(release_entries):
    model = _meta_backbones()
    del model.motion  # MDETR has no motion backbone
    ours = mdetr_backbone_state_dict(_mdetr_layout(release_entries))
    model.load_state_dict(ours, strict=True, assign=True)


def test_mdetr_key_renames_follow_the_release():
    expected = {
        "backbone.0.body.layer2.0.conv1.weight": "vis_encoder.0.body.layer2.0.conv1.weight",
        "transformer.text_encoder.embeddings.word_embeddings.weight": "text_encoder.body.embeddings.word_embeddings.weight",  # noqa: E501
        "transformer.resizer.layer_norm.bias": "text_encoder.resizer.layer_norm.bias",
        "transformer.encoder.layers.5.linear2.weight": "ground_encoder.encoder.spatial_layers.5.linear2.weight",
        "transformer.decoder.layers.1.norm3.weight": "ground_decoder.decoder.layers.1.norm3.weight",
        "input_proj.bias": "input_proj.bias",
        "bbox_embed.layers.2.weight": "bbox_embed.layers.2.weight",
        "query_embed.weight": None,
        "class_embed.bias": None,
        "contrastive_align_projection_text.weight": None,
    }
    assert {k: mdetr_to_official_key(k) for k in expected} == expected


def _kinetics_layout(release_entries):
    """Video Swin-T Kinetics-400 (mmaction) layout built from the release's `vid.*` keys, plus its extras."""
    state = {}
    for key, shape, dtype in release_entries:
        if not key.startswith("vid."):
            continue
        key = "backbone." + re.sub(r"^downsamples\.(\d+)\.", r"layers.\1.downsample.", key[len("vid.") :])
        state[key] = _meta(shape, dtype)
    torch.manual_seed(0)
    state["backbone.patch_embed.proj.weight"] = torch.randn(96, 3, 2, 4, 4)  # temporal patch 2
    state.update(
        {
            "backbone.norm.weight": _meta((768,)),
            "backbone.norm.bias": _meta((768,)),
            "cls_head.fc_cls.weight": _meta((400, 768)),
            "cls_head.fc_cls.bias": _meta((400,)),
        }
    )
    return state


def test_kinetics_swin_loads_strictly_with_the_time_summed_patch_kernel(release_entries):
    kinetics = _kinetics_layout(release_entries)
    ours = convert_kinetics_swin(kinetics)
    with torch.device("meta"):
        net = VideoSwinBackbone()
    net.load_state_dict(ours, strict=True, assign=True)
    summed = ours["patch_embed.proj.weight"]
    assert summed.shape == (96, 3, 1, 4, 4)
    # The converter sums the two kernel slices exactly as this reference does (one float32 add): bit-exact.
    torch.testing.assert_close(
        summed, kinetics["backbone.patch_embed.proj.weight"].sum(2, keepdim=True), rtol=0, atol=0
    )
    # Why the sum: on frames repeated in pairs, the (2,4,4) kernel at temporal stride 2 equals the summed
    # (1,4,4) kernel on the frames themselves.
    frames = torch.randn(1, 3, 3, 8, 8)
    pairs = frames.repeat_interleave(2, dim=2)
    k400 = F.conv3d(pairs, kinetics["backbone.patch_embed.proj.weight"], stride=(2, 4, 4))
    # Same sums grouped differently (the time taps added before or after the products): one layer of float32
    # rounding over a 2x4x4x3 = 96-term reduction (tests/tolerances.py).
    torch.testing.assert_close(F.conv3d(frames, summed, stride=(1, 4, 4)), k400, rtol=0, atol=chain_atol(k400, 1, 96))


def test_kinetics_rejects_foreign_keys():
    with pytest.raises(KeyError, match="Kinetics-400"):
        convert_kinetics_swin({"module.patch_embed.proj.weight": torch.zeros(1)})


def test_read_checkpoint_is_weights_only(tmp_path):
    weights = {"backbone.0.body.conv1.weight": torch.randn(2, 3, 1, 1)}
    path = tmp_path / "mdetr.pth"
    torch.save({"model": weights, "args": argparse.Namespace(lr=1e-4, backbone="resnet101"), "epoch": 3}, path)
    state = state_dict_from(read_checkpoint(path), where=str(path))
    # A saved and reloaded tensor: bit-exact.
    torch.testing.assert_close(
        state["backbone.0.body.conv1.weight"], weights["backbone.0.body.conv1.weight"], rtol=0, atol=0
    )

    save_file(weights, tmp_path / "w.safetensors")
    assert set(state_dict_from(read_checkpoint(tmp_path / "w.safetensors"))) == set(weights)

    evil = tmp_path / "evil.pth"
    torch.save({"model": weights, "hook": nn.ReLU()}, evil)  # a module would run code paths on unpickling
    with pytest.raises(ValueError, match=r"evil\.pth.*weights_only"):
        read_checkpoint(evil)
    with pytest.raises(ValueError, match="not a state dict"):
        state_dict_from({"model": {"a": 1}}, where="x.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_checkpoint(tmp_path / "missing.pth")
