"""The official-checkpoint converter covers every key of the released model and loads strictly."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from transformers import RobertaModel

from cgstvg.model.appearance import ResNetTrunk
from cgstvg.model.config import RELEASE_CONFIG, CGSTVGConfig
from cgstvg.model.convert import (
    convert_head_state_dict,
    convert_mdetr_state_dict,
    convert_official_state_dict,
    load_official_checkpoint,
)
from cgstvg.model.head import CGSTVGHead
from cgstvg.model.motion import VideoSwinBackbone
from cgstvg.model.text import ROBERTA_BASE, roberta_config
from model_official import HEAD, official_head_state_dict

# Fixture and conversion numerics: also run by .ci/run under other CPU capabilities and thread counts.
pytestmark = pytest.mark.numerics

KEYS = HEAD.parent / "keys" / "full_state_dict_keys.json"


@functools.cache
def _layout() -> dict:
    return json.loads(KEYS.read_text())


def _official_meta() -> dict[str, torch.Tensor]:
    """The 1608 entries of the full released model as meta tensors (names and shapes, no memory)."""
    return {k: torch.empty(s, dtype=getattr(torch, d), device="meta") for k, s, d, _ in _layout()["entries"]}


@functools.cache
def _our_full_shapes() -> dict[str, tuple[int, ...]]:
    """State-dict shapes of our full model at the release's sizes, built on the meta device (no 238M floats)."""
    with torch.device("meta"):
        parts = {
            "head.": CGSTVGHead(RELEASE_CONFIG),
            "appearance.": ResNetTrunk("resnet101"),
            "motion.": VideoSwinBackbone(),
            "text.model.": RobertaModel(
                roberta_config(ROBERTA_BASE["vocab_size"], 768, 12, 12, 3072, ROBERTA_BASE["max_position_embeddings"]),
                add_pooling_layer=False,
            ),
        }
    return {p + k: tuple(v.shape) for p, m in parts.items() for k, v in m.state_dict().items()}


def test_every_official_key_is_mapped_or_listed_unused():
    official = _official_meta()
    assert len(official) == 1608
    ours, report = convert_official_state_dict(official)
    assert set(report.mapped) | set(report.dropped) == set(official)
    assert not set(report.mapped) & set(report.dropped)
    # Strict both ways against our full-size model, with equal shapes.
    shapes = _our_full_shapes()
    assert set(ours) == set(shapes)
    mismatched = [k for k, v in ours.items() if tuple(v.shape) != shapes[k]]
    assert not mismatched


def test_dropped_keys_are_exactly_the_releases_dead_and_duplicate_tensors():
    layout = _layout()
    _, report = convert_official_state_dict(_official_meta())
    dead = set(layout["trainable_but_never_receive_gradient"]) | set(layout["unused_buffers"])
    aliases = set(layout["aliases_same_tensor"].values()) | set(layout["aliases_same_tensor"])
    recomputed = {"ground_decoder.time_embed.te", "text_encoder.body.embeddings.position_ids"}
    dropped = set(report.dropped)
    assert dead <= dropped  # every dead tensor is dropped...
    assert dropped - dead <= aliases | recomputed  # ...and nothing else but one name of each alias pair
    for key in dropped & aliases:
        assert report.dropped[key].startswith("alias of ")


def test_fixture_head_loads_strictly_with_every_parameter_used():
    ours, report = convert_head_state_dict(official_head_state_dict())
    head = CGSTVGHead(CGSTVGConfig(heads=4, ffn_dim=128, enc_layers=2, dec_layers=3))
    head.load_state_dict(ours, strict=True)
    assert len(report.mapped) == len(head.state_dict())


def test_a_time_table_within_float32_rounding_loads_as_stored():
    # Another machine's float32 table: the fixture's, perturbed by 1e-5 relative (below the 6.8e-5 that float32
    # evaluation may err at row 200, see sine_time_table_tolerance), is accepted and kept bit for bit.
    sd = dict(official_head_state_dict())
    te = sd["ground_decoder.time_embed.te"]
    generator = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, te.shape, generator=generator) * 2 - 1
    sd["ground_decoder.time_embed.te"] = perturbed = te * (1 + 1e-5 * sign)
    ours, report = convert_head_state_dict(sd)
    assert report.mapped["ground_decoder.time_embed.te"] == "time_table"
    assert torch.equal(ours["time_table"], perturbed[:, 0])


