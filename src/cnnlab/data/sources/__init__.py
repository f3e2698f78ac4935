"""Readers of the raw formats, one module per format, each with the decoder the registry uses.

Every decoder has the signature ``decode_split(split, location)`` and returns the whole split
as (N, C, H, W) uint8 images, (N,) int64 labels and the class names. This package's own
module holds only the file-naming rule that locating, caching and decoding share: a data
set's file may be stored gzipped (``name.gz``) or raw (``name``).
"""

from __future__ import annotations

from pathlib import Path


def source_file(directory: Path, name: str) -> Path:
    """The file ``name`` in ``directory``: its ``.gz`` when that exists, else the raw file."""
    gz = directory / f"{name}.gz"
    return gz if gz.is_file() else directory / name


def has_source_file(directory: Path, name: str) -> bool:
    """Whether ``directory`` holds ``name``, gzipped or raw."""
    return (directory / name).is_file() or (directory / f"{name}.gz").is_file()
