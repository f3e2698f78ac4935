"""The decode cache: each decoded split stored once as a safetensors file.

Decoding 60,000 PNGs or unzipping IDX files takes seconds to minutes; reading the decoded
uint8 tensors back takes milliseconds. A cache file's name carries a key made from the
source files' paths, sizes and modification times, so replaced or edited data is decoded
afresh instead of served stale. Safetensors holds only tensors and a string map: loading a
cache file cannot run code, unlike pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.data.registry import get_info
from cnnlab.data.sources import source_file

if TYPE_CHECKING:
    import torch


def cache_dir() -> Path:
    """Where decoded splits are cached (``$CNNLAB_CACHE`` overrides)."""
    env = os.environ.get("CNNLAB_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("cnnlab")) / "decoded"


def source_key(name: str, split: str, location: Path | None,
               options: dict | None = None) -> str:
    """Cache key from the source files' names, sizes and modification times, and the decode
    options (an image folder resized at decode time is another cache file)."""
    parts = [name, split, "v1", str(location.resolve()) if location else ""]
    if options:
        parts.append(json.dumps(options, sort_keys=True))
    if location is not None:
        required = get_info(name).required
        if required:  # only the data set's own files, not whatever else shares the folder
            files = [source_file(location, f) for f in required]
        elif location.is_file():
            files = [location]
        else:
            files = sorted(p for p in location.rglob("*") if p.is_file())
        for p in files:
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def cache_path(name: str, split: str, location: Path | None, options: dict | None = None
               ) -> Path:
    """The cache file for one split of data set ``name`` read from ``location``."""
    key = source_key(name, split, location, options)
    return cache_dir() / f"{name}-{split}-{key}.safetensors"


def read_cached(path: Path, mmap: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]] | None:
    """(images, labels, class names) from a cache file, or None when it cannot be read.

    ``mmap``: the images stay in the file, memory-mapped (copy-on-write, so the tensor is
    writable and the file never changes): pages are read when a batch touches them, and a
    split larger than memory can still be trained on (``--data-memory stream``)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if mmap:
        try:
            return _read_mapped(path)
        except (KeyError, OSError, ValueError, TypeError, OverflowError, MemoryError):
            return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        t = load_file(str(path))
        return t["images"], t["labels"], tuple(json.loads(meta["classes"]))
    except (SafetensorError, KeyError, OSError, ValueError):
        return None


def write_cached(path: Path, images: torch.Tensor, labels: torch.Tensor,
                 classes: tuple[str, ...]) -> None:
    """Write one decoded split atomically; raises OSError when the cache is not writable."""
    from safetensors.torch import save_file

    from cnnlab.fileio import atomic_path

    with atomic_path(path) as tmp:
        save_file({"images": images, "labels": labels}, str(tmp),
                  metadata={"classes": json.dumps(list(classes))})


_DTYPES = {"U8": "uint8", "I64": "int64"}


def _read_mapped(path: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """The safetensors layout read by hand (8-byte header length, JSON header, then raw
    little-endian data), so the images can be a ``numpy.memmap`` instead of a copy."""
    import numpy as np
    import torch

    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if 8 + size > os.fstat(f.fileno()).st_size:
            raise ValueError(f"header of {size} bytes in a smaller file")
        header = json.loads(f.read(size))
    meta = header.pop("__metadata__", {})
    start = 8 + size

    def mapped(name: str) -> np.ndarray:
        info = header[name]
        begin, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        shape = tuple(info["shape"])
        if end - begin != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{name}: {end - begin} bytes for shape {shape}")
        return np.memmap(path, dtype=dtype, mode="c", offset=start + begin, shape=shape)

    labels = torch.from_numpy(np.array(mapped("labels")))  # small: read into memory
    return torch.from_numpy(mapped("images")), labels, tuple(json.loads(meta["classes"]))
