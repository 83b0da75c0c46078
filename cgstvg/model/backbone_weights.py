"""Weights for the three backbones: key mappings from the release's, MDETR's and Video Swin's checkpoint layouts.

Our backbone modules sit in the full model under the attribute names of `DEFAULT_PREFIXES` (the head's converter
may pass others). Their keys:

| release key (CGSTVG state dict)   | ours                                   | module                         |
|-----------------------------------|----------------------------------------|--------------------------------|
| vis_encoder.0.body.<x>            | appearance.<x>                         | appearance.ResNetTrunk         |
| vid.<x>                           | motion.<torchvision SwinTransformer3d> | motion.VideoSwinBackbone       |
| text_encoder.body.<x>             | text.model.<x>                         | text.TextEncoder (RobertaModel)|

`text_encoder.resizer`, `input_proj*` and everything else belong to the grounding head.

Three sources:
* the release's checkpoints (`official_backbone_key`; keys the release saves but we do not load are in
  `OFFICIAL_DROPPED`, with the reason);
* the MDETR ResNet-101 + RoBERTa checkpoint the release initialises from (MODEL.WEIGHT,
  pretrained_resnet101_checkpoint.pth): `mdetr_to_official_key` renames MDETR keys the way the release's
  utils/checkpoint.py does, so the result can go through the release-key mappings (backbones here, head in the
  head's converter);
* Video Swin-T Kinetics-400 (swin_tiny_patch244_window877_kinetics400_1k.pth, mmaction layout `backbone.*`):
  `convert_kinetics_swin` renames to torchvision's layout and sums the patch-embedding kernel over time,
  (96, 3, 2, 4, 4) -> (96, 3, 1, 4, 4), like the release (its motion backbone has no temporal patching).

Checkpoints are read only with `torch.load(weights_only=True)` or safetensors (`read_checkpoint`).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

DEFAULT_PREFIXES = {"appearance": "appearance.", "motion": "motion.", "text": "text."}
"""Where the backbones sit in the full model (attribute name + '.')."""

OFFICIAL_APPEARANCE = "vis_encoder.0.body."
OFFICIAL_MOTION = "vid."
OFFICIAL_TEXT = "text_encoder.body."

OFFICIAL_DROPPED = {
    "text_encoder.body.pooler.": "RoBERTa pooler: the release computes it but never uses it (no gradient); "
    "our RobertaModel is built without it",
    "text_encoder.body.embeddings.position_ids": "arange buffer saved by transformers 4.5.1 (the release's pin); "
    "recent transformers rebuild it and do not save it",
    "text_encoder.body.embeddings.token_type_ids": "zeros buffer, not saved by recent transformers",
}
"""Release backbone keys (or key prefixes, ending in '.') that are not loaded, and why."""


def _dropped(key: str, table: Mapping[str, str]) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in table)


def official_appearance_key(key: str, prefix: str = DEFAULT_PREFIXES["appearance"]) -> str:
    """`vis_encoder.0.body.<x>` -> `<prefix><x>` (torchvision ResNet keys; FrozenBatchNorm buffers alike)."""
    if not key.startswith(OFFICIAL_APPEARANCE):
        raise KeyError(f"{key!r} is not a release appearance-backbone key ({OFFICIAL_APPEARANCE}*)")
    return prefix + key[len(OFFICIAL_APPEARANCE) :]


def swin_key(key: str) -> str:
    """A key of the release's (MTTR) Video Swin, without `vid.`, -> torchvision SwinTransformer3d's key.

    layers.{i}.blocks.{j}.<x> -> features.{2i}.{j}.<x> (mlp.fc1/fc2 -> mlp.0/mlp.3);
    downsamples.{i}.<x> -> features.{2i+1}.<x>; patch_embed.<x> unchanged.
    (shared/fixtures/official/README.md section 3.)
    """
    match = re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)", key)
    if match:
        stage, block, rest = match.groups()
        rest = {
            "mlp.fc1.weight": "mlp.0.weight",
            "mlp.fc1.bias": "mlp.0.bias",
            "mlp.fc2.weight": "mlp.3.weight",
            "mlp.fc2.bias": "mlp.3.bias",
        }.get(rest, rest)
        return f"features.{2 * int(stage)}.{block}.{rest}"
    match = re.fullmatch(r"downsamples\.(\d+)\.(.+)", key)
    if match:
        return f"features.{2 * int(match.group(1)) + 1}.{match.group(2)}"
    if key.startswith("patch_embed."):
        return key
    raise KeyError(f"{key!r} is not a key of the release's Video Swin backbone")


def official_motion_key(key: str, prefix: str = DEFAULT_PREFIXES["motion"]) -> str:
    """`vid.<x>` -> `<prefix><torchvision key>` (see `swin_key`)."""
    if not key.startswith(OFFICIAL_MOTION):
        raise KeyError(f"{key!r} is not a release motion-backbone key ({OFFICIAL_MOTION}*)")
    return prefix + swin_key(key[len(OFFICIAL_MOTION) :])


def official_text_key(key: str, prefix: str = DEFAULT_PREFIXES["text"]) -> str | None:
    """`text_encoder.body.<x>` -> `<prefix>model.<x>`, or None for a key in `OFFICIAL_DROPPED`."""
    if not key.startswith(OFFICIAL_TEXT):
        raise KeyError(f"{key!r} is not a release text-backbone key ({OFFICIAL_TEXT}*)")
    if _dropped(key, OFFICIAL_DROPPED):
        return None
    return prefix + "model." + key[len(OFFICIAL_TEXT) :]


def is_official_backbone_key(key: str) -> bool:
    return key.startswith((OFFICIAL_APPEARANCE, OFFICIAL_MOTION, OFFICIAL_TEXT))


def official_backbone_key(key: str, prefixes: Mapping[str, str] = DEFAULT_PREFIXES) -> str | None:
    """Any release backbone key -> ours, or None when dropped (`OFFICIAL_DROPPED`). Other keys: KeyError."""
    if key.startswith(OFFICIAL_APPEARANCE):
        return official_appearance_key(key, prefixes["appearance"])
    if key.startswith(OFFICIAL_MOTION):
        return official_motion_key(key, prefixes["motion"])
    if key.startswith(OFFICIAL_TEXT):
        return official_text_key(key, prefixes["text"])
    raise KeyError(f"{key!r} is not a release backbone key (vis_encoder.0.body.*, vid.*, text_encoder.body.*)")


def official_backbone_state_dict(
    state: Mapping[str, Tensor], prefixes: Mapping[str, str] = DEFAULT_PREFIXES
) -> dict[str, Tensor]:
    """The backbone part of a release-layout state dict, renamed to ours (dropped keys left out)."""
    out = {}
    for key, value in state.items():
        if is_official_backbone_key(key):
            ours = official_backbone_key(key, prefixes)
            if ours is not None:
                out[ours] = value
    return out


# --- MDETR ------------------------------------------------------------------------------------------------------

MDETR_ONLY = (
    "query_embed.",
    "class_embed.",
    "contrastive_align_projection_image.",
    "contrastive_align_projection_text.",
    "transformer.CLS.",
    "qa_embed.",
    "answer_type_head.",
)
"""MDETR heads without a counterpart in CG-STVG (the release's loader ignores them)."""


def mdetr_to_official_key(key: str) -> str | None:
    """An MDETR key -> the release key it initialises (the renames of the release's utils/checkpoint.py).

    backbone.<x> -> vis_encoder.<x>; transformer.text_encoder.<x> -> text_encoder.body.<x>;
    transformer.resizer.<x> -> text_encoder.resizer.<x>; transformer.encoder.layers.N.<x> ->
    ground_encoder.encoder.spatial_layers.N.<x>; input_proj.<x> and bbox_embed.<x> unchanged; any other
    transformer.<x> -> ground_decoder.<x> (the release loads those only where such a key exists with the same
    shape, so the caller filters by its model). MDETR-only heads (`MDETR_ONLY`) -> None.
    """
    if key.startswith(MDETR_ONLY):
        return None
    if key.startswith("backbone."):
        return "vis_encoder." + key[len("backbone.") :]
    if key.startswith("transformer.text_encoder."):
        return "text_encoder.body." + key[len("transformer.text_encoder.") :]
    if key.startswith("transformer.resizer."):
        return "text_encoder.resizer." + key[len("transformer.resizer.") :]
    match = re.fullmatch(r"transformer\.encoder\.layers\.(\d+)\.(.+)", key)
    if match:
        return f"ground_encoder.encoder.spatial_layers.{match.group(1)}.{match.group(2)}"
    if key.startswith(("input_proj.", "bbox_embed.")):
        return key
    if key.startswith("transformer."):
        return "ground_decoder." + key[len("transformer.") :]
    return None


def mdetr_to_official_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an MDETR state dict to release keys (`mdetr_to_official_key`), leaving out MDETR-only heads."""
    out = {}
    for key, value in state.items():
        official = mdetr_to_official_key(key)
        if official is not None:
            out[official] = value
    return out


def mdetr_backbone_state_dict(
    state: Mapping[str, Tensor], prefixes: Mapping[str, str] = DEFAULT_PREFIXES
) -> dict[str, Tensor]:
    """The appearance (ResNet-101) and text (RoBERTa) weights of an MDETR state dict, in our keys."""
    return official_backbone_state_dict(mdetr_to_official_state_dict(state), prefixes)


# --- Video Swin-T Kinetics-400 ----------------------------------------------------------------------------------

KINETICS_DROPPED = {
    "backbone.norm.": "the final LayerNorm: the release's backbone has none (it returns stage outputs)",
    "cls_head.": "the Kinetics-400 classifier",
}


def kinetics_swin_key(key: str) -> str | None:
    """A Video Swin Kinetics-400 key (mmaction layout) -> torchvision SwinTransformer3d key, None if dropped.

    backbone.layers.{i}.blocks.{j}.<x> -> features.{2i}.{j}.<x>; backbone.layers.{i}.downsample.<x> ->
    features.{2i+1}.<x>; backbone.patch_embed.<x> -> patch_embed.<x>; `KINETICS_DROPPED` -> None.
    """
    if _dropped(key, KINETICS_DROPPED):
        return None
    if not key.startswith("backbone."):
        raise KeyError(f"{key!r} is not a Video Swin Kinetics-400 key (backbone.*, cls_head.*)")
    key = key[len("backbone.") :]
    match = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
    if match:
        return f"features.{2 * int(match.group(1)) + 1}.{match.group(2)}"
    return swin_key(key)


def convert_kinetics_swin(state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Kinetics-400 Video Swin state dict -> our `VideoSwinBackbone` keys (with `prefix`).

    The patch embedding's temporal kernel is summed: (C, 3, 2, 4, 4) -> (C, 3, 1, 4, 4). On a clip whose
    frames repeat in pairs the two convolutions agree; the release uses the sum to keep every frame.
    """
    out = {}
    for key, value in state.items():
        ours = kinetics_swin_key(key)
        if ours is None:
            continue
        if ours == "patch_embed.proj.weight":
            value = value.sum(dim=2, keepdim=True)
        out[prefix + ours] = value
    return out


def load_kinetics_init(motion: nn.Module, path: str | os.PathLike) -> int:
    """Initialise a `VideoSwinBackbone` from a Kinetics-400-layout checkpoint (mmaction `state_dict`), as the
    release loads its Kinetics Video Swin; returns the number of tensors loaded.

    Every backbone tensor must be present with our shape (the constant `relative_position_index` buffers
    excepted): a checkpoint for another Swin size is refused, naming the first mismatches.
    """
    state = convert_kinetics_swin(state_dict_from(read_checkpoint(path), ("state_dict", "model"), where=str(path)))
    own = motion.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("relative_position_index")]
    wrong = [k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if missing or wrong:
        raise ValueError(
            f"{path}: does not fit model.backbones.motion (missing {missing[:3]}, unknown or mis-shaped {wrong[:3]})"
        )
    motion.load_state_dict(state, strict=False)
    return len(state)


def to_kinetics_swin_state_dict(ours: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our `VideoSwinBackbone` state dict -> the Kinetics-400 (mmaction) layout that `convert_kinetics_swin` reads.

    The inverse of `kinetics_swin_key`; the (C, 3, 1, 4, 4) patch kernel is written as two equal temporal halves
    (C, 3, 2, 4, 4), which the converter sums back exactly (halving and doubling are exact in binary floats).
    Raises ValueError for a key that would not come back to itself.
    """
    mlp = {"mlp.0.": "mlp.fc1.", "mlp.3.": "mlp.fc2."}
    out = {}
    for key, value in ours.items():
        if key.endswith("relative_position_index"):
            continue  # a constant the constructor computes
        match = re.fullmatch(r"features\.(\d+)\.(.+)", key)
        if key.startswith("patch_embed."):
            k400 = "backbone." + key
            if key == "patch_embed.proj.weight":
                value = (value / 2).expand(-1, -1, 2, -1, -1).contiguous()
        elif match and int(match.group(1)) % 2 == 0:
            block, rest = match.group(2).split(".", 1)
            rest = next((new + rest[len(old) :] for old, new in mlp.items() if rest.startswith(old)), rest)
            k400 = f"backbone.layers.{int(match.group(1)) // 2}.blocks.{block}.{rest}"
        elif match:
            k400 = f"backbone.layers.{int(match.group(1)) // 2}.downsample.{match.group(2)}"
        else:
            raise ValueError(f"to_kinetics_swin_state_dict: {key!r} is not a Video Swin key")
        if kinetics_swin_key(k400) != key:
            raise ValueError(f"to_kinetics_swin_state_dict: {key!r} -> {k400!r} does not round-trip")
        out[k400] = value
    return out


# --- reading checkpoints ----------------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint safely: safetensors, or `torch.load(weights_only=True)`.

    `argparse.Namespace` is allowed in addition to tensors and plain containers: MDETR checkpoints store
    their training arguments as one (it holds plain values and runs no code when unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        return load_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({err}); re-save its state "
            f"dict as plain tensors (torch.save or safetensors)"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def state_dict_from(
    checkpoint: Mapping[str, Any], entries: Iterable[str] = ("model", "state_dict"), where: str = "checkpoint"
) -> dict[str, Tensor]:
    """The state dict inside a checkpoint: the first of `entries` present, else the checkpoint itself."""
    for entry in entries:
        if entry in checkpoint:
            state = checkpoint[entry]
            break
    else:
        state = checkpoint
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(
            f"{where}: not a state dict (non-tensor entries {bad[:5]}); expected one of "
            f"{list(entries)} or a flat dict of tensors"
        )
    return dict(state)
