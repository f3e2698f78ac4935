"""Predicting on a person's own image files with a trained run.

Files are read as :mod:`cnnlab.data.images` reads them (any size and mode, alpha on white
paper, dark-on-light drawings inverted for a light-on-dark model when ``invert="auto"``),
then go through the run's own :class:`~cnnlab.data.preprocess.Preprocess`, exactly as in
training. Files are decoded and classified in batches and results are yielded as they come, so
a folder of thousands of files streams in bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnlab.data.images import IMAGE_SUFFIXES, load_images
from cnnlab.errors import CnnlabError
from cnnlab.run import LoadedRun


@dataclass(frozen=True)
class Prediction:
    file: str
    classes: list[str]  # the top k, most probable first
    probabilities: list[float]
    inverted: bool

    def to_dict(self) -> dict:
        return {"file": self.file, "inverted": self.inverted,
                "top": [{"class": c, "probability": round(p, 6)}
                        for c, p in zip(self.classes, self.probabilities, strict=True)]}


def collect_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the image files inside any folder (recursively, sorted)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CnnlabError(f"folder {p} has no image files "
                                  f"({', '.join(sorted(IMAGE_SUFFIXES))})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise CnnlabError(f"{p} does not exist; give image files or folders")
    if not files:
        raise CnnlabError("no image files given")
    return files


def predict_files(run: LoadedRun, files: Sequence[str | Path], top_k: int = 3,
                  invert: str = "auto", batch_size: int = 256,
                  progress: Callable[[int], None] | None = None) -> Iterator[Prediction]:
    """Top-k classes and probabilities for each file, in order, batch by batch."""
    if top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {batch_size}")
    k = min(top_k, len(run.classes))
    for start in range(0, len(files), batch_size):
        chunk = list(files[start:start + batch_size])
        images, labels = load_images(chunk, run.preprocess, invert)
        probs = run.logits(images).float().softmax(1)
        p, idx = probs.topk(k, dim=1)
        for f, label, pi, ii in zip(chunk, labels, p.tolist(), idx.tolist(), strict=True):
            yield Prediction(str(f), [run.classes[i] for i in ii], pi,
                             label.endswith("(inverted)"))
        if progress is not None:
            progress(len(chunk))


def predict(run_dir: str | Path, inputs: Sequence[str | Path], top_k: int = 3,
            invert: str = "auto", device: str = "auto") -> list[Prediction]:
    """Load a run and predict on files and folders (the Python form of `cnnlab predict`)."""
    from cnnlab.run import load_run

    run = load_run(run_dir, device)
    return list(predict_files(run, collect_files(inputs), top_k, invert))

