"""Training checkpoints: atomic save, automatic resume from the latest, `weights_only` loads.

A checkpoint is `<dir>/step_<8 digits>.pt`, a plain dict of tensors and Python primitives (so it loads with
`torch.load(weights_only=True)`, unlike the release's pickled checkpoints that break on torch >= 2.6):
  step, epoch, fingerprint (str), model, model_ema, optimizer, scheduler, scaler (state dicts), curve and
  validation (lists of dicts of floats: the loss-curve and validation rows logged so far, so a resumed run logs
  the whole curve again).
A checkpoint is written to a temporary file and renamed, so a kill mid-save never leaves a truncated one; the
newest `keep` are kept. The fingerprint is a digest of everything that changes the result (params, data):
checkpoints with another fingerprint are stale (the params changed under a persisted folder) and are not resumed.

Verify on read: beside each checkpoint a sidecar `step_<8 digits>.pt.sha256` (`sha256sum` format) records the
sha256 of its bytes, written before the checkpoint is renamed into place. A checkpoint whose sidecar is missing or
does not match (a flipped bit loads fine in torch and would resume a different model) is never resumed from:
`latest_checkpoint` skips it with a warning naming it and takes the next older one that verifies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cgstvg.utils.atomic import atomic_path
from cgstvg.utils.hashing import sha256_file
from cgstvg.utils.integrity import IntegrityError, verify_file

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def fingerprint(obj: Any) -> str:
    """A stable digest of a JSON-able object (keys sorted), used to tell whether checkpoints are stale."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in `directory`, oldest first (an absent folder has none)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def canonical_state(obj: Any) -> Any:
    """A copy of `obj` built from fresh objects, so that its pickle depends on its values only.

    pickle writes an object seen before as a reference to the first copy, and torch writes a storage once for all
    the tensors that view it. After `torch.load` and `load_state_dict`, a resumed run's optimizer and scheduler
    states share strings, lists and storages differently from an uninterrupted run's, so the same values gave other
    bytes. Here every container and tensor is new (each tensor owns a contiguous storage) and equal strings are one
    object, the same in both runs."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone(memory_format=torch.contiguous_format)
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, Mapping):
        # an OrderedDict stays one (its type is in the pickle; weights_only loads no other mapping), the key order
        # is kept
        cls = OrderedDict if isinstance(obj, OrderedDict) else dict
        return cls((canonical_state(k), canonical_state(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [canonical_state(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(canonical_state(v) for v in obj)
    return obj  # numbers, None, booleans: pickle writes them by value


def save_checkpoint(directory: str | os.PathLike, state: Mapping[str, Any], keep: int = 2) -> Path:
    """Write `state` (must hold an int `step`) atomically and delete all but the newest `keep` checkpoints."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    path = checkpoint_path(directory, int(state["step"]))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: same bytes for the same state
            torch.save(canonical_state(dict(state)), f)
        # the sidecar first: a kill before the rename leaves a sidecar without its checkpoint (ignored), never a
        # checkpoint that verifies against a stale sidecar
        with atomic_path(sidecar_path(path)) as side:
            side.write_text(f"{sha256_file(tmp)}  {path.name}\n")
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        sidecar_path(old).unlink(missing_ok=True)
    return path


def sidecar_path(path: str | os.PathLike) -> Path:
    """The sha256 sidecar of a checkpoint: `step_<8 digits>.pt.sha256`."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise IntegrityError (naming the file) unless the checkpoint's bytes match the sha256 of its sidecar."""
    side = sidecar_path(path)
    if not side.is_file():
        raise IntegrityError(f"{path}: no {side.name} (its save never finished, or it predates sidecars)")
    fields = side.read_text().split()
    if not fields:
        raise IntegrityError(f"{side}: empty")
    verify_file(path, fields[0], side)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; a broken file raises an error naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        # the first line only: torch's weights_only refusal runs to a dozen lines
        first = (str(exc).strip().splitlines() or [""])[0]
        raise RuntimeError(f"{path}: cannot load the checkpoint ({type(exc).__name__}: {first})") from exc


def latest_checkpoint(directory: str | os.PathLike, expected_fingerprint: str | None = None) -> dict[str, Any] | None:
    """The newest checkpoint in `directory` whose fingerprint matches, loaded; None when there is none.

    Files that do not verify against their sidecar or fail to load (for example a checkpoint from another torch
    build) are skipped with a warning naming them, those with another fingerprint silently (stale), newest first,
    so an older valid checkpoint still resumes.
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            verify_checkpoint(path)
            state = load_checkpoint(path)
        except (IntegrityError, RuntimeError) as err:
            log.warning("not resuming from %s: %s", path, err)
            continue
        if expected_fingerprint is None or state.get("fingerprint") == expected_fingerprint:
            return state
    return None


def remove_stale(directory: str | os.PathLike, expected_fingerprint: str) -> list[Path]:
    """Delete the checkpoints whose fingerprint differs (or that do not verify or cannot be read); returns what was
    removed."""
    removed = []
    for _, path in list_checkpoints(directory):
        try:
            verify_checkpoint(path)
            fp = load_checkpoint(path).get("fingerprint")
        except (IntegrityError, RuntimeError):
            fp = None
        if fp != expected_fingerprint:
            path.unlink(missing_ok=True)
            sidecar_path(path).unlink(missing_ok=True)
            removed.append(path)
    return removed


__all__ = [
    "canonical_state",
    "checkpoint_path",
    "fingerprint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "remove_stale",
    "save_checkpoint",
    "sidecar_path",
    "verify_checkpoint",
]
