"""scikit-learn's bundled 8x8 digits, split once into fixed train and test parts.

The data ships inside scikit-learn, so it needs no files and works offline: it is the
default data set. scikit-learn offers no split, so a permutation with a fixed seed makes
one that is the same for everyone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_TEST = 360  # examples in the test split; the other 1437 of the 1797 train
CLASSES = tuple(str(i) for i in range(10))


def decode_split(split: str, location: Path | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return one split as (N, 1, 8, 8) uint8 images scaled to 0..255, labels and class names.

    ``location`` is ignored: the data is embedded in scikit-learn.
    """
    from sklearn.datasets import load_digits  # slow to import: only when decoding

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = d.target.astype(np.int64)
    order = np.random.RandomState(0).permutation(len(labels))  # fixed split, same for everyone
    idx = order[N_TEST:] if split == "train" else order[:N_TEST]
    return images[idx], labels[idx], list(CLASSES)
