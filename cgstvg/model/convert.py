"""Official CG-STVG checkpoints (HengLan/CGSTVG layout) -> our module tree.

Every official key is either mapped to one of ours or listed as unused with the reason, and the result loads
strictly (`convert_official_state_dict`; `load_official_checkpoint` reads the file). `convert_mdetr_state_dict`
builds the release's initialisation from MDETR's pretrained checkpoint. The head keys are mapped here; the backbone
prefixes (`vis_encoder.0.body.`, `vid.`, `text_encoder.body.`) go through the backbone converters in
`cgstvg.model.backbone_weights`.

Unused in the release (built, saved, but never influencing an output or a gradient):
* STCAT leftovers: `ground_encoder.encoder.{temporal_layers, frame_cls, video_cls, local_pos_embed, time_embed}`,
  `ground_encoder.fusion`, `ground_decoder.{template_generator, time_fc}`;
* `ground_decoder.decoder.{fuse_linear, norm, norm2}` (the decoder's norm output is overwritten);
* `ground_decoder.decoder.layers.0.ca2` (layer 0 never has context), every `ca2.memory_intermediate` and every
  `ca_qtime_proj` (only used by the non-default FROM_SCRATCH=False branch);
* aliases of shared modules: `ground_decoder.decoder.bbox_embed` (= `bbox_embed`) and `ground_decoder.time_embed2`
  (= `action_embed`); they are checked to be equal to the kept copy;
* RoBERTa `pooler` and the `position_ids` buffer (handled by the text-backbone converter).

`ground_decoder.time_embed.te`, the sine time table, is kept: it is checked to be the sine table to float32
rounding (the release computed it in float32 on the authors' machine, so it differs from any recomputation in
the last bits) and loaded as stored, so that a converted checkpoint computes exactly what the release computes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file
from torch import Tensor

from cgstvg.model.backbone_weights import (
    OFFICIAL_DROPPED,
    is_official_backbone_key,
    mdetr_to_official_key,
    official_backbone_key,
    read_checkpoint,
    state_dict_from,
)
from cgstvg.model.position_encoding import sine_time_table, sine_time_table_tolerance

_HEAD_RULES: list[tuple[str, str]] = [
    (r"input_proj\.(weight|bias)", r"input_proj.\1"),
    (r"input_proj2\.(weight|bias)", r"motion_proj.\1"),
    (r"text_encoder\.resizer\.(fc|layer_norm)\.(.+)", r"text_resizer.\1.\2"),
    (r"ground_encoder\.encoder\.spatial_layers\.(\d+)\.(.+)", r"encoder.layers.\1.\2"),
    (r"ground_encoder\.encoder\.norm\.(.+)", r"encoder.norm.\1"),
    (r"ground_decoder\.pos_fc\.0\.(.+)", r"anchor_init.norm_in.\1"),
    (r"ground_decoder\.pos_fc\.2\.(.+)", r"anchor_init.fc.\1"),
    (r"ground_decoder\.pos_fc\.4\.(.+)", r"anchor_init.norm_out.\1"),
    # Temporal decoder: the release's norm1/norm3/norm4 follow self-attn / cross-attn / FFN.
    (
        r"ground_decoder\.time_decoder\.layers\.(\d+)\.cross_attn_image\.(.+)",
        r"temporal_decoder.layers.\1.cross_attn.\2",
    ),
    (r"ground_decoder\.time_decoder\.layers\.(\d+)\.norm3\.(.+)", r"temporal_decoder.layers.\1.norm2.\2"),
    (r"ground_decoder\.time_decoder\.layers\.(\d+)\.norm4\.(.+)", r"temporal_decoder.layers.\1.norm3.\2"),
    (
        r"ground_decoder\.time_decoder\.layers\.(\d+)\.(self_attn|linear1|linear2|norm1)\.(.+)",
        r"temporal_decoder.layers.\1.\2.\3",
    ),
    (r"ground_decoder\.time_decoder\.norm\.(.+)", r"temporal_decoder.norm.\1"),
    # Spatial decoder layers.
    (r"ground_decoder\.decoder\.layers\.(\d+)\.norm3\.(.+)", r"spatial_decoder.layers.\1.norm2.\2"),
    (r"ground_decoder\.decoder\.layers\.(\d+)\.norm4\.(.+)", r"spatial_decoder.layers.\1.norm3.\2"),
    (
        r"ground_decoder\.decoder\.layers\.(\d+)\."
        r"((?:sa|ca)_\w+_proj|self_attn|cross_attn|linear1|linear2|norm1)\.(.+)",
        r"spatial_decoder.layers.\1.\2.\3",
    ),
    (
        r"ground_decoder\.decoder\.layers\.(\d+)\.ca2\.attention\.self\.(query|key|value)\.(.+)",
        r"spatial_decoder.layers.\1.context_attn.\2.\3",
    ),
    (
        r"ground_decoder\.decoder\.layers\.(\d+)\.ca2\.attention\.output\.dense\.(.+)",
        r"spatial_decoder.layers.\1.context_attn.attn_out.\2",
    ),
    (
        r"ground_decoder\.decoder\.layers\.(\d+)\.ca2\.attention\.output\.LayerNorm\.(.+)",
        r"spatial_decoder.layers.\1.context_attn.attn_norm.\2",
    ),
    (
        r"ground_decoder\.decoder\.layers\.(\d+)\.ca2\.hidden_intermediate\.dense\.(.+)",
        r"spatial_decoder.layers.\1.context_attn.ffn_in.\2",
    ),
    (
        r"ground_decoder\.decoder\.layers\.(\d+)\.ca2\.output\.dense\.(.+)",
        r"spatial_decoder.layers.\1.context_attn.ffn_out.\2",
    ),
    (
        r"ground_decoder\.decoder\.layers\.(\d+)\.ca2\.output\.LayerNorm\.(.+)",
        r"spatial_decoder.layers.\1.context_attn.ffn_norm.\2",
    ),
    (r"ground_decoder\.decoder\.(query_scale|ref_point_head)\.(.+)", r"spatial_decoder.\1.\2"),
    (r"ground_decoder\.decoder\.conf\.(.+)", r"icr.conf_appearance.\1"),
    (r"ground_decoder\.decoder\.conf2\.(.+)", r"icr.conf_motion.\1"),
    (r"ground_decoder\.decoder\.gf_mlp\.(.+)", r"icr.context_appearance.\1"),
    (r"ground_decoder\.decoder\.gf_mlp2\.(.+)", r"icr.context_motion.\1"),
    (r"bbox_embed\.(.+)", r"box_head.\1"),
    (r"temp_embed\.(.+)", r"sted_head.\1"),
    (r"action_embed\.(.+)", r"actioness_head.\1"),
]

# Checked before the mapping rules (the dead ca2 of layer 0 would otherwise match the ca2 rules).
_UNUSED_RULES: list[tuple[str, str]] = [
    (
        r"ground_encoder\.encoder\.(temporal_layers|frame_cls|video_cls|local_pos_embed)\..+",
        "STCAT leftover in the encoder, never called",
    ),
    (r"ground_encoder\.encoder\.time_embed\.te", "STCAT leftover sine table in the encoder, never read"),
    (r"ground_encoder\.fusion\..+", "STCAT leftover, never called"),
    (r"ground_decoder\.(template_generator|time_fc)\..+", "built but its result is never used"),
    (r"ground_decoder\.decoder\.(fuse_linear|norm|norm2)\..+", "built but never used in the output"),
    (r"ground_decoder\.decoder\.layers\.0\.ca2\..+", "layer 0 never receives context"),
    (r"ground_decoder\.decoder\.layers\.\d+\.ca2\.memory_intermediate\..+", "never called by BertLayer_Cross"),
    (r"ground_decoder\.decoder\.layers\.\d+\.ca_qtime_proj\..+", "only used when FROM_SCRATCH is False"),
]

# Second names of shared tensors: value-checked against the kept name, then dropped.
_ALIASES: list[tuple[str, str]] = [
    (r"ground_decoder\.decoder\.bbox_embed\.(.+)", r"bbox_embed.\1"),
    (r"ground_decoder\.time_embed2\.(.+)", r"action_embed.\1"),
]

_TIME_TABLE = r"ground_decoder\.time_embed\.te"
_OUR_TIME_TABLE = "time_table"

HEAD_PREFIX = "head."
"""Where `CGSTVGHead` sits in the full model `CGSTVG`."""


@dataclass
class ConversionReport:
    """What happened to every official key: `mapped` (official -> ours) or `dropped` (official -> reason)."""

    mapped: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)

    def merge(self, other: ConversionReport, prefix: str = "") -> None:
        self.mapped.update({k: prefix + v for k, v in other.mapped.items()})
        self.dropped.update(other.dropped)


def head_key(official: str) -> str | None:
    """Our head name of an official head key, or None if no mapping rule applies."""
    for pattern, repl in _HEAD_RULES:
        if re.fullmatch(pattern, official):
            return re.sub(f"^{pattern}$", repl, official)
    return None


def unused_reason(official: str) -> str | None:
    """Why an official head key is not used, or None if it is used."""
    for pattern, reason in _UNUSED_RULES:
        if re.fullmatch(pattern, official):
            return reason
    return None


def _same(a: Tensor, b: Tensor, atol: float = 0.0) -> bool:
    """Equal values (shapes only for meta tensors, which carry none: key checks of a full-size layout)."""
    if a.shape != b.shape:
        return False
    if a.is_meta or b.is_meta:
        return True
    return torch.allclose(a.float(), b.float(), rtol=0.0, atol=atol)


def _checked_time_table(key: str, value: Tensor) -> Tensor:
    """The stored (rows, 1, d) sine time table as our (rows, d) buffer, if it is the sine table to float32 rounding.

    The bound is `sine_time_table_tolerance` (derived there); comparing against our float64-exact table keeps the
    check the same on every machine. Meta tensors (key-layout checks) carry no values and pass on shape alone.
    """
    if value.dim() != 3 or value.shape[1] != 1:
        raise ValueError(f"official checkpoint: {key} has shape {tuple(value.shape)}, expected (rows, 1, d_model)")
    table = value[:, 0]
    if table.is_meta:
        return table
    exact = sine_time_table(table.shape[0], table.shape[1])
    error = (table.float() - exact).abs().max().item()
    tolerance = sine_time_table_tolerance(table.shape[0])
    if not error <= tolerance:  # also refuses NaN
        raise ValueError(
            f"official checkpoint: {key} is not the standard sine table (largest difference {error:.3g}, "
            f"float32 rounding allows {tolerance:.3g})"
        )
    return table.float().contiguous()


def convert_head_state_dict(official: dict[str, Tensor]) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map the grounding-head keys of an official state dict (no backbone keys) to `CGSTVGHead` names.

    Raises KeyError naming every key that is neither mapped nor known to be unused, and ValueError when an alias
    differs from its kept copy or the stored sine table is not the sine table.
    """
    ours: dict[str, Tensor] = {}
    report = ConversionReport()
    unknown = []
    for key, value in official.items():
        reason = unused_reason(key)
        if reason is not None:
            report.dropped[key] = reason
            continue
        alias_of = next((re.sub(f"^{p}$", r, key) for p, r in _ALIASES if re.fullmatch(p, key)), None)
        if alias_of is not None:
            if alias_of in official and not _same(official[alias_of], value):
                raise ValueError(f"official checkpoint: alias {key} differs from {alias_of}")
            report.dropped[key] = f"alias of {alias_of} (same tensor)"
            continue
        if re.fullmatch(_TIME_TABLE, key):
            ours[_OUR_TIME_TABLE] = _checked_time_table(key, value)
            report.mapped[key] = _OUR_TIME_TABLE
            continue
        target = head_key(key)
        if target is None:
            unknown.append(key)
            continue
        ours[target] = value
        report.mapped[key] = target
    if unknown:
        raise KeyError(f"official checkpoint: {len(unknown)} keys have no mapping: {unknown[:20]}")
    return ours, report


