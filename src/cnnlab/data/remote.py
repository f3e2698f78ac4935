"""Where a data set's files can be fetched from: names, upstream md5 sums and mirrors.

Only descriptions live here; the registry attaches them to its entries (``remote_files``)
and :mod:`cnnlab.data.download` does the fetching. A data set with no remote files cannot
be downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name, upstream md5 and the mirrors that serve it."""

    name: str
    md5: str
    mirrors: tuple[str, ...]  # base URLs; the file name is appended


MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", MNIST_MIRRORS),
    RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", MNIST_MIRRORS),
    RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", MNIST_MIRRORS),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", MNIST_MIRRORS),
)
FASHION_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", FASHION_MIRRORS),
    RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", FASHION_MIRRORS),
    RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", FASHION_MIRRORS),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", FASHION_MIRRORS),
)
CIFAR_FILES = (
    RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", CIFAR_MIRRORS),
)
