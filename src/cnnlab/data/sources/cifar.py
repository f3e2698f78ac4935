"""Reading the official CIFAR-10 python batches without trusting pickle.

The batches (``cifar-10-batches-py/data_batch_1`` ...) are Python pickles. A pickle can run
any code when loaded, so we never call ``pickle.load`` on them: a restricted unpickler
allows only the handful of numpy globals an array needs and refuses everything else.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3; only encodes text
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def safe_unpickle(data: bytes) -> object:
    """Unpickle plain containers and numpy arrays only."""
    return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (N, 3, 32, 32) uint8 images and (N,) int64 labels from one CIFAR-10 batch file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CnnlabError(f"cannot read {path}: {e.strerror}") from e
    try:
        obj = safe_unpickle(raw)
    except Exception as e:  # any decoding failure means the file is not a CIFAR batch
        raise CnnlabError(f"{path} is not a valid CIFAR-10 batch ({e}); download it again") from e
    if not isinstance(obj, dict):
        raise CnnlabError(f"{path} is not a CIFAR-10 batch (top level is not a dict)")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise CnnlabError(f"{path}: 'data' must be an (N, 3072) uint8 array; the file is corrupt")
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data):
        raise CnnlabError(
            f"{path}: {len(data)} images but {len(labels) if labels is not None else 0} labels"
        )
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CnnlabError(f"{path} has labels outside 0..9; the file is corrupt")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_split(directory: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the batches of one split found in ``cifar-10-batches-py``."""
    parts = [read_cifar_batch(directory / n) for n in (TRAIN_BATCHES if train else TEST_BATCHES)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def decode_split(
    split: str, location: Path | None, classes: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return one split of ``cifar-10-batches-py`` with the class names the registry binds."""
    assert location is not None, "CIFAR-10 is read from files"
    images, labels = read_cifar_split(location, train=split == "train")
    return images, labels, list(classes)
