"""Grounding checkpoints: the weights together with the params that built them, loaded with `weights_only=True`.

A model can only ground a new video the way it was trained when the checkpoint says how: which model config
built the weights, how frames were sampled and resized, and which test protocol to run. The contract (a plain
dict, so `torch.load(weights_only=True)` reads it):

    {
      "format": "cgstvg-grounding/1",
      "model": {name: Tensor},            # CGSTVG state dict (an EMA copy when there is one)
      "params": {                         # `GroundingParams.to_dict()`
        "model": {...},                   # the params.yaml `model:` section (head keys + backbones, loss ignored)
        "sampling": {"policy": "hcstvg" | "vidstg" | "fixed", "hcstvg_fps" | "vidstg_frames" | "fixed_frames"},
        "resize": {"mode", "short_side", "max_long_side", "width_cap"},   # params.yaml shard.resize
        "protocol": "two_pass" | "single_pass",
      },
      "tokenizer": {file name: uint8 Tensor},   # the tokenizer directory's files (random-weight text backbone)
      "step": int,                        # optional: the training step
      "digest": str,                      # sha256 of the weights, params and tokenizer (`content_digest`)
    }

Verify on read: a checkpoint that records a `digest` is loaded only if its weights, params and tokenizer still hash
to it, so a damaged `model.pt` (flipped bytes inside a tensor, which the zip container does not notice) is an
error naming the file, never a silently different model.

`load_grounding_model` also reads, in the same way:
* the `train` stage's checkpoints (`cgstvg.engine.checkpoint`: `model` / `model_ema`, the latter an
  `AveragedModel` state dict whose `module.` prefix is stripped) once they carry `params` (and `tokenizer`);
* the authors' released checkpoints (`model` / `model_ema` with the release's key names), converted by
  `cgstvg.model.convert.convert_official_state_dict`; they carry no params, so `params=` (a `--params` file)
  must describe the release model, and `tokenizer_dir=` the roberta-base tokenizer;
* a `.safetensors` state dict (ours or the release's), with params from its metadata key `cgstvg_params`
  (JSON) or from `params=`.
`params=` and `tokenizer_dir=` always replace what the checkpoint carries. Every failure raises
`CheckpointError` with one line naming the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from cgstvg.data.resize import RESIZE_MODES
from cgstvg.data.sampling import POLICIES
from cgstvg.evaluation.protocol import TEST_PROTOCOLS
from cgstvg.inference.errors import CheckpointError
from cgstvg.model.cgstvg import CGSTVG, build_cgstvg
from cgstvg.model.convert import convert_official_state_dict
from cgstvg.utils.atomic import atomic_path
from cgstvg.utils.hashing import sha256_file
from cgstvg.utils.params_schema import ParamsError, validate_params

CHECKPOINT_FORMAT = "cgstvg-grounding/1"
SAFETENSORS_PARAMS_KEY = "cgstvg_params"
# Prefixes only the release's state dicts have (ours start with appearance., motion., text., head.).
RELEASE_PREFIXES = ("ground_encoder.", "ground_decoder.", "vis_encoder.", "vid.", "text_encoder.")
# The frame-count knob each sampling policy reads (cgstvg.data.sampling.sample_frame_ids).
POLICY_KNOBS = {"hcstvg": "hcstvg_fps", "vidstg": "vidstg_frames", "fixed": "fixed_frames"}


@dataclass(frozen=True)
class GroundingParams:
    """How a checkpoint's model is built and fed (see the module docstring for the dict layout).

    model: params.yaml `model:` section. sampling: `policy` plus that policy's knob, at the TRAINING rate (each
    pass of the protocol sees frames at the training rate; the two-pass protocol samples twice as densely).
    resize: params.yaml `shard.resize`. protocol: a key of `cgstvg.evaluation.TEST_PROTOCOLS`.
    """

    model: dict[str, Any]
    sampling: dict[str, Any]
    resize: dict[str, Any]
    protocol: str = "two_pass"

    @property
    def passes(self) -> int:
        return TEST_PROTOCOLS[self.protocol]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "sampling": self.sampling, "resize": self.resize, "protocol": self.protocol}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> GroundingParams:
        """Validate a params dict; errors name `where` (the checkpoint or params file) and the bad key."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: params must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("model", "sampling", "resize") if not isinstance(d.get(k), dict)]
        if missing:
            raise CheckpointError(f"{where}: params lack the sections {missing} (need model, sampling, resize)")
        unknown = sorted(set(d) - {"model", "sampling", "resize", "protocol"})
        if unknown:
            raise CheckpointError(f"{where}: unknown params keys {unknown}")
        sampling, resize = dict(d["sampling"]), dict(d["resize"])
        protocol = d.get("protocol", "two_pass")
        if protocol not in TEST_PROTOCOLS:
            raise CheckpointError(f"{where}: params.protocol={protocol!r}, expected one of {sorted(TEST_PROTOCOLS)}")
        policy = sampling.get("policy")
        if policy not in POLICY_KNOBS:
            raise CheckpointError(f"{where}: params.sampling.policy={policy!r}, expected one of {list(POLICIES)}")
        knob = POLICY_KNOBS[policy]
        if not isinstance(sampling.get(knob), (int, float)) or sampling[knob] <= 0:
            raise CheckpointError(f"{where}: params.sampling.{knob} must be a positive number for policy {policy!r}")
        if resize.get("mode", "aspect") not in RESIZE_MODES:
            raise CheckpointError(
                f"{where}: params.resize.mode={resize.get('mode')!r}, expected one of {list(RESIZE_MODES)}"
            )
        for key in ("short_side", "max_long_side"):
            if not isinstance(resize.get(key), int) or resize[key] <= 0:
                raise CheckpointError(f"{where}: params.resize.{key} must be a positive integer")
        return cls(model=dict(d["model"]), sampling=sampling, resize=resize, protocol=protocol)

    @classmethod
    def from_params_yaml(
        cls, params: dict[str, Any], dataset: str | None = None, protocol: str | None = None, where: str = "params.yaml"
    ) -> GroundingParams:
        """Assemble from a whole params.yaml: `model`, `shard.sampling`, `shard.resize`, and the sampling policy
        of `dataset` (`shard.policy[dataset]`; default: the first of `normalize.datasets`). The protocol is
        `protocol`, else `evaluate.protocol` when that section has one, else two_pass."""
        try:
            shard = params["shard"]
            if dataset is None:
                dataset = params["normalize"]["datasets"][0]
            policy = shard["policy"][dataset]
            sampling = {"policy": policy, **{k: v for k, v in shard["sampling"].items() if k != "eval_multiplier"}}
            resize = {
                k: shard["resize"][k]
                for k in ("mode", "short_side", "max_long_side", "width_cap")
                if k in shard["resize"]
            }
            model = params["model"]
        except (KeyError, IndexError, TypeError) as exc:
            raise CheckpointError(
                f"{where}: cannot assemble grounding params (missing {exc}); need model, "
                f"shard.policy[{dataset!r}], shard.sampling, shard.resize"
            ) from None
        if protocol is None:
            evaluate = params.get("evaluate")
            protocol = evaluate.get("protocol", "two_pass") if isinstance(evaluate, dict) else "two_pass"
        return cls.from_dict({"model": model, "sampling": sampling, "resize": resize, "protocol": protocol}, where)


