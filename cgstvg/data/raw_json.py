"""Strict reading of raw annotation JSON: errors name the file and the record.

A malformed annotation file (invalid JSON, a wrong top-level type, a missing key or a value of the wrong type in
a record) is not a per-pair problem that a rejects table can absorb: it stops the stage with an
`AnnotationError` whose message starts with `<file>: <record>:`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class AnnotationError(ValueError):
    """A malformed annotation file. `file` and `record` say where, `problem` says what."""

    def __init__(self, file: str | os.PathLike, record: str, problem: str):
        self.file = str(file)
        self.record = record
        self.problem = problem
        super().__init__(f"{self.file}: {record}: {problem}")


class JsonObject(dict):
    """A JSON object that also keeps every (key, value) pair in file order, duplicate keys included.

    `json` keeps only the last value of a repeated key; HC-STVG files are dicts keyed by video file name, so a
    repeated key is a duplicate sample that must be reported, not silently dropped.
    """

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        self.pairs = pairs


def load_json(path: str | os.PathLike, *, keep_pairs: bool = False) -> Any:
    """Parse a JSON file; raise `AnnotationError` naming the file (and line) when it cannot be read.

    With `keep_pairs` every object comes back as a `JsonObject`. That hook runs in Python for every object, so
    it is kept for files keyed by sample (HC-STVG), not for box files with a million small objects.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise AnnotationError(path, f"byte {err.start}", "not UTF-8 text") from err
    except OSError as err:  # a directory, a symlink loop, no permission: say which, without a traceback
        raise AnnotationError(path, "file", f"cannot be read ({err.strerror or type(err).__name__})") from err
    try:
        with _cyclic_gc_paused():
            return json.loads(text, object_pairs_hook=JsonObject if keep_pairs else None)
    except json.JSONDecodeError as err:
        raise AnnotationError(path, f"line {err.lineno} column {err.colno}", f"invalid JSON: {err.msg}") from err
    except RecursionError as err:
        raise AnnotationError(
            path, "top level", "JSON nested too deeply to parse (no annotation format nests so)"
        ) from err


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Parsed JSON holds no reference cycles, yet the collector keeps re-scanning the growing tree while a large
    file is parsed; pausing it halves the time to read a VidOR box file."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def expect_type(value: Any, kind: type | tuple[type, ...], file, record: str, what: str) -> Any:
    """Return `value` if it is of `kind`, else raise naming `what` (e.g. "top level", "key 'bbox'")."""
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise AnnotationError(file, record, f"{what}: expected {names}, got {type(value).__name__} {_short(value)}")
    return value


def field(record: Any, key: str, file, record_id: str) -> Any:
    """`record[key]`, or an error that names the missing key and the keys present."""
    if not isinstance(record, dict):
        raise AnnotationError(file, record_id, f"expected an object, got {type(record).__name__} {_short(record)}")
    if key not in record:
        raise AnnotationError(file, record_id, f"missing key '{key}' (keys: {', '.join(sorted(record))})")
    return record[key]


def int_field(record: Any, key: str, file, record_id: str, *, minimum: int | None = None) -> int:
    """An integer field (an integral float such as 157.0 is accepted), optionally at least `minimum`, and within
    int32: the normalized tables store frame numbers, sizes and ids as int32, so a larger value (3e9 frames) is a
    malformed record, not a crash in pyarrow."""
    value = field(record, key, file, record_id)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    expect_type(value, int, file, record_id, f"key '{key}'")
    if minimum is not None and value < minimum:
        raise AnnotationError(file, record_id, f"key '{key}': expected an integer >= {minimum}, got {value}")
    if not INT32_MIN <= value <= INT32_MAX:
        raise AnnotationError(file, record_id, f"key '{key}': {value} is out of the int32 range of the tables")
    return value


def number_field(record: Any, key: str, file, record_id: str) -> float:
    """A finite, positive number (fps)."""
    value = expect_type(field(record, key, file, record_id), (int, float), file, record_id, f"key '{key}'")
    if not math.isfinite(value) or value <= 0:
        raise AnnotationError(file, record_id, f"key '{key}': expected a finite positive number, got {value}")
    return float(value)


def str_field(record: Any, key: str, file, record_id: str) -> str:
    return expect_type(field(record, key, file, record_id), str, file, record_id, f"key '{key}'")


def list_field(record: Any, key: str, file, record_id: str) -> list:
    return expect_type(field(record, key, file, record_id), list, file, record_id, f"key '{key}'")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "AnnotationError",
    "JsonObject",
    "expect_type",
    "field",
    "int_field",
    "list_field",
    "load_json",
    "number_field",
    "str_field",
]
