"""Reading the IDX files of MNIST and Fashion-MNIST, with header checks.

The format is a 4-byte magic number (0x00000803 for images, 0x00000801 for labels), then
one big-endian uint32 per dimension, then the raw uint8 values. We check the magic, the
dimensions and the exact byte count so a truncated or mislabelled file is refused with a
message that names it, instead of producing a silently wrong array.

MNIST and Fashion-MNIST share the format and the file names, so one decoder serves both;
the registry binds each data set's class names to it.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cnnlab.data.sources import source_file
from cnnlab.errors import CnnlabError

FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def read_bytes(path: Path) -> bytes:
    """Read a file, gunzipping it when it is gzip, and turn I/O failures into clear errors."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CnnlabError(f"cannot read {path}: {e.strerror}; check the path and permissions") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise CnnlabError(
                f"{path} is not a complete gzip file ({e}); delete it and download it again"
            ) from e
    return raw


def _parse(path: Path, magic: int, ndim: int) -> np.ndarray:
    data = read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CnnlabError(f"{path} is too short to be an IDX file ({len(data)} bytes)")
    got_magic = int.from_bytes(data[:4], "big")
    if got_magic != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise CnnlabError(
            f"{path} has IDX magic number {got_magic}, expected {magic} for {kind}; "
            "is it the right file, or a corrupt one?"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise CnnlabError(
            f"{path} should hold {expected} bytes for shape {tuple(dims)} but holds {len(data)}; "
            "the file is truncated or corrupt: delete it and download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_images(path: Path) -> np.ndarray:
    """Return an (N, H, W) uint8 array from an IDX image file (gzipped or not)."""
    return _parse(path, IMAGES_MAGIC, 3)


def read_idx_labels(path: Path, num_classes: int = 10) -> np.ndarray:
    """Return an (N,) int64 array from an IDX label file, checking every label is in range."""
    labels = _parse(path, LABELS_MAGIC, 1).astype(np.int64)
    if labels.size and labels.max() >= num_classes:
        raise CnnlabError(
            f"{path} has label {int(labels.max())}, outside 0..{num_classes - 1}; the file is corrupt"
        )
    return labels


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file and check that their counts agree."""
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise CnnlabError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
            "the two files do not belong together"
        )
    return images, labels


def decode_split(
    split: str, location: Path | None, classes: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return one split (``train`` or ``test``, stored as ``t10k``) as (N, 1, H, W) images."""
    assert location is not None, "IDX data sets are read from files"
    prefix = "train" if split == "train" else "t10k"
    images, labels = read_idx_pair(
        source_file(location, f"{prefix}-images-idx3-ubyte"),
        source_file(location, f"{prefix}-labels-idx1-ubyte"),
    )
    return images[:, None], labels, list(classes)
