"""Atomic outputs: write to a temporary sibling, then rename, so an interrupted stage never leaves half a file.

A write that fails (a full disk, a quota, a file-size limit, a directory where a file should go) raises
`WriteError`, one line naming the output and the reason (with the free space for a full disk), instead of the
writer's own traceback (`enforce fail at inline_container.cc:672` from torch.save, say).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class WriteError(RuntimeError):
    """An output could not be written; the message names it and says why."""


# errno values that mean "no room": a full disk, a quota, a file-size limit (RLIMIT_FSIZE)
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# torch.save reports a failed write through its zip writer as a RuntimeError with one of these in the message
TORCH_WRITER = ("PytorchStreamWriter", "inline_container")


def _free_space(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.0f} MiB free there"
    except OSError:
        return "free space unknown"


def write_error(path: Path, exc: BaseException) -> WriteError | None:
    """The WriteError for an exception raised while writing `path`, or None if it is not a failed write."""
    if isinstance(exc, OSError):
        if exc.errno in NO_ROOM:
            return WriteError(f"{path}: cannot be written: {exc.strerror} ({_free_space(path.parent)})")
        if isinstance(exc, IsADirectoryError) or path.is_dir():
            return WriteError(f"{path}: cannot be written: it is a directory")
        return WriteError(f"{path}: cannot be written: {exc.strerror or exc}")
    if isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in TORCH_WRITER):
        first = str(exc).strip().splitlines()[0][:100]
        return WriteError(
            f"{path}: cannot be written: the write failed part way ({first}); is the disk full? "
            f"{_free_space(path.parent)}"
        )
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    With `is_dir=True` the temporary path is an (empty) directory and the whole directory is swapped in.
    """
    path = Path(path)
    if not is_dir and path.is_dir():
        raise WriteError(f"{path}: cannot be written: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise WriteError(f"{path}: cannot be written: {blocking} is a file, not a directory") from None
        raise write_error(path, exc) or exc from None
    try:
        yield tmp
        if is_dir:
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        failed = write_error(path, exc)
        if failed is not None:
            raise failed from exc
        raise


def write_json(path: str | os.PathLike, obj, *, indent: int = 2) -> None:
    """Write JSON atomically (sorted keys, so reruns are byte-identical)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def write_parquet(path: str | os.PathLike, table) -> None:
    """Write a pyarrow table atomically. No timestamps or random ids are stored, so reruns are byte-identical."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
