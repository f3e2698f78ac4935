"""The decode cache: each decoded split stored once as a safetensors file.

Decoding 60,000 PNGs or unzipping IDX files takes seconds to minutes (importing aeon's
reader of time-series files alone takes seconds); reading the decoded uint8 (or float32)
tensors back takes milliseconds. A cache file's name carries a key made from the
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
    import numpy as np
    import torch


def cache_dir() -> Path:
    """Where decoded splits are cached (``$CNNLAB_CACHE`` overrides)."""
    env = os.environ.get("CNNLAB_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("cnnlab")) / "decoded"


def source_key(name: str, split: str, location: Path | None,
               options: dict | None = None, signature: list[str] | None = None) -> str:
    """Cache key from the source files' names, sizes and modification times, and the decode
    options (an image folder resized at decode time is another cache file). ``signature``:
    what the split depends on, when the caller knows better than "every file under
    ``location``" (an image folder: the split's own files and classes)."""
    parts = [name, split, "v1", str(location.resolve()) if location else ""]
    if options:
        parts.append(json.dumps(options, sort_keys=True))
    if signature is not None:
        parts.extend(signature)
    elif location is None:  # embedded data: the package's own files, when it names them
        for p in get_info(name).files:
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    else:
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


def cache_path(name: str, split: str, location: Path | None, options: dict | None = None,
               signature: list[str] | None = None) -> Path:
    """The cache file for one split of data set ``name`` read from ``location``:
    ``NAME-SPLIT-PLACE-KEY.safetensors``, where PLACE says which files decoded how (the
    location and the options) and KEY what they held (names, sizes, times; or
    ``signature``, see :func:`source_key`)."""
    place = hashlib.sha1(json.dumps([str(location.resolve()) if location else "", options or {}],
                                    sort_keys=True).encode()).hexdigest()[:8]
    key = source_key(name, split, location, options, signature)
    return cache_dir() / f"{name.replace(':', '-')}-{split}-{place}-{key}.safetensors"


def remove_stale(cache: Path) -> list[Path]:
    """Delete the cache files of the same place with another key: what the files held before
    they changed (an image added to a folder), which nothing will read again; and scratch
    files (``.decode.tmp.PID``) whose process is gone (killed mid-decode). Returns them.
    (A process still mapping one keeps its pages: unlinking does not unmap.)"""
    stem = cache.name.rsplit("-", 1)[0]  # NAME-SPLIT-PLACE
    gone = []
    for old in cache.parent.glob(f"{stem}-*.safetensors"):
        if old != cache and len(old.name) == len(cache.name):
            gone += _unlink(old)
    for scratch in cache.parent.glob(f"{stem}-*.safetensors.decode.tmp.*"):
        host, _, pid = scratch.name.rsplit(".decode.tmp.", 1)[-1].rpartition("-")
        if host == _host() and pid.isdigit() and not _alive(int(pid)):
            gone += _unlink(scratch)  # only this machine's: another one's may be running
    return gone


def scratch_path(cache: Path) -> Path:
    """Where a folder is decoded before its cache file is written: named with this machine
    and process, so that a later run can tell a scratch file left by a killed decode from
    one that another process (here, or on a machine sharing the cache) is still writing."""
    return cache.with_name(f"{cache.name}.decode.tmp.{_host()}-{os.getpid()}")


def _host() -> str:
    import socket

    return "".join(c for c in socket.gethostname() if c.isalnum()) or "host"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (where that cannot be told: yes)."""
    if os.name != "posix":  # os.kill(pid, 0) is no probe on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process, or no answer: leave its file alone
        return True
    return True


def _unlink(path: Path) -> list[Path]:
    try:
        path.unlink()
        return [path]
    except OSError:  # read-only, or another process removed it first
        return []


def read_cached(path: Path, mmap: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]] | None:
    """(images, labels, class names) from a cache file, or None when it cannot be read
    (images: uint8 (N, C, H, W), or float32 (N, C, L) series).

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


def write_cached(path: Path, images: torch.Tensor | np.ndarray,
                 labels: torch.Tensor | np.ndarray, classes: tuple[str, ...],
                 skipped: list[str] | None = None) -> None:
    """Write one decoded split atomically, in the safetensors format, a few thousand images
    at a time: ``images`` may be a memory map or a strided view (a decoded folder larger than
    memory), and no second full copy is made. ``images`` are uint8 (N, C, H, W) or float32
    (N, C, L) series. ``skipped``: the files left out (``--bad-files skip``), kept in the
    header so that a later reader can say so, or refuse the split (:func:`read_skipped`).
    Raises OSError or CnnlabError when the cache is not writable."""
    import numpy as np

    from cnnlab.fileio import atomic_path

    images = images.numpy() if hasattr(images, "numpy") else images
    labels = np.ascontiguousarray(labels.numpy() if hasattr(labels, "numpy") else labels,
                                  dtype="<i8")
    kinds = {(np.dtype(np.uint8), 4): "U8", (np.dtype(np.float32), 3): "F32"}
    kind = kinds.get((images.dtype, images.ndim))
    if kind is None or len(images) != len(labels):
        raise ValueError(f"expected uint8 (N, C, H, W) images or float32 (N, C, L) series "
                         f"and N labels, got {images.dtype} {images.shape} and {labels.shape}")
    n_bytes = int(np.prod(images.shape)) * images.dtype.itemsize
    meta = {"classes": json.dumps(list(classes))}
    if skipped:
        meta["skipped"] = json.dumps(list(skipped))
    header = {"__metadata__": meta,
              "images": {"dtype": kind, "shape": list(images.shape),
                         "data_offsets": [0, n_bytes]},
              "labels": {"dtype": "I64", "shape": [len(labels)],
                         "data_offsets": [n_bytes, n_bytes + labels.nbytes]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for i in range(0, len(images), 4096):
            f.write(np.ascontiguousarray(images[i:i + 4096], dtype=images.dtype.newbyteorder("<"))
                    .tobytes())
        f.write(labels.tobytes())


_DTYPES = {"U8": "uint8", "F32": "float32", "I64": "int64"}


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


def read_skipped(path: Path) -> list[str]:
    """The files a cached split left out as unusable (``--bad-files skip``), as "name (why)";
    empty when it left none out or the header cannot be read."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(min(size, 2**26))).get("__metadata__", {})
        return list(json.loads(meta.get("skipped", "[]")))
    except (OSError, ValueError, AttributeError):
        return []