def convert_official_state_dict(
    official: dict[str, Tensor] | dict[str, dict[str, Tensor]], prefer_ema: bool = True
) -> tuple[dict[str, Tensor], ConversionReport]:
    """A full official state dict (or a checkpoint dict with `model` / `model_ema`) -> `CGSTVG` state dict.

    Backbone keys go through `cgstvg.model.backbone_weights.official_backbone_key`, head keys through
    `convert_head_state_dict` (prefixed `head.`). Every key ends in `report.mapped` or `report.dropped`; any other
    key raises KeyError. The result loads into `CGSTVG` with `strict=True` when the sizes match.
    """
    official = _state_dict_of(official, prefer_ema, "official checkpoint")
    ours: dict[str, Tensor] = {}
    report = ConversionReport()
    head_part = {}
    for key, value in official.items():
        if not is_official_backbone_key(key):
            head_part[key] = value
            continue
        target = official_backbone_key(key)
        if target is None:
            report.dropped[key] = next(
                reason for k, reason in OFFICIAL_DROPPED.items() if key == k or (k.endswith(".") and key.startswith(k))
            )
        else:
            ours[target] = value
            report.mapped[key] = target
    head, head_report = convert_head_state_dict(head_part)
    ours.update({HEAD_PREFIX + k: v for k, v in head.items()})
    report.merge(head_report, HEAD_PREFIX)
    return ours, report


