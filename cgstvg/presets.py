"""Presets: the release's settings per dataset as files (`conf/<name>.yaml`), and writing one into params.yaml.

A preset is a partial params.yaml (same sections and keys, checked by `cgstvg.utils.params_schema`). The shipped
ones, `cpu` (the synthetic default, equal to the shipped params.yaml), `hcstvg_v1`, `hcstvg_v2` and `vidstg`, all
set the same keys, so selecting one after another never leaves a key of the previous one behind.

    cgstvg preset hcstvg_v1                  # write conf/hcstvg_v1.yaml's values into ./params.yaml
    cgstvg preset conf/my.yaml --dry-run     # list what would change
    cgstvg preset --list

`apply_preset` edits params.yaml in place with ruamel.yaml's round-trip mode, the library DVC itself uses for
`dvc exp run -S`: comments, key order and layout of every key the preset does not set stay as they are. Mappings
are merged key by key, except those in `REPLACED` (the appearance backbone, whose keys depend on its `name`),
which become exactly the preset's keys. The result is validated against the schema before it is written.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from cgstvg.utils.atomic import atomic_path
from cgstvg.utils.params_schema import ParamsError, validate_params

PRESET_DIR = Path("conf")
SHIPPED = ("cpu", "hcstvg_v1", "hcstvg_v2", "vidstg")
# Mappings a preset replaces whole: the small CNN and the ResNets take disjoint keys (params_schema's rule).
REPLACED = ("model.backbones.appearance",)


class PresetError(ParamsError):
    """A preset that cannot be found, read or applied; the message is one line naming the file."""

    def __init__(self, message: str):
        super().__init__([message])


def preset_path(name: str | os.PathLike, preset_dir: str | os.PathLike = PRESET_DIR) -> Path:
    """`name` as a file: a path as given (anything with a suffix or a folder), else `<preset_dir>/<name>.yaml`."""
    path = Path(name)
    if path.suffix or len(path.parts) > 1:
        found = path
    else:
        found = Path(preset_dir) / f"{name}.yaml"
    if not found.is_file():
        known = ", ".join(available(preset_dir)) or "none"
        raise PresetError(f"{found}: no such preset (presets in {preset_dir}/: {known})")
    return found


def available(preset_dir: str | os.PathLike = PRESET_DIR) -> list[str]:
    return sorted(p.stem for p in Path(preset_dir).glob("*.yaml"))


def load_preset(path: str | os.PathLike) -> dict[str, Any]:
    """The preset's values, validated: an unknown section or key is a `ParamsError` naming the file and key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PresetError(f"{path}: cannot read the preset ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ParamsError([f"{path}: expected a mapping at the top level, got {type(data).__name__}"])
    return validate_params(data, path)


