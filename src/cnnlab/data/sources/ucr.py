"""UCR/UEA time-series classification sets, as bundled inside the ``aeon`` package.

aeon ships a few data sets of the UCR (univariate) and UEA (multivariate) archives in its
package data folder as ``NAME/NAME_TRAIN.ts`` and ``NAME/NAME_TEST.ts`` (GunPoint,
ItalyPowerDemand, ArrowHead, OSULeaf, ACSF1, BasicMotions, ...). They are read from there with
aeon's own ``.ts`` reader; nothing is downloaded (aeon's ``load_classification`` fetches names
it does not bundle from the internet, so it is not used). aeon is the optional ``series``
extra: ``pip install 'cnnlab[series]'``.

``--dataset ucr:NAME`` names one (case-insensitively). A split is returned as float32
series ``(N, C, L)`` (C channels, or *dimensions*, of length L), int64 labels and the class
names: the label strings of both files, sorted (numerically when they are all numbers, so
class ``10`` comes after ``9``). The series are returned as stored; the per-series
z-normalisation is part of the run's preprocessing (:class:`cnnlab.data.preprocess.SeriesPreprocess`),
so that everything after training applies it too.

The folder is scanned by reading only each file's ``@`` header lines, without importing
``aeon.datasets`` (which takes seconds): listing the sets, matching a name and refusing
regression problems or series of unequal length cost milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError

PREFIX = "ucr:"
EXTRA = "series"
FEATURE = "--dataset ucr:NAME"


def data_folder() -> Path:
    """aeon's package data folder (``aeon/datasets/data``); a one-line error naming the
    ``series`` extra when aeon is not installed. ``import aeon`` itself is quick."""
    from cnnlab.extras import require_extra

    aeon = require_extra("aeon", EXTRA, FEATURE)
    return Path(aeon.__file__).parent / "datasets" / "data"


def aeon_version() -> str:
    from cnnlab.extras import require_extra

    return str(getattr(require_extra("aeon", EXTRA, FEATURE), "__version__", "?"))


@dataclass(frozen=True)
class Bundled:
    """One data set in aeon's folder: its two files and what their headers say."""

    name: str  # as the files spell it: GunPoint
    train: Path
    test: Path
    header: dict[str, str]  # the train file's @key value lines, keys lower-cased

    def _flag(self, key: str) -> bool:
        return self.header.get(key, "").split()[:1] == ["true"]

    @property
    def classification(self) -> bool:
        return self._flag("classlabel")

    @property
    def equal_length(self) -> bool:
        return self.header.get("equallength", "true").split()[:1] != ["false"]

    @property
    def shape(self) -> tuple[int, int] | None:
        """(channels, length) from the header, when it says both."""
        try:
            channels = 1 if self._flag("univariate") else int(self.header["dimensions"])
            return channels, int(self.header["serieslength"])
        except (KeyError, ValueError):
            return None

    @property
    def header_labels(self) -> list[str]:
        """The class labels as the header spells them (aeon lower-cases some)."""
        words = self.header.get("classlabel", "").split()
        return words[1:] if words[:1] == ["true"] else []


def read_header(path: Path) -> dict[str, str]:
    """The ``@key value`` lines before ``@data``: keys lower-cased, values as written (the
    flags ``true``/``false`` lower-cased)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("@"):
                continue
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            if key == "data":
                break
            first, _, rest = value.strip().partition(" ")
            if first.lower() in ("true", "false"):
                first = first.lower()
            out[key] = f"{first} {rest}".strip()
    return out


@lru_cache(maxsize=4)
def _scan(folder: Path) -> dict[str, Bundled]:
    found = {}
    for train in sorted(folder.glob("*/*_TRAIN.ts")):
        name = train.name[: -len("_TRAIN.ts")]
        test = train.with_name(f"{name}_TEST.ts")
        if test.is_file():
            found[name.lower()] = Bundled(name, train, test, read_header(train))
    return found


def bundled() -> dict[str, Bundled]:
    """Every data set with a train and a test file in aeon's folder, by lower-cased name
    (regression problems and unequal-length sets included: :func:`find` refuses them)."""
    return _scan(data_folder())


def classification_names() -> list[str]:
    """The bundled sets cnnlab can train on: classification problems of equal length."""
    return sorted((b.name for b in bundled().values() if b.classification and b.equal_length),
                  key=str.lower)


def find(name: str) -> Bundled:
    """The bundled data set ``name`` (``GunPoint``, any case); a one-line error for an unknown
    name, a regression problem, or series of unequal length."""
    sets = bundled()
    usable = ", ".join(classification_names())
    b = sets.get(name.lower())
    if b is None:
        raise CnnlabError(f"unknown UCR/UEA data set '{name}'; aeon {aeon_version()} bundles "
                          f"these classification sets: {usable} (use e.g. --dataset "
                          "ucr:GunPoint; other archive sets are not shipped with aeon)")
    if not b.classification:
        raise CnnlabError(f"ucr:{b.name} is a regression problem (its .ts file holds target "
                          f"values, not class labels); cnnlab trains classifiers: pick one of "
                          f"{usable}")
    if not b.equal_length:
        eq = sets.get(f"{b.name}_eq".lower())
        fix = (f"use ucr:{eq.name}, the equal-length version aeon also ships" if eq else
               f"pick a set of equal length: {usable}")
        raise CnnlabError(f"ucr:{b.name} has series of unequal length, which cnnlab does not "
                          f"pad or truncate; {fix}")
    return b


def _labels_in_order(labels: set[str], spelled: list[str]) -> list[str]:
    """Sorted class names: numerically when all are numbers, else as text; spelled as the
    file's header spells them where it differs only in case (aeon lower-cases labels)."""
    def key(s: str) -> tuple:
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s.lower())

    header = {s.lower(): s for s in spelled}
    return sorted((header.get(s.lower(), s) for s in labels), key=key)


def _read(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    from cnnlab.extras import require_extra

    datasets = require_extra("aeon.datasets", EXTRA, FEATURE)
    try:
        X, y = datasets.load_from_ts_file(str(path))
    except Exception as e:  # aeon's reader raises IOError, ValueError, ...; one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CnnlabError(f"cannot read {path} ({first}); reinstall aeon (pip install "
                          f"'cnnlab[{EXTRA}]')") from e
    if not isinstance(X, np.ndarray) or X.ndim != 3:
        raise CnnlabError(f"{path} holds series of unequal length; cnnlab needs equal lengths")
    if np.isnan(X).any():
        raise CnnlabError(f"ucr:{name} has missing values (NaN) in {path.name}, which cnnlab "
                          "does not fill in; pick another data set")
    return X, np.asarray(y).astype(str)


def decode_split(split: str, location: Path | None = None, *, name: str
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split of bundled data set ``name``: float32 (N, C, L) series, int64 labels and
    the class names (from both splits, so train and test agree). ``location`` is ignored:
    the data ships inside aeon."""
    b = find(name)
    X, y = _read(b.train if split == "train" else b.test, b.name)
    other = _read(b.test if split == "train" else b.train, b.name)[1]
    classes = _labels_in_order(set(y) | set(other), b.header_labels)
    index = {c.lower(): i for i, c in enumerate(classes)}
    labels = np.array([index[v.lower()] for v in y], dtype=np.int64)
    return np.ascontiguousarray(X, dtype=np.float32), labels, classes
