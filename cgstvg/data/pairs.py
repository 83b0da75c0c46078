"""One split's video-sentence pairs as a reader emits them: rows, rejects, and the input count they reconcile with.

Also the checks every reader shares: WebDataset-safe sample ids, paths that must stay inside the raw-data root,
and box validation (xyxy pixels, clipped to the frame).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, field

import numpy as np

from cgstvg.data.schema import RejectReason

_UNSAFE_ID_CHARS = re.compile(r"[^\w-]")  # \w: Unicode letters and digits and '_'; on ASCII exactly [A-Za-z0-9_]
_ID_HASH_CHARS = 8


def safe_id(text: str) -> str:
    """Map a raw key to a sample-id part: letters and digits (any script), '_' and '-' are kept, every other
    character becomes '_'.

    WebDataset splits a member name at its first '.', so sample ids must not contain one. An ASCII key maps as it
    always has ('a.b c' -> 'a_b_c'); when a non-ASCII character had to be replaced (an emoji, a combining accent),
    '-' and the first 8 hex digits of the key's sha256 are appended, so that distinct keys keep distinct ids
    ('日本' stays '日本'; '🎬' and '🎥' become '_-<hash>' with different hashes).
    """
    replaced = _UNSAFE_ID_CHARS.findall(text)
    sid = _UNSAFE_ID_CHARS.sub("_", text) or "_"
    if any(not ch.isascii() for ch in replaced):
        sid += "-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_ID_HASH_CHARS]
    return sid


def path_inside(folder: str, relative: str) -> str | None:
    """`folder/relative` normalised, or None if `relative` is absolute or climbs out of `folder`.

    The check is lexical on purpose: a user may keep `videos/` as a symlink to another disk.
    """
    if not relative or relative.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", relative):
        return None
    joined = posixpath.normpath(posixpath.join(folder, relative.replace("\\", "/")))
    if joined == folder or not joined.startswith(folder.rstrip("/") + "/"):
        return None
    return joined


def check_boxes(xyxy: np.ndarray, width: int, height: int, first_frame: int) -> tuple[np.ndarray | None, str]:
    """Clip (N, 4) xyxy pixel boxes to the frame [0, width] x [0, height].

    Returns (float32 boxes, "") or (None, why) when a box is non-finite or has zero area after clipping.
    `first_frame` is the frame id of row 0, used in the message. Written with numpy because the stage
    handles plain arrays and need not import torch just for a clamp.
    """
    finite = np.isfinite(xyxy).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        return None, f"box at frame {first_frame + i} is not finite: {xyxy[i].tolist()}"
    clipped = xyxy.astype(np.float64, copy=True)
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if empty.any():
        i = int(np.argmax(empty))
        return None, (
            f"box at frame {first_frame + i} has zero area inside the {width}x{height} frame: "
            f"{xyxy[i].tolist()} (xyxy before clipping)"
        )
    return clipped.astype(np.float32), ""


@dataclass
class SplitPairs:
    """What a reader produced for one (dataset, split).

    `pairs_in` is counted from the annotation file before any pair is processed, so that
    `pairs_in == len(rows) + len(rejects)` checks the reader itself.
    Each row is a dict with the `SAMPLE_SCHEMA` columns; its "boxes" is a float32 array of shape (N, 4).
    """

    dataset: str
    split: str
    pairs_in: int = 0
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    _claimed: dict[str, str] = field(default_factory=dict, repr=False)

    def claim(self, sample_id: str, source: str) -> bool:
        """Reserve `sample_id`; a second claim is rejected as a duplicate key and returns False."""
        if sample_id not in self._claimed:
            self._claimed[sample_id] = source
            return True
        first = self._claimed[sample_id]
        message = f"sample id '{sample_id}' is already used by {first}"
        self.reject(sample_id, source, RejectReason.DUPLICATE_KEY, message)
        return False

    def reject(self, sample_id: str, source: str, reason: RejectReason, message: str) -> None:
        self.rejects.append(
            {
                "dataset": self.dataset,
                "split": self.split,
                "sample_id": sample_id,
                "source": source,
                "reason": reason.value,
                "message": message,
            }
        )

    def add(self, row: dict) -> None:
        self.rows.append(row)

    @property
    def reconciles(self) -> bool:
        return self.pairs_in == len(self.rows) + len(self.rejects)


__all__ = ["SplitPairs", "check_boxes", "path_inside", "safe_id"]
