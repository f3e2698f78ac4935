"""Shared fixtures: an isolated cache and data root per test session, synthetic data makers."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Never read or write the user's cache or data dirs; no CNNLAB_DATA from the caller."""
    home = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("CNNLAB_CACHE", str(home / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(directory: Path, n_train: int = 64, n_test: int = 32, seed: int = 0,
                      compress: bool = True) -> Path:
    """Write the four MNIST-style IDX files (random 28x28 images) into ``directory``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            data = idx_bytes(arr, magic)
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                (directory / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
            else:
                (directory / name).write_bytes(data)
    return directory


def write_cifar_batches(directory: Path, n: int = 20, seed: int = 0) -> Path:
    """Write CIFAR-10 python batches of ``n`` images each, in the official layout."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(),
                 b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{i}.png".encode() for i in range(n)]}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    return directory


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory) -> Path:
    """d2l's LeNet after one short epoch on the embedded digits (resized to 28x28): a real
    run directory that still makes plenty of mistakes, shared by the seeing-inside tests."""
    from cnnlab.config import build_config
    from cnnlab.engine.train import fit

    out = tmp_path_factory.mktemp("lenet") / "run"
    cfg = build_config(None, {"model": "lenet5", "dataset": "digits", "resize": 28,
                              "limit_train": 300, "epochs": 1, "batch_size": 64, "out": str(out)})
    fit(cfg, log=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def letters_run(tmp_path_factory) -> Path:
    """mnist-net after one epoch on a tiny image folder ``letters`` (classes a and b, 28x28
    colour noise read as grey): a run whose titles name the folder, folder 'letters'."""
    from PIL import Image

    from cnnlab.config import build_config
    from cnnlab.engine.train import fit

    base = tmp_path_factory.mktemp("letters")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (base / "letters" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(
                    base / "letters" / split / c / f"{i}.png")
    out = base / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_CACHE", str(base / "cache"))
        cfg = build_config(None, {"model": "mnist-net", "dataset": "folder",
                                  "data_dir": str(base / "letters"), "channels": 1,
                                  "epochs": 1, "out": str(out)})
        fit(cfg, log=lambda _m: None)
    return out
