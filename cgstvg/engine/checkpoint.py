"""Training checkpoints: atomic save, automatic resume from the latest, `weights_only` loads.

A checkpoint is `<dir>/step_<8 digits>.pt`, a plain dict of tensors and Python primitives (so it loads with
`torch.load(weights_only=True)`, unlike the release's pickled checkpoints that break on torch >= 2.6):
  step, epoch, fingerprint (str), model, model_ema, optimizer, scheduler, scaler (state dicts), curve (list of
  dicts of floats: the loss-curve rows logged so far, so a resumed run rewrites the full curve).
A checkpoint is written to a temporary file and renamed, so a kill mid-save never leaves a truncated one; the
newest `keep` are kept. The fingerprint is a digest of everything that changes the result (params, data):
checkpoints with another fingerprint are stale (the params changed under a persisted folder) and are not resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cgstvg.utils.atomic import atomic_path

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


def save_checkpoint(directory: str | os.PathLike, state: Mapping[str, Any], keep: int = 2) -> Path:
    """Write `state` (must hold an int `step`) atomically and delete all but the newest `keep` checkpoints."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    path = checkpoint_path(directory, int(state["step"]))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: same bytes for the same state
        torch.save(dict(state), f)
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; a broken file raises an error naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise RuntimeError(f"{path}: cannot load the checkpoint ({type(exc).__name__}: {exc})") from exc


def latest_checkpoint(directory: str | os.PathLike, expected_fingerprint: str | None = None) -> dict[str, Any] | None:
    """The newest checkpoint in `directory` whose fingerprint matches, loaded; None when there is none.

    Files that fail to load (for example a checkpoint from another torch build) or carry another fingerprint
    are skipped, newest first, so an older valid checkpoint still resumes.
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(path)
        except RuntimeError:
            continue
        if expected_fingerprint is None or state.get("fingerprint") == expected_fingerprint:
            return state
    return None


def remove_stale(directory: str | os.PathLike, expected_fingerprint: str) -> list[Path]:
    """Delete the checkpoints whose fingerprint differs (or that cannot be read); returns what was removed."""
    removed = []
    for _, path in list_checkpoints(directory):
        try:
            fp = load_checkpoint(path).get("fingerprint")
        except RuntimeError:
            fp = None
        if fp != expected_fingerprint:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


__all__ = [
    "checkpoint_path",
    "fingerprint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "remove_stale",
    "save_checkpoint",
]
