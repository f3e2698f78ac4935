"""The data set registry: where each data set's files are found, and decoding them once.

``load_split(name, split)`` returns a :class:`Split`: the whole split as one uint8 tensor
(N, C, H, W), int64 labels and class names. Decoded splits are cached as safetensors files
keyed by the source files' size and modification time, so the second run skips decoding.

Files are looked for under, in order: ``--data-dir``, ``$CNNLAB_DATA``, then the user data
directory (where ``cnnlab download`` puts them). Under each root, a data set may sit in its
own folder (``mnist/``), in the layout torchvision users already have (``MNIST/raw/``),
or directly in the root.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import CnnlabError

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Split:
    """One split held in memory: images (N, C, H, W) uint8, labels (N,) int64, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a data set before reading any file."""

    name: str
    description: str
    shape: tuple[int, int, int] | None  # None: known only after reading (image folders)
    classes: tuple[str, ...] | None
    sizes: dict[str, int] | None
    mean: tuple[float, ...] | None  # None: computed from the train split
    std: tuple[float, ...] | None
    subdirs: tuple[str, ...] = ()  # candidate folders under a data root
    required: tuple[str, ...] = ()  # files that must all be there (any of .gz or raw)
    embedded: bool = False  # ships with an installed package: needs no files
    source: str = ""
    extra: dict = field(default_factory=dict)


IDX_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", "scikit-learn's bundled 8x8 handwritten digits (offline default)",
        (1, 8, 8), tuple(str(i) for i in range(10)), {"train": 1437, "test": 360},
        None, None, embedded=True, source="scikit-learn",
    ),
    "mnist": DatasetInfo(
        "mnist", "MNIST handwritten digits, 28x28 grey",
        (1, 28, 28), tuple(str(i) for i in range(10)), {"train": 60000, "test": 10000},
        (0.1307,), (0.3081,), subdirs=("mnist", "MNIST/raw", "MNIST", "."),
        required=IDX_FILES, source="idx",
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "Zalando Fashion-MNIST clothing, 28x28 grey",
        (1, 28, 28), FASHION_CLASSES, {"train": 60000, "test": 10000},
        (0.2860,), (0.3530,),
        subdirs=("fashion-mnist", "FashionMNIST/raw", "fashion_mnist", "FashionMNIST", "."),
        required=IDX_FILES, source="idx",
    ),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10 from the official python batches, 32x32 RGB",
        (3, 32, 32), CIFAR_CLASSES, {"train": 50000, "test": 10000},
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        subdirs=("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "CIFAR10/cifar-10-batches-py"),
        required=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                  "data_batch_5", "test_batch"),
        source="cifar",
    ),
    "cifar10-jpeg": DatasetInfo(
        "cifar10-jpeg", "CIFAR-10 as a JPEG image-folder tree or its zip (lossy, quality ~75)",
        (3, 32, 32), CIFAR_CLASSES, {"train": 50000, "test": 10000},
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        subdirs=("cifar10-jpeg/cifar10-jpeg.zip", "cifar10-jpeg.zip", "cifar10-jpeg"),
        source="folder",
    ),
    "folder": DatasetInfo(
        "folder", "any image tree ROOT/{train,test}/<class>/*.png|jpg (or its zip): --data-dir ROOT",
        None, None, None, None, None, source="folder",
    ),
}


def get_info(name: str) -> DatasetInfo:
    """Registry entry for ``name``, or an error that lists the known names."""
    if name not in DATASETS:
        raise CnnlabError(
            f"unknown data set '{name}'; choose one of: {', '.join(DATASETS)} (see `cnnlab datasets`)"
        )
    return DATASETS[name]


def default_data_root() -> Path:
    """The user data directory where ``cnnlab download`` puts files."""
    import platformdirs

    return Path(platformdirs.user_data_dir("cnnlab")) / "data"


def cache_dir() -> Path:
    """Where decoded splits are cached (``$CNNLAB_CACHE`` overrides)."""
    env = os.environ.get("CNNLAB_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("cnnlab")) / "decoded"


def search_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """Data roots in lookup order: --data-dir, $CNNLAB_DATA, the user data directory."""
    roots = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("CNNLAB_DATA"):
        roots.append(Path(os.environ["CNNLAB_DATA"]).expanduser())
    roots.append(default_data_root())
    return roots


def _has_file(directory: Path, name: str) -> bool:
    return (directory / name).is_file() or (directory / f"{name}.gz").is_file()


def _file(directory: Path, name: str) -> Path:
    gz = directory / f"{name}.gz"
    return gz if gz.is_file() else directory / name


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """Return the folder (or zip) holding data set ``name``, or None when it is not found."""
    info = get_info(name)
    if info.embedded:
        return None
    if name == "folder":
        if data_dir is None:
            raise CnnlabError("the 'folder' data set needs --data-dir ROOT (a folder or a .zip)")
        root = Path(data_dir).expanduser()
        return root if root.exists() else None
    for root in search_roots(data_dir):
        for sub in info.subdirs:
            cand = (root / sub) if sub != "." else root
            if info.source == "folder":
                if cand.is_file() or (cand / "train").is_dir():
                    return cand
            elif cand.is_dir() and all(_has_file(cand, f) for f in info.required):
                return cand
    return None


def not_found_error(name: str, data_dir: str | os.PathLike | None) -> CnnlabError:
    info = get_info(name)
    if name == "folder":
        return CnnlabError(f"image folder {data_dir} does not exist; check --data-dir")
    searched = ", ".join(str(r) for r in search_roots(data_dir))
    how = (f"run `cnnlab download {name}`, or " if name in ("mnist", "fashion-mnist", "cifar10")
           else "")
    where = info.subdirs[0] if info.subdirs else ""
    where += "" if not where or where.endswith(".zip") else "/"  # a zip is a file, not a folder
    return CnnlabError(
        f"data set '{name}' not found under {searched}; {how}put its files in "
        f"<root>/{where} and pass --data-dir <root> or set CNNLAB_DATA"
    )


def _source_key(name: str, split: str, location: Path | None) -> str:
    """Cache key from the source files' names, sizes and modification times."""
    parts = [name, split, "v1", str(location.resolve()) if location else ""]
    if location is not None:
        required = get_info(name).required
        if required:  # only the data set's own files, not whatever else shares the folder
            files = [_file(location, f) for f in required]
        elif location.is_file():
            files = [location]
        else:
            files = sorted(p for p in location.rglob("*") if p.is_file())
        for p in files:
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _decode_digits(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = d.target.astype(np.int64)
    order = np.random.RandomState(0).permutation(len(labels))  # fixed split, same for everyone
    n_test = DATASETS["digits"].sizes["test"]  # type: ignore[index]
    idx = order[n_test:] if split == "train" else order[:n_test]
    return images[idx], labels[idx], [str(i) for i in range(10)]


def _decode(name: str, split: str, location: Path | None) -> tuple[np.ndarray, np.ndarray, list]:
    from cnnlab.data import cifar, folder, idx

    info = get_info(name)
    if info.source == "scikit-learn":
        return _decode_digits(split)
    assert location is not None
    if info.source == "idx":
        prefix = "train" if split == "train" else "t10k"
        images, labels = idx.read_idx_pair(
            _file(location, f"{prefix}-images-idx3-ubyte"),
            _file(location, f"{prefix}-labels-idx1-ubyte"),
        )
        return images[:, None], labels, list(info.classes or ())
    if info.source == "cifar":
        images, labels = cifar.read_cifar_split(location, train=split == "train")
        return images, labels, list(info.classes or ())
    # the test split's labels must index the train split's classes
    classes = folder.class_names(location, "train") if split != "train" else None
    return folder.read_image_folder(location, split, classes or None)


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> Split:
    """Load one split of a data set as uint8 tensors, decoding and caching on first use."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from cnnlab.fileio import atomic_path

    if split not in SPLITS:
        raise CnnlabError(f"unknown split '{split}'; choose train or test")
    info = get_info(name)
    location = None
    if not info.embedded:
        location = locate(name, data_dir)
        if location is None:
            raise not_found_error(name, data_dir)
    cache = cache_dir() / f"{name}-{split}-{_source_key(name, split, location)}.safetensors"
    if use_cache and cache.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(cache), "pt") as f:
                meta = f.metadata() or {}
            t = load_file(str(cache))
            return Split(t["images"], t["labels"], tuple(json.loads(meta["classes"])))
        except (SafetensorError, KeyError, OSError, ValueError):
            log(f"ignoring unreadable cache file {cache}")
    log(f"decoding {name} {split} from {location or info.source}")
    images, labels, classes = _decode(name, split, location)
    if info.sizes and not info.embedded and len(labels) != info.sizes[split]:
        log(f"note: {location} holds {len(labels)} {split} examples; the published {name} "
            f"has {info.sizes[split]}")
    result = Split(torch.from_numpy(np.ascontiguousarray(images)),
                   torch.from_numpy(np.ascontiguousarray(labels)), tuple(classes))
    if use_cache:
        try:
            with atomic_path(cache) as tmp:
                save_file({"images": result.images, "labels": result.labels}, str(tmp),
                          metadata={"classes": json.dumps(list(classes))})
        except OSError as e:  # a read-only cache must not stop training
            log(f"could not write cache {cache}: {e}")
    return result


def normalization(name: str, train: Split) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units: the published values, else from the train split."""
    info = get_info(name)
    if info.mean is not None and info.std is not None and len(info.mean) == train.shape[0]:
        return info.mean, info.std
    total = torch.zeros(train.shape[0], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in train.images.split(4096):  # chunks: no float copy of the whole split
        x = chunk.double() / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    n = train.images.numel() / train.shape[0]
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(1e-6).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)