def convert_mdetr_state_dict(
    mdetr: dict[str, Tensor], model_shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, Tensor], ConversionReport]:
    """MDETR's pretrained ResNet-101 + RoBERTa checkpoint (the release's MODEL.WEIGHT) -> a partial `CGSTVG` init.

    MDETR keys are renamed as the release's loader does (`backbone_weights.mdetr_to_official_key`: backbone,
    text encoder, resizer, encoder layers, input_proj, bbox_embed, and `transformer.<x>` -> `ground_decoder.<x>`),
    then mapped like release keys. As the release, a key is loaded only where our model (`model_shapes`: name ->
    shape of `CGSTVG.state_dict()`) has it with the same shape; everything else lands in `report.dropped`.
    Load the result with `strict=False`.
    """
    ours: dict[str, Tensor] = {}
    report = ConversionReport()
    for key, value in mdetr.items():
        official = mdetr_to_official_key(key)
        if official is None:
            report.dropped[key] = "MDETR-only module"
            continue
        if is_official_backbone_key(official):
            target = official_backbone_key(official)
        else:
            reason = unused_reason(official)
            if reason is not None:
                report.dropped[key] = f"{official}: {reason}"
                continue
            target = head_key(official)
            target = None if target is None else HEAD_PREFIX + target
        if target is None or target not in model_shapes:
            report.dropped[key] = f"{official}: no counterpart in our model"
        elif tuple(model_shapes[target]) != tuple(value.shape):
            report.dropped[key] = f"{official}: shape {tuple(value.shape)} != ours {tuple(model_shapes[target])}"
        else:
            ours[target] = value
            report.mapped[key] = target
    return ours, report