@pytest.mark.parametrize("change", ["shuffled rows", "sin/cos swapped", "temperature 1000", "NaN"])
def test_a_time_table_that_is_not_the_sine_table_is_refused(change):
    sd = dict(official_head_state_dict())
    te = sd["ground_decoder.time_embed.te"].clone()
    if change == "shuffled rows":
        te = te[torch.randperm(te.shape[0], generator=torch.Generator().manual_seed(0))]
    elif change == "sin/cos swapped":
        te = te.view(201, 1, 128, 2).flip(-1).reshape(201, 1, 256)
    elif change == "temperature 1000":
        position = torch.arange(201.0)[:, None]
        div = torch.exp(torch.arange(0, 256, 2) * (-torch.log(torch.tensor(1000.0)) / 256))
        te = torch.stack([(position * div).sin(), (position * div).cos()], -1).reshape(201, 1, 256)
    else:
        te[7, 0, 3] = float("nan")
    sd["ground_decoder.time_embed.te"] = te
    with pytest.raises(ValueError, match="time_embed.te is not the standard sine table"):
        convert_head_state_dict(sd)


def test_unknown_key_is_an_error_naming_it():
    sd = dict(official_head_state_dict())
    sd["ground_decoder.decoder.something_new.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="something_new"):
        convert_head_state_dict(sd)


def test_alias_that_differs_from_its_copy_is_rejected():
    sd = dict(official_head_state_dict())
    sd["ground_decoder.decoder.bbox_embed.layers.0.bias"] = sd["bbox_embed.layers.0.bias"] + 1
    with pytest.raises(ValueError, match="alias"):
        convert_head_state_dict(sd)


def test_checkpoint_file_prefers_ema_and_loads_with_weights_only(tmp_path):
    sd = official_head_state_dict()
    ema = dict(sd)
    ema["input_proj.bias"] = sd["input_proj.bias"] + 1
    path = tmp_path / "model_final.pth"
    torch.save({"model": sd, "model_ema": ema, "iteration": 3}, path)
    loaded = load_official_checkpoint(path)
    assert torch.equal(loaded["input_proj.bias"], ema["input_proj.bias"])
    assert torch.equal(load_official_checkpoint(path, prefer_ema=False)["input_proj.bias"], sd["input_proj.bias"])
    ours, _ = convert_official_state_dict({"model": sd, "model_ema": ema})
    assert torch.equal(ours["head.input_proj.bias"], ema["input_proj.bias"])


def test_mdetr_initialisation_loads_matching_keys_only():
    shapes = _our_full_shapes()
    mdetr = {
        "backbone.0.body.conv1.weight": torch.zeros(64, 3, 7, 7),
        "transformer.text_encoder.encoder.layer.0.attention.self.query.weight": torch.zeros(768, 768),
        "transformer.resizer.fc.weight": torch.zeros(256, 768),
        "transformer.encoder.layers.3.linear1.weight": torch.zeros(2048, 256),
        "transformer.decoder.layers.0.norm3.weight": torch.zeros(256),  # the release loads it into the SDB
        "transformer.decoder.layers.0.cross_attn_image.in_proj_weight": torch.zeros(768, 256),  # no counterpart
        "transformer.decoder.norm.weight": torch.zeros(256),  # dead in the release
        "input_proj.weight": torch.zeros(256, 2048, 1, 1),
        "bbox_embed.layers.2.weight": torch.zeros(4, 256),
        "class_embed.weight": torch.zeros(256, 256),  # MDETR-only
        "transformer.encoder.layers.0.linear2.weight": torch.zeros(256, 99),  # wrong shape
    }
    ours, report = convert_mdetr_state_dict(mdetr, shapes)
    assert set(ours) == {
        "appearance.conv1.weight",
        "text.model.encoder.layer.0.attention.self.query.weight",
        "head.text_resizer.fc.weight",
        "head.encoder.layers.3.linear1.weight",
        "head.spatial_decoder.layers.0.norm2.weight",
        "head.input_proj.weight",
        "head.box_head.layers.2.weight",
    }
    assert set(report.dropped) == set(mdetr) - set(report.mapped)
    assert "shape" in report.dropped["transformer.encoder.layers.0.linear2.weight"]
