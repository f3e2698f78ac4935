"""Atomic file writes, so that an interrupted run never leaves a half-written file behind.

A temporary file from ``mkstemp`` is private (0600); before it is renamed into place it
gets the permissions any new file would get (0666 less the umask, usually 0644), so a
teammate can read a shared run directory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_UMASK: int | None = None


def _file_mode() -> int:
    """0666 less the process umask (read once: ``os.umask`` can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    from cnnlab.errors import CnnlabError

    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path} is a directory; give a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CnnlabError(f"cannot write {path} ({e.strerror or e}); choose another place") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(path: str | os.PathLike, data: bytes | str | Callable[[Path], None]) -> None:
    """Write bytes, text, or whatever ``data(tmp_path)`` writes, atomically to ``path``."""
    with atomic_path(path) as tmp:
        if callable(data):
            data(tmp)
        elif isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first: what a
    ``mkdir(parents=True)`` is about to create, for :func:`remove_empty` to undo."""
    path = Path(path)
    return [d for d in (path, *path.parents) if not d.exists()]


def remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; stop at the first that is not
    (it holds something of someone's, and so do the folders above it)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def reserve(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of an open file on disk, so that a memory map of it cannot
    fail later with SIGBUS (a crash with no message) when the disk fills: an OSError here
    instead. Where the system cannot allocate ahead, the file is only extended."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it
                raise
    os.ftruncate(fd, size)