def load_params_file(path: str | os.PathLike, dataset: str | None = None) -> GroundingParams:
    """A `--params` YAML: either the grounding layout (model, sampling, resize, protocol) or a whole params.yaml
    (recognised by its `shard` section; `dataset` picks the sampling policy)."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: cannot read the params file ({type(exc).__name__}: {exc})") from None
    if isinstance(params, dict) and "shard" in params:
        try:
            params = validate_params(params, path)  # a whole params.yaml: checked as the stages check it
        except ParamsError as exc:
            raise CheckpointError(str(exc)) from None
        return GroundingParams.from_params_yaml(params, dataset, where=str(path))
    return GroundingParams.from_dict(params, str(path))


@dataclass
class GroundingModel:
    """A loaded model, in eval mode on its device, with its params and where it came from.

    checkpoint: {"path", "sha256" (of the file), "layout" ("cgstvg" | "release"), "step" (int or None)}.
    """

    model: CGSTVG
    params: GroundingParams
    checkpoint: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def content_digest(state: dict[str, Any]) -> str:
    """sha256 over a grounding checkpoint's weights (names, dtypes, shapes, bytes, in name order), its params
    (canonical JSON), its tokenizer files and its step: what the model computes, not how the file is laid out."""
    h = hashlib.sha256()
    for name in sorted(state["model"]):
        t = state["model"][name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(state.get("params"), sort_keys=True, default=str).encode())
    for name in sorted(state.get("tokenizer") or {}):
        h.update(name.encode() + b"|" + state["tokenizer"][name].numpy().tobytes())
    h.update(str(state.get("step")).encode())
    return h.hexdigest()


def save_grounding_checkpoint(
    path: str | os.PathLike,
    state_dict: dict[str, Tensor],
    params: GroundingParams | dict[str, Any],
    tokenizer_dir: str | os.PathLike | None = None,
    step: int | None = None,
) -> Path:
    """Write a grounding checkpoint atomically (the contract in the module docstring); returns `path`.

    state_dict: a `CGSTVG` state dict (for an `AveragedModel` pass `ema.module.state_dict()`). tokenizer_dir:
    the tokenizer the text backbone was built with; its files are stored so the checkpoint stands alone.
    """
    path = Path(path)
    if not isinstance(params, GroundingParams):
        params = GroundingParams.from_dict(params, str(path))
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in state_dict.items()},
        "params": params.to_dict(),
    }
    if tokenizer_dir is not None:
        files = sorted(p for p in Path(tokenizer_dir).iterdir() if p.is_file())
        if not files:
            raise CheckpointError(f"{tokenizer_dir}: no tokenizer files to store in {path}")
        state["tokenizer"] = {p.name: torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files}
    if step is not None:
        state["step"] = int(step)
    state["digest"] = content_digest(state)
    # Through a file object: torch.save names the zip's root folder after a path's stem, which is the random
    # temporary name here, so the same weights would give different bytes (and DVC hashes) on every run.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(checkpoint dict, its state dict) of a torch or safetensors file."""
    if path.suffix == ".safetensors":
        try:
            state = load_file(path)
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:  # safetensors raises its own error types for foreign or truncated files
            raise CheckpointError(
                f"{path}: cannot read the safetensors checkpoint ({type(exc).__name__}: {exc})"
            ) from None
        obj: dict[str, Any] = {"model": state}
        if SAFETENSORS_PARAMS_KEY in meta:
            obj["params"] = json.loads(meta[SAFETENSORS_PARAMS_KEY])
        return obj, state
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, foreign or pickled-object files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: cannot read the checkpoint with torch.load(weights_only=True) ({type(exc).__name__}: {message})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    if obj.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {obj['format']!r}, this version reads {CHECKPOINT_FORMAT!r}")
    if "digest" in obj:
        _verify_digest(obj, path)
    for name in ("model_ema", "model"):  # the EMA weights are the ones the release evaluates
        if isinstance(obj.get(name), dict) and obj[name]:
            return obj, _plain_state_dict(obj[name], path)
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        return {"model": obj}, obj
    raise CheckpointError(
        f"{path}: no state dict found (expected a 'model' or 'model_ema' entry, or a flat dict "
        f"of tensors; entries: {sorted(obj)[:10]})"
    )


