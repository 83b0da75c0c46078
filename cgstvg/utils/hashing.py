"""The sha256 of a file, as the shard and feature markers, the manifests and the checkpoint metadata record it."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's bytes, read in chunks (`hashlib.file_digest`)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


__all__ = ["sha256_file"]