def load_mdetr_init(model: torch.nn.Module, path: str | os.PathLike) -> ConversionReport:
    """Initialise a `CGSTVG` from an MDETR-layout checkpoint file, as the release does from MODEL.WEIGHT.

    The file is a downloaded MDETR checkpoint on real data, or the `pretrain_grounding` stage's output on the
    synthetic default. Keys load where the model has them with the same shape (`convert_mdetr_state_dict`); the
    rest are reported. Raises ValueError when not one key fits (a file for another model size, say).
    """
    state = state_dict_from(read_checkpoint(path), where=str(path))
    ours, report = convert_mdetr_state_dict(state, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if not ours:
        shown = list(report.dropped.items())[:3]
        raise ValueError(f"{path}: no weight of this MDETR-layout checkpoint fits the model (e.g. {shown})")
    model.load_state_dict(ours, strict=False)
    return report


# Our keys -> MDETR's layout, for the modules that image-level grounding pretraining trains (MDETR's share of the
# release's initialisation). Each rule is the inverse of the path `convert_mdetr_state_dict` takes (MDETR key ->
# release key -> ours); `to_mdetr_state_dict` checks every key round-trips.
_TO_MDETR: list[tuple[str, str]] = [
    (r"appearance\.(.+)", r"backbone.0.body.\1"),
    (r"text\.model\.(.+)", r"transformer.text_encoder.\1"),
    (r"head\.text_resizer\.(.+)", r"transformer.resizer.\1"),
    (r"head\.input_proj\.(.+)", r"input_proj.\1"),
    (r"head\.encoder\.layers\.(\d+)\.(.+)", r"transformer.encoder.layers.\1.\2"),
    (r"head\.anchor_init\.norm_in\.(.+)", r"transformer.pos_fc.0.\1"),
    (r"head\.anchor_init\.fc\.(.+)", r"transformer.pos_fc.2.\1"),
    (r"head\.anchor_init\.norm_out\.(.+)", r"transformer.pos_fc.4.\1"),
    (r"head\.spatial_decoder\.layers\.(\d+)\.norm2\.(.+)", r"transformer.decoder.layers.\1.norm3.\2"),
    (r"head\.spatial_decoder\.layers\.(\d+)\.norm3\.(.+)", r"transformer.decoder.layers.\1.norm4.\2"),
    (
        r"head\.spatial_decoder\.layers\.(\d+)\.((?:sa|ca)_\w+_proj|self_attn|cross_attn|linear1|linear2|norm1)\.(.+)",
        r"transformer.decoder.layers.\1.\2.\3",
    ),
    (r"head\.spatial_decoder\.(query_scale|ref_point_head)\.(.+)", r"transformer.decoder.\1.\2"),
    (r"head\.box_head\.(.+)", r"bbox_embed.\1"),
]


def to_mdetr_state_dict(ours: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The MDETR-layout part of a `CGSTVG` state dict: what `convert_mdetr_state_dict` loads back onto the same keys.

    Returns (MDETR-layout state dict, our keys left out: modules MDETR does not have, such as the temporal
    decoder, the motion backbone and the context blocks). Raises ValueError if a key would not round-trip.
    """
    out: dict[str, Tensor] = {}
    left_out = []
    for key, value in ours.items():
        rule = next(((p, r) for p, r in _TO_MDETR if re.fullmatch(p, key)), None)
        if rule is None:
            left_out.append(key)
            continue
        out[re.sub(f"^{rule[0]}$", rule[1], key)] = value
    back, report = convert_mdetr_state_dict(out, {k: tuple(v.shape) for k, v in ours.items()})
    wrong = [m for m, k in report.mapped.items() if not torch.equal(back[k], out[m])] + list(report.dropped)
    if wrong or set(back) != set(ours) - set(left_out):
        raise ValueError(f"to_mdetr_state_dict: keys that do not round-trip through the MDETR loader: {wrong[:10]}")
    return out, left_out


def _state_dict_of(obj: dict, prefer_ema: bool, where: str) -> dict[str, Tensor]:
    """The state dict of a checkpoint dict: `model_ema` (if preferred and present), else `model`, else `obj`."""
    for name in ("model_ema", "model") if prefer_ema else ("model",):
        if isinstance(obj.get(name), dict):
            return obj[name]
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{where}: no 'model' / 'model_ema' state dict and non-tensor entries {sorted(bad)[:10]}")
    return obj


def load_official_checkpoint(path: str | os.PathLike, prefer_ema: bool = True) -> dict[str, Tensor]:
    """Read an official checkpoint file: the `model_ema` state dict if present (the release evaluates the EMA),
    else `model`.

    `.safetensors` files are read as a flat state dict; `.pth` files with `torch.load(weights_only=True)`.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return load_file(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return _state_dict_of(ckpt, prefer_ema, path)
