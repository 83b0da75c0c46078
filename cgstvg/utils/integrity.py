"""Verify on read: a file is used only when it is what its writer recorded (size, sha256, sample keys).

The readers of frame shards, feature shards and checkpoints call these before they use a file; a mismatch raises
`IntegrityError` (a ValueError, so the stages' one-line error handling applies) naming the file. A file is hashed
once per process (per path, size, mtime and inode): a stage that reads a split twice pays for it once.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from cgstvg.utils.hashing import sha256_file


class IntegrityError(ValueError):
    """A file is missing or differs from what its writer recorded; the message names it."""


_VERIFIED: set[tuple] = set()
_KEYS: dict[tuple, list[str]] = {}


def _identity(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def verify_file(path: str | os.PathLike, sha256: str, recorded_in: str | os.PathLike, size: int | None = None) -> None:
    """Raise IntegrityError unless `path` exists with this sha256 (and size); `recorded_in` names the record."""
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path}: missing ({recorded_in} lists it)")
    key = (*_identity(path), sha256, size)
    if key in _VERIFIED:
        return
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise IntegrityError(f"{path}: {actual} bytes, {recorded_in} records {size}")
    digest = sha256_file(path)
    if digest != sha256:
        raise IntegrityError(f"{path}: sha256 {digest[:16]}..., {recorded_in} records {sha256[:16]}... (changed)")
    _VERIFIED.add(key)


def tar_keys(path: str | os.PathLike) -> list[str]:
    """The WebDataset sample keys of a tar (member names up to their first dot), in file order; reads headers only."""
    path = Path(path)
    key = _identity(path)
    if key not in _KEYS:
        keys: list[str] = []
        try:
            with tarfile.open(path, mode="r:") as tar:
                for member in tar:
                    k = member.name.split(".", 1)[0]
                    if not keys or keys[-1] != k:
                        keys.append(k)
        except (tarfile.TarError, OSError) as err:  # a header damaged after (or by) its writer
            after = f"after sample {keys[-1]!r}" if keys else "before its first sample"
            raise IntegrityError(f"{path}: not a readable tar {after} ({type(err).__name__}: {err})") from None
        _KEYS[key] = keys
    return list(_KEYS[key])


__all__ = ["IntegrityError", "tar_keys", "verify_file"]
