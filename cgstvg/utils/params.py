"""Read `params.yaml`: a stage reads only the sections it declares in dvc.yaml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    with open(path) as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(params).__name__}")
    return params


def section(params: dict[str, Any], name: str, path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Return one section, with an error that names the file when it is missing."""
    if name not in params:
        raise KeyError(f"{Path(path)}: no section '{name}' (sections: {', '.join(sorted(params))})")
    return params[name]
