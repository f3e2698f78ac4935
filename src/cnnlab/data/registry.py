"""The data set registry: one entry per data set says everything known before reading a file.

An entry names its decoder (which reads the files into arrays), the files it can be
downloaded from, how its files are recognised under a data root, and the published shape,
classes, sizes and normalisation. Locating, caching, downloading and the ``cnnlab datasets``
listing all read these fields, so adding a data set means adding one entry here (and a
decoder in :mod:`cnnlab.data.sources` when the format is new); nothing else names it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from cnnlab.data.remote import CIFAR_FILES, FASHION_FILES, MNIST_FILES, RemoteFile
from cnnlab.data.sources import cifar, digits, folder, idx, ucr
from cnnlab.errors import CnnlabError, did_you_mean

Decoder = Callable[[str, "Path | None"], tuple[np.ndarray, np.ndarray, list[str]]]
"""``decoder(split, location)`` -> (N, C, H, W) uint8 images (or, for a series data set,
(N, C, L) float32 series), (N,) int64 labels, class names. ``location`` is what
:func:`cnnlab.data.locate.locate` found (None for embedded data)."""

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a data set before reading any file."""

    name: str
    description: str
    shape: tuple[int, ...] | None  # (C, H, W), or (C, L) for series; None: known after reading
    classes: tuple[str, ...] | None
    sizes: dict[str, int] | None
    mean: tuple[float, ...] | None  # None: computed from the train split
    std: tuple[float, ...] | None
    decoder: Decoder
    remote_files: tuple[RemoteFile, ...] = ()  # empty: cannot be downloaded
    subdirs: tuple[str, ...] = ()  # candidate folders (or zips) under a data root
    required: tuple[str, ...] = ()  # files that must all be there (any of .gz or raw)
    image_tree: bool = False  # recognised as ROOT/train/<class>/... or its zip, not by files
    needs_data_dir: bool = False  # no default place: --data-dir names the data itself
    embedded: bool = False  # ships with an installed package: needs no files
    source: str = ""  # where embedded data comes from, for people ("scikit-learn")
    files: tuple[Path, ...] = ()  # embedded data's own files, when it has some (cache key)
    series: bool = False  # 1-D series (N, C, L) float32, not images



DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", "scikit-learn's bundled 8x8 handwritten digits (offline default)",
        (1, 8, 8), digits.CLASSES, {"train": 1797 - digits.N_TEST, "test": digits.N_TEST},
        None, None, digits.decode_split, embedded=True, source="scikit-learn",
    ),
    "mnist": DatasetInfo(
        "mnist", "MNIST handwritten digits, 28x28 grey",
        (1, 28, 28), MNIST_CLASSES, {"train": 60000, "test": 10000},
        (0.1307,), (0.3081,), partial(idx.decode_split, classes=MNIST_CLASSES),
        remote_files=MNIST_FILES, subdirs=("mnist", "MNIST/raw", "MNIST", "."),
        required=idx.FILES,
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "Zalando Fashion-MNIST clothing, 28x28 grey",
        (1, 28, 28), FASHION_CLASSES, {"train": 60000, "test": 10000},
        (0.2860,), (0.3530,), partial(idx.decode_split, classes=FASHION_CLASSES),
        remote_files=FASHION_FILES,
        subdirs=("fashion-mnist", "FashionMNIST/raw", "fashion_mnist", "FashionMNIST", "."),
        required=idx.FILES,
    ),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10 from the official python batches, 32x32 RGB",
        (3, 32, 32), CIFAR_CLASSES, {"train": 50000, "test": 10000},
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        partial(cifar.decode_split, classes=CIFAR_CLASSES), remote_files=CIFAR_FILES,
        subdirs=("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "CIFAR10/cifar-10-batches-py"),
        required=(*cifar.TRAIN_BATCHES, *cifar.TEST_BATCHES),
    ),
    "cifar10-jpeg": DatasetInfo(
        "cifar10-jpeg", "CIFAR-10 as a JPEG image-folder tree or its zip (lossy, quality ~75)",
        (3, 32, 32), CIFAR_CLASSES, {"train": 50000, "test": 10000},
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), folder.decode_split,
        subdirs=("cifar10-jpeg/cifar10-jpeg.zip", "cifar10-jpeg.zip", "cifar10-jpeg"),
        image_tree=True,
    ),
    "folder": DatasetInfo(
        "folder", "any image tree ROOT/{train,test}/<class>/*.png|jpg (or its zip): --data-dir ROOT",
        None, None, None, None, None, folder.decode_split, image_tree=True, needs_data_dir=True,
    ),
}


def ucr_info(name: str) -> DatasetInfo:
    """The entry for ``ucr:NAME``, made on the fly from aeon's bundled files (any case of
    NAME; the entry's name is spelled as the files spell it)."""
    b = ucr.find(name)
    return DatasetInfo(
        f"{ucr.PREFIX}{b.name}", f"UCR/UEA time series {b.name}, bundled with aeon",
        b.shape, None, None, None, None, partial(ucr.decode_split, name=b.name),
        embedded=True, source="aeon", files=(b.train, b.test), series=True,
    )


def get_info(name: str) -> DatasetInfo:
    """Registry entry for ``name``, or an error that lists the known names."""
    if name.lower().startswith(ucr.PREFIX):
        return ucr_info(name[len(ucr.PREFIX):])
    if name not in DATASETS:
        raise CnnlabError(
            f"unknown data set '{name}'; {did_you_mean(name, list(DATASETS))}choose one of: "
            f"{', '.join(DATASETS)}, "
            f"{ucr.PREFIX}NAME (see `cnnlab datasets`)"
        )
    return DATASETS[name]


def dataset_title(name: str, data_dir: str | Path | None = None) -> str:
    """A data set as titles name it: its name, but an image folder given by ``--data-dir``
    (``folder``, whose name says nothing) by the folder's own name, ``folder 'letters'``
    (a zip: its name without ``.zip``). ``name`` itself stays what the config holds."""
    info = DATASETS.get(name)
    if info is None or not info.needs_data_dir or not data_dir:
        return name
    path = Path(os.path.normpath(os.fspath(data_dir)))
    shown = path.stem if path.suffix.lower() == ".zip" else path.name
    return f"{name} '{shown}'" if shown else name


def dataset_names() -> list[str]:
    """Every registered data set, in the order ``cnnlab datasets`` lists them."""
    return list(DATASETS)
