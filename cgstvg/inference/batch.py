"""Batch grounding: a CSV or JSONL of (video, sentence) pairs in, one JSON line out per pair, in input order.

Input: `.csv` with a header holding `video` and `sentence` (or `text`) columns, or `.jsonl` with one object per
line holding the same keys. Relative video paths are read relative to the pairs file's folder, so a folder of
clips with its pairs file can be moved as a whole. Blank JSONL lines are skipped.

Output: per pair `{"index": i, "input": {"video", "sentence"}, **result}` (the `GroundingResult.to_json` keys;
`input.video` is the resolved path) or, when the pair fails, `{"index": i, "input": {...}, "error": "<one
line>"}`. A failure (a missing or undecodable video, an empty sentence, a malformed line) never stops the batch.
The output file is written atomically once every pair is done.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cgstvg.inference.errors import GroundingError, InputError
from cgstvg.utils.atomic import atomic_path

BATCH_SUFFIXES = (".csv", ".jsonl")
SENTENCE_KEYS = ("sentence", "text")


@dataclass(frozen=True)
class Pair:
    """One input line: `video` resolved against the pairs file's folder, or `error` when the line is malformed."""

    index: int
    video: str
    sentence: str
    error: str | None = None


def _pair(index: int, record: object, where: str, base: Path) -> Pair:
    if not isinstance(record, dict):
        return Pair(index, "", "", f"{where}: expected an object with 'video' and 'sentence'")
    video = record.get("video")
    sentence = next((record[k] for k in SENTENCE_KEYS if record.get(k) is not None), None)
    if not isinstance(video, str) or not video.strip():
        return Pair(index, "", str(sentence or ""), f"{where}: no 'video' path")
    if not isinstance(sentence, str):
        return Pair(index, video, "", f"{where}: no 'sentence' (or 'text')")
    path = Path(video.strip())
    return Pair(index, str(path if path.is_absolute() else base / path), sentence)


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Parse a pairs file. A malformed line becomes a Pair with `error` set; an unreadable file raises
    InputError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in BATCH_SUFFIXES:
        raise InputError(f"{path}: a batch file must end in .csv or .jsonl")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the pairs file ({type(exc).__name__}: {exc})") from None
    base = path.parent
    pairs = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = set(reader.fieldnames or [])
        if "video" not in columns or not columns & set(SENTENCE_KEYS):
            raise InputError(
                f"{path}: the CSV header must name the columns 'video' and 'sentence' (or 'text'), "
                f"got {sorted(columns)}"
            )
        for i, row in enumerate(reader):
            pairs.append(_pair(i, row, f"{path}:{reader.line_num}", base))
        return pairs
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    for i, (n, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            pairs.append(Pair(i, "", "", f"{path}:{n}: not valid JSON ({exc.msg})"))
            continue
        pairs.append(_pair(i, record, f"{path}:{n}", base))
    return pairs


def ground_pairs(pairs: list[Pair], ground_one: Callable[[Pair], dict], progress: bool = True) -> Iterator[dict]:
    """Yield one output record per pair, in order. `ground_one(pair)` returns the result dict; an error it raises
    becomes the record's `error` (any Exception: one odd video must not cost the rest of a long batch)."""
    for pair in tqdm(pairs, desc="grounding", unit="pair", disable=not progress):
        record = {"index": pair.index, "input": {"video": pair.video, "sentence": pair.sentence}}
        if pair.error is not None:
            record["error"] = pair.error
        else:
            try:
                record.update(ground_one(pair))
            except GroundingError as exc:
                record["error"] = str(exc)
            except Exception as exc:  # noqa: BLE001 -- reported per pair, see the docstring
                lines = str(exc).strip().splitlines()
                record["error"] = f"{pair.video}: {type(exc).__name__}: {lines[0] if lines else ''}"
        yield record


def write_jsonl(path: str | os.PathLike, records) -> tuple[int, int]:
    """Write records as JSON lines, atomically; returns (records written, records with an error)."""
    count = failed = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            count += 1
            failed += "error" in record
    return count, failed


__all__ = ["BATCH_SUFFIXES", "Pair", "ground_pairs", "read_pairs", "write_jsonl"]
