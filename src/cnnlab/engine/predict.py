"""Predicting on a person's own image files with a trained run.

Files are read as :mod:`cnnlab.data.images` reads them (any size and mode, alpha on white
paper, dark-on-light drawings inverted for a light-on-dark model when ``invert="auto"``),
then go through the run's own :class:`~cnnlab.data.preprocess.Preprocess`, exactly as in
training. Files are decoded and classified in batches and results are yielded as they come, so
a folder of thousands of files streams in bounded memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.images import IMAGE_SUFFIXES, check_frame, looks_blank, model_view, read_image
from cnnlab.errors import CnnlabError
from cnnlab.run import LoadedRun


@dataclass(frozen=True)
class Prediction:
    file: str
    classes: list[str]  # the top k, most probable first
    probabilities: list[float]
    inverted: bool
    error: str | None = None  # why the file could not be read (then no classes)
    blank: bool = False  # the input is almost one colour, or one dot: the answer means little

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "inverted": self.inverted, "blank": self.blank,
                "top": [{"class": c, "probability": round(p, 6)}
                        for c, p in zip(self.classes, self.probabilities, strict=True)]}


SERIES_SUFFIXES = {".npy", ".csv", ".tsv", ".txt"}


def collect_files(inputs: Sequence[str | Path], suffixes: set[str] = IMAGE_SUFFIXES
                  ) -> list[Path]:
    """Files as given, and the files with ``suffixes`` (images by default) inside any folder
    (recursively, sorted)."""
    files: list[Path] = []
    what = "image" if suffixes is IMAGE_SUFFIXES else "series"
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in suffixes)
            if not found:
                raise CnnlabError(f"folder {p} has no {what} files "
                                  f"({', '.join(sorted(suffixes))})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise CnnlabError(f"{p} does not exist; give {what} files or folders")
    if not files:
        raise CnnlabError(f"no {what} files given")
    seen: set[Path] = set()  # a file given twice (or also in a folder given) is read once
    unique = []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def reads_digits(run: LoadedRun) -> bool:
    """Whether the run reads MNIST-like digits (grey, light on dark, classes 0..9): what
    framing like MNIST (``frame``) is made for; the drawing page offers it, ticked."""
    pre = run.preprocess
    return (not pre.is_series and pre.channels == 1 and pre.light_on_dark
            and list(run.classes) == [str(i) for i in range(10)])


def predict_files(run: LoadedRun, files: Sequence[str | Path], top_k: int | None = 3,
                  invert: str = "auto", batch_size: int = 256,
                  progress: Callable[[int], None] | None = None,
                  frame: bool = False) -> Iterator[Prediction]:
    """Top-k classes and probabilities for each file, in order, batch by batch (``top_k``
    None: every class). A file that cannot be read gets a :class:`Prediction` with ``error``
    set, and the others go on. ``frame``: frame each digit as MNIST's were
    (:func:`cnnlab.data.images.frame_digit`)."""
    top_k = len(run.classes) if top_k is None else top_k
    if top_k < 1:
        raise CnnlabError(f"top_k (--top-k) must be at least 1, got {top_k}")
    if invert not in ("auto", "yes", "no"):
        raise CnnlabError(f"invert must be auto, yes or no, got '{invert}'")
    if batch_size < 1:
        raise CnnlabError(f"batch_size (--batch-size) must be at least 1, got {batch_size}")
    if run.is_series:
        if frame:
            raise CnnlabError("--frame frames pictures of digits; this is a time-series run")
        yield from _predict_series(run, files, top_k, progress)
        return
    if frame:  # once, not as an error row per file
        check_frame(run.preprocess)
    k = min(top_k, len(run.classes))
    for start in range(0, len(files), batch_size):
        chunk = list(files[start:start + batch_size])
        views: dict[int, tuple[torch.Tensor, bool]] = {}
        errors: dict[int, str] = {}
        blanks: dict[int, bool] = {}  # one colour, or one dot: the answer means little
        for j, f in enumerate(chunk):
            try:
                picture = read_image(f)
                views[j] = model_view(picture, run.preprocess, invert, frame)
                blanks[j] = looks_blank(views[j][0], picture if frame else None)
            except CnnlabError as e:
                errors[j] = str(e)
        top: dict[int, tuple[list[float], list[int]]] = {}
        if views:
            probs = run.logits(torch.stack([v for v, _ in views.values()])).float().softmax(1)
            p, idx = probs.topk(k, dim=1)
            top = dict(zip(views, zip(p.tolist(), idx.tolist(), strict=True), strict=True))
        for j, f in enumerate(chunk):
            if j in errors:
                yield Prediction(str(f), [], [], False, errors[j])
            else:
                pi, ii = top[j]
                view, flipped = views[j]
                yield Prediction(str(f), [run.classes[i] for i in ii], pi, flipped,
                                 blank=blanks[j])
        if progress is not None:
            progress(len(chunk))


def read_series(path: str | Path, channels: int) -> torch.Tensor:
    """A file of series -> float32 (N, C, L): ``.npy`` (read without pickle), or text with one
    series per row (``.csv``: commas; ``.tsv``/``.txt``: tabs or spaces). 1-D is one series;
    2-D is one series per row for a one-channel run, or one (C, L) series otherwise."""
    import warnings

    import numpy as np

    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with warnings.catch_warnings():  # an empty file: said below, not as a warning
                warnings.simplefilter("ignore", UserWarning)
                arr = np.loadtxt(path, delimiter="," if path.suffix.lower() == ".csv" else None,
                                 dtype=np.float64, ndmin=1)
    except (OSError, ValueError, EOFError) as e:
        raise CnnlabError(f"cannot read {path} as series ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0]}); give .npy, or numbers in "
                          "rows separated by commas (.csv) or spaces (.txt)") from None
    if arr.size == 0:
        raise CnnlabError(f"{path} holds no numbers; give one series per row")
    if arr.dtype.kind not in "fiu" or arr.ndim > 3:
        raise CnnlabError(f"{path} holds {arr.dtype} of shape {arr.shape}; give numbers as "
                          "(L,), (N, L) or (N, C, L)")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # the answer would be NaN
        bad = int((~np.isfinite(arr)).sum())
        raise CnnlabError(f"{path} holds {bad} missing (NaN) or infinite value(s); fill or "
                          "drop them first (the network cannot classify a series with gaps)")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if x.dim() == 1:
        return x[None, None]
    if x.dim() == 2:
        return x[:, None] if channels == 1 else x[None]
    return x


def _predict_series(run: LoadedRun, files: Sequence[str | Path], top_k: int,
                    progress: Callable[[int], None] | None) -> Iterator[Prediction]:
    """Each series in each file, classified: ``FILE#i`` for the i-th series of a file."""
    k = min(top_k, len(run.classes))
    for f in files:
        try:
            if Path(f).suffix.lower() in IMAGE_SUFFIXES:
                raise CnnlabError(f"{f} is an image, and {run.run_dir} is a time-series run "
                                  f"({run.config.dataset}); give series in .npy, .csv or .txt "
                                  "files, one per row")
            series = read_series(f, run.preprocess.channels)
            run.preprocess.check(series)
        except CnnlabError as e:
            yield Prediction(str(f), [], [], False, str(e))
        else:
            p, idx = run.logits(series).float().softmax(1).topk(k, dim=1)
            for i, (pi, ii) in enumerate(zip(p.tolist(), idx.tolist(), strict=True)):
                name = str(f) if len(series) == 1 else f"{f}#{i}"
                yield Prediction(name, [run.classes[j] for j in ii], pi, False)
        if progress is not None:
            progress(1)


def predict(run_dir: str | Path | LoadedRun, inputs: str | Path | Iterable[str | Path],
            top_k: int | None = 3, invert: str = "auto", device: str = "auto",
            frame: bool = False) -> list[Prediction]:
    """Predict on files and folders with a run (its directory, or what ``load_run``
    returned), the Python form of `cnnlab predict`; ``inputs`` is one path or any iterable
    of them (a list, ``Path("imgs").glob("*.png")``)."""
    from cnnlab.run import as_run

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    given = type(inputs).__name__
    if isinstance(inputs, Iterable) and not hasattr(inputs, "shape"):  # a generator, a glob
        inputs = list(inputs)
    if not isinstance(inputs, list) or not all(isinstance(i, (str, os.PathLike)) for i in inputs):
        raise CnnlabError(f"predict takes file or folder paths, got {given}; for images in "
                          "memory use cnnlab.load_run(RUN).probabilities(x)")
    run = as_run(run_dir, device)  # a LoadedRun as it is in memory
    suffixes = SERIES_SUFFIXES if run.is_series else IMAGE_SUFFIXES
    return list(predict_files(run, collect_files(inputs, suffixes), top_k, invert, frame=frame))