def _verify_digest(obj: dict[str, Any], path: Path) -> None:
    """CheckpointError unless the checkpoint's content still hashes to the digest recorded when it was saved."""
    model = obj.get("model")
    if not isinstance(model, dict) or not all(isinstance(v, Tensor) for v in model.values()):
        raise CheckpointError(f"{path}: records a digest but holds no plain state dict under 'model'")
    recorded = obj["digest"]
    found = content_digest(obj)
    if found != recorded:
        raise CheckpointError(
            f"{path}: its weights, params or tokenizer hash to {found[:12]}..., the checkpoint records "
            f"{str(recorded)[:12]}... (the file is damaged; rerun `train` or fetch it again)"
        )


def _plain_state_dict(state: dict[str, Any], path: Path) -> dict[str, Tensor]:
    """Strip `torch.optim.swa_utils.AveragedModel`'s wrapping (`module.` prefix, `n_averaged`) if present."""
    if "n_averaged" in state and all(k.startswith("module.") for k in state if k != "n_averaged"):
        state = {k[len("module.") :]: v for k, v in state.items() if k != "n_averaged"}
    bad = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if bad:
        raise CheckpointError(f"{path}: the state dict holds non-tensor entries {bad[:5]}")
    return dict(state)


def _mismatch(path: Path, ours: dict[str, Tensor], theirs: dict[str, Tensor]) -> str | None:
    """One line describing how a state dict differs from the model's, or None when keys and shapes agree."""
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    shapes = [
        f"{k}: checkpoint {list(theirs[k].shape)}, model {list(ours[k].shape)}"
        for k in sorted(set(ours) & set(theirs))
        if theirs[k].shape != ours[k].shape
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shapes differ ({'; '.join(shapes[:3])})")
    if missing:
        parts.append(f"{len(missing)} weights missing ({', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected weights ({', '.join(unexpected[:3])})")
    return (
        f"{path}: the weights do not match the model its params describe: {'; '.join(parts)} "
        f"(was it saved with another model config?)"
    )


def load_grounding_model(
    path: str | os.PathLike,
    *,
    params: GroundingParams | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> GroundingModel:
    """Load a checkpoint (any layout in the module docstring), build its model and load the weights strictly.

    Raises CheckpointError (one line, naming `path`) when the file is missing or unreadable, carries no params
    and none were given, the params do not build a model, or the weights do not fit the model they describe.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    obj, state = _read(path)
    layout = "release" if any(k.startswith(RELEASE_PREFIXES) for k in state) else "cgstvg"
    if layout == "release":
        try:
            state, _ = convert_official_state_dict(state)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: the release checkpoint does not convert ({exc})") from None
    if params is None:
        if "params" not in obj:
            hint = (
                " (the authors' release checkpoints carry none: pass --params with the release model config "
                "and --tokenizer with the roberta-base tokenizer)"
                if layout == "release"
                else ""
            )
            raise CheckpointError(
                f"{path}: the checkpoint carries no params (model config, sampling, resize, "
                f"protocol); pass --params{hint}"
            )
        params = GroundingParams.from_dict(obj["params"], f"{path}: params")

    if tokenizer_dir is not None and not Path(tokenizer_dir).is_dir():
        # transformers would take the path for a model hub name and say so
        raise CheckpointError(f"{tokenizer_dir}: tokenizer folder not found")
    with tempfile.TemporaryDirectory(prefix="cgstvg-tokenizer-") as tmp:
        if tokenizer_dir is None and isinstance(obj.get("tokenizer"), dict):
            try:
                for name, data in obj["tokenizer"].items():
                    (Path(tmp) / Path(name).name).write_bytes(data.numpy().tobytes())
            except OSError as exc:  # a full temporary disk: one line, not a traceback
                raise CheckpointError(
                    f"{path}: cannot unpack its tokenizer into {tmp} ({exc.strerror or exc}); is the disk full?"
                ) from None
            tokenizer_dir = tmp
        try:
            # The tokenizer is read into memory here, so the temporary directory may go afterwards.
            model = build_cgstvg(params.model, tokenizer_dir, where=f"{path}: params.model")
        except (KeyError, ValueError, TypeError, OSError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise CheckpointError(f"{path}: its params do not build a model ({message})") from None
    problem = _mismatch(path, model.state_dict(), state)
    if problem:
        raise CheckpointError(problem)
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    step = obj.get("step")
    info = {
        "path": str(path),
        "sha256": sha256_file(path),
        "layout": layout,
        "step": int(step) if isinstance(step, int) else None,
    }
    return GroundingModel(model=model, params=params, checkpoint=info)


__all__ = [
    "CHECKPOINT_FORMAT",
    "GroundingModel",
    "GroundingParams",
    "load_grounding_model",
    "load_params_file",
    "save_grounding_checkpoint",
]