def leaf_keys(data: Mapping, path: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf (the mappings in `REPLACED` count as one leaf)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if isinstance(value, Mapping) and dotted not in REPLACED:
            out.update(leaf_keys(value, dotted))
        else:
            out[dotted] = value
    return out


def _plain(value: Any) -> Any:
    """ruamel's commented containers and scalars as plain Python values (for comparison)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _set(target: Any, key: Any, value: Any, dotted: str, changes: list[str]) -> None:
    """target[key] = value, keeping the target's containers (and so their comments and style) where it can."""
    old = target.get(key)
    if _plain(old) != _plain(value):
        changes.append(dotted)
    if isinstance(old, list) and isinstance(value, list):
        _replace_items(old, value)
    elif isinstance(old, dict) and isinstance(value, Mapping):
        _replace_keys(old, value)
    else:
        target[key] = value


def _replace_items(old: Any, value: list) -> None:
    """A list's items replaced in place: the key's comment, the block style and the comment (or blank line) after
    the last item stay."""
    comments: Any = getattr(old, "ca", None)
    last = comments.items.pop(len(old) - 1, None) if comments is not None and old else None
    old[:] = list(value)
    if last is not None and old:
        comments.items[len(old) - 1] = last


def _replace_keys(old: Any, value: Mapping) -> None:
    """A `REPLACED` mapping: exactly the preset's keys in its order, each with the target's comment where it had
    one, else the preset's."""
    ours = dict(old.ca.items) if hasattr(old, "ca") else {}
    theirs = dict(value.ca.items) if hasattr(value, "ca") else {}
    for k in list(old):
        del old[k]
    for k, v in value.items():
        old[k] = v
        comment = ours.get(k, theirs.get(k))
        if comment is not None:
            old.ca.items[k] = comment


def _merge(target: Any, preset: Mapping, path: str, changes: list[str]) -> None:
    for key, value in preset.items():
        dotted = f"{path}.{key}" if path else str(key)
        if isinstance(value, Mapping) and dotted not in REPLACED and isinstance(target.get(key), dict):
            _merge(target[key], value, dotted, changes)
        else:
            _set(target, key, value, dotted, changes)


def _round_trip() -> YAML:
    rt = YAML()  # round-trip mode, as DVC's `modify_yaml`
    rt.default_flow_style = False
    return rt


def apply_preset(
    preset: str | os.PathLike, params: str | os.PathLike = "params.yaml", dry_run: bool = False
) -> list[str]:
    """Write the preset file `preset`'s values into `params` (in place); returns the dotted keys that changed.

    Raises `ParamsError` (the preset, or the result, does not fit the schema; each problem names its file and
    key) or `PresetError` (a file that cannot be read)."""
    preset, params = Path(preset), Path(params)
    load_preset(preset)  # schema first, with the preset's own file name in every message
    rt = _round_trip()
    try:
        values = rt.load(preset.read_text())
        doc = rt.load(params.read_text())
    except OSError as exc:
        raise PresetError(f"{exc.filename}: cannot read it ({exc.strerror})") from None
    if not isinstance(doc, dict):
        raise PresetError(f"{params}: expected a mapping at the top level")
    changes: list[str] = []
    _merge(doc, values, "", changes)
    stream = io.StringIO()
    rt.dump(doc, stream)
    text = stream.getvalue()
    validate_params(yaml.safe_load(text), f"{params} (with {preset})")  # as every stage will read it
    if not dry_run and changes:
        with atomic_path(params) as tmp:
            Path(tmp).write_text(text)
            os.chmod(tmp, params.stat().st_mode & 0o777)  # mkstemp's 0600 would replace the file's own mode
    return changes


# The columns of the README's table (README "Presets"), in order.
TABLE_COLUMNS = {"cpu": "CPU default", "hcstvg_v1": "HC-STVG v1", "hcstvg_v2": "HC-STVG v2", "vidstg": "VidSTG"}


def _show(value: Any) -> str:
    """A value as the table prints it: YAML flow style, small floats in exponent form (3e-4, not 0.0003)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        text = f"{value:.0e}" if value != 0 and abs(value) < 1e-2 else f"{value:g}"
        return re.sub(r"e([-+])0*(\d)", lambda m: f"e{m.group(1).replace('+', '')}{m.group(2)}", text)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_show(v)}" for k, v in value.items())
    return str(value)


def preset_table(preset_dir: str | os.PathLike = PRESET_DIR) -> str:
    """The README's table of the shipped presets, one column per preset.

    Only keys whose value differs between presets appear. A row holds keys of one mapping that agree on which
    presets repeat the value of the preset to their left (such a cell says 'same'), so a row never repeats
    values that did not change."""
    leaves = {name: leaf_keys(load_preset(Path(preset_dir) / f"{name}.yaml")) for name in TABLE_COLUMNS}
    rows: dict[tuple[str, tuple[bool, ...]], list[str]] = {}
    for key in leaves["cpu"]:
        shown = [_show(leaves[name].get(key)) for name in TABLE_COLUMNS]
        if len(set(shown)) == 1:
            continue
        group = key if key in REPLACED else key.rpartition(".")[0]
        pattern = tuple(a == b for a, b in zip(shown, shown[1:]))
        rows.setdefault((group, pattern), []).append(key)
    lines = ["| section | " + " | ".join(TABLE_COLUMNS.values()) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for (group, pattern), keys in rows.items():
        cells = []
        for name, same in zip(TABLE_COLUMNS, (False, *pattern)):
            if same:
                cells.append("same")
                continue
            parts = [
                _show(leaves[name][k]) if k == group else f"{k[len(group) + 1 :]}: {_show(leaves[name][k])}"
                for k in keys
            ]
            cells.append("`" + ", ".join(parts) + "`")
        lines.append(f"| `{group}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "PRESET_DIR",
    "REPLACED",
    "SHIPPED",
    "PresetError",
    "apply_preset",
    "available",
    "leaf_keys",
    "load_preset",
    "preset_path",
    "preset_table",
]
