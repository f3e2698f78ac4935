"""Evaluation: accuracy and loss over a loader, and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.data.loader import DeviceLoader
from cnnlab.device import autocast
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.data import Split
    from cnnlab.run import LoadedRun


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    confusion: torch.Tensor  # (K, K) int64, rows = true class, columns = predicted

    def per_class_accuracy(self) -> list[float | None]:
        """Each class's accuracy; None for a class with no examples in the split (not 0)."""
        totals = self.confusion.sum(1)
        acc = (self.confusion.diag().double() / totals.clamp_min(1)).tolist()
        return [a if n else None for a, n in zip(acc, totals.tolist(), strict=True)]


def tta_logits(model: nn.Module, x: torch.Tensor, level: int, mirror: bool = True
               ) -> torch.Tensor:
    """Logits with test-time augmentation, as airbench: level 0 plain; 1 the mean with the
    mirror image; 2 also the views shifted one pixel up-left and down-right (reflect padded),
    weighted 1/2, 1/4, 1/4. ``mirror=False`` (a model trained without flips: digits are not
    symmetric) leaves the mirror views out, so level 2 averages the translations only."""
    if level == 0:
        return model(x)

    def view(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * model(v) + 0.5 * model(v.flip(3)) if mirror else model(v)

    if level == 1:
        return view(x)
    h, w = x.shape[2:]
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, :h, :w], padded[:, :, 2:, 2:]]
    return 0.5 * view(x) + 0.25 * sum(view(v) for v in shifted)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, num_classes: int,
             precision: str = "fp32", tta: int = 0, mirror: bool = True) -> EvalResult:
    """One pass over ``loader`` in eval mode; a single sync at the end."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=loader.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    for x, y in loader.epoch(0):
        with autocast(loader.device, precision):
            out = tta_logits(model, x, tta, mirror)
        loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum").double()
        confusion += torch.bincount(y * num_classes + out.argmax(1),
                                    minlength=num_classes * num_classes)
    model.train(was_training)
    loader.dist.sum_(confusion)  # under DDP each rank saw its own shard: add them up
    loader.dist.sum_(loss_sum)
    confusion = confusion.view(num_classes, num_classes).cpu()
    n = max(int(confusion.sum()), 1)
    return EvalResult(float(confusion.diag().sum()) / n, float(loss_sum) / n, confusion)


def load_for_run(run: LoadedRun, name: str, split: str, data_dir: str | None = None) -> Split:
    """A split of data set ``name`` for a command on ``run``: from ``data_dir`` when given;
    else where training found its data (the run's ``data_dir``, a root that often holds the
    other data sets too), falling back to the usual lookup for another data set."""
    from cnnlab.data import get_info, load_split

    if get_info(name).series != run.is_series:  # before decoding: a model takes one kind
        kinds = ("images", "1-D series") if run.is_series else ("1-D series", "images")
        raise CnnlabError(f"data set '{name}' holds {kinds[0]} and {run.run_dir} was trained "
                          f"on {kinds[1]} ({run.config.dataset_title()}); give a data set of "
                          f"{kinds[1]}")
    # an image folder is decoded as training decoded it (resized, bad files skipped or not)
    same = run.config.folder_options() if name == run.config.dataset else {}
    if data_dir is not None or run.config.data_dir is None:
        return load_split(name, split, data_dir, **same)
    if name == run.config.dataset:
        return load_split(name, split, run.config.data_dir, **same)
    try:
        return load_split(name, split, run.config.data_dir)
    except CnnlabError:
        return load_split(name, split, None)


def run_split(run: LoadedRun, dataset: str | None = None, data_dir: str | None = None,
              split: str = "test") -> tuple[str, Split]:
    """The split a command on a trained run looks at: the run's own data set (found where
    training found it) or another with as many classes. Returns (data set name, split)."""
    if split not in ("train", "test"):
        raise CnnlabError(f"unknown split '{split}'; choose train or test")
    from cnnlab.data import get_info

    name = dataset or run.config.dataset
    _check_classes(name, get_info(name).classes, run.classes)  # known ones: before decoding
    data = load_for_run(run, name, split, data_dir)
    _check_classes(name, data.classes, run.classes)
    return name, data


def _check_classes(name: str, classes: tuple[str, ...] | None, trained: tuple[str, ...]) -> None:
    """Refuse a data set whose classes differ from the run's (None: not known yet)."""
    if classes and [c.lower() for c in classes] != [c.lower() for c in trained]:
        raise CnnlabError(f"data set '{name}' has other classes ({_some(classes)}) than the "
                          f"model was trained on ({_some(trained)}); use a data set with the "
                          "same class names, in the same order")


def _some(names: tuple[str, ...]) -> str:
    """The first four names, and '...' only when there are more."""
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def split_loader(run: LoadedRun, data: Split, batch_size: int = 1024) -> DeviceLoader:
    """Batches of ``data`` in stored order, adapted and normalised as the run was trained."""
    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {batch_size}")
    return DeviceLoader(run.preprocess.adapt(data.images), data.labels, batch_size, run.device,
                        run.preprocess)


def evaluate_run(run_dir: str | Path | LoadedRun, dataset: str | None = None, data_dir: str | None = None,
                 split: str = "test", batch_size: int = 1024, device: str = "auto",
                 ) -> tuple[EvalResult, tuple[str, ...]]:
    """Evaluate a run directory's final weights on a split of its data set (or of another
    with as many classes); writes eval-SPLIT.json into the run directory.

    The images go through the run's own :class:`~cnnlab.data.preprocess.Preprocess`
    (statistics from the training split, as in training), so a data set of another size or
    channel count is adapted to the model's input, and whole splits are always read.
    """
    from cnnlab.run import as_run

    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {batch_size}")
    run = as_run(run_dir, device)  # a LoadedRun as it is in memory
    cfg = run.config
    name, data = run_split(run, dataset, data_dir, split)
    res = evaluate(run.model, split_loader(run, data, batch_size), len(run.classes),
                   cfg.precision, cfg.tta, cfg.flip)
    run.run_dir.write_eval(split if name == cfg.dataset else f"{name}-{split}", {
        "dataset": name, "split": split, "accuracy": res.accuracy,
        "loss": res.loss, "classes": list(run.classes),
        "per_class_accuracy": res.per_class_accuracy(), "confusion": res.confusion.tolist(),
    })
    return res, run.classes
