"""Read `params.yaml`: a stage reads only the sections it declares in dvc.yaml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cgstvg.utils.params_schema import ParamsError, validate_params


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """The params file, checked against `cgstvg.utils.params_schema.SCHEMA`.

    Unknown sections and keys, wrong types and out-of-range values raise one `ParamsError` (a ValueError) that
    names the file and the dotted key of each problem; missing keys are left to the code that reads them.
    """
    with open(path) as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ParamsError([f"{path}: expected a mapping at the top level, got {type(params).__name__}"])
    return validate_params(params, path)


def section(params: dict[str, Any], name: str, path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Return one section, with an error that names the file when it is missing."""
    if name not in params:
        raise KeyError(f"{Path(path)}: no section '{name}' (sections: {', '.join(sorted(params))})")
    return params[name]
