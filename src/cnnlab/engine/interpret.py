"""What a trained run gets wrong: its most confident mistakes, its largest losses and the
class pairs it confuses most, as fastai's ``ClassificationInterpretation`` shows them.

Computed in one streaming pass: per batch, the candidates are merged into a running top-k
(``torch.topk`` over k + batch entries) and the confusion matrix grows by counting, so
memory stays O(k + classes²) however large the split; no per-image output is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.data.loader import DeviceLoader
from cnnlab.device import autocast
from cnnlab.engine.evaluate import run_split, split_loader, tta_logits
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.run import LoadedRun

# per kept image: index, true class, predicted class, p(predicted), p(true), loss
_FIELDS = 6


@dataclass
class Mistake:
    """One image of the split, as the model saw it."""

    index: int
    true: int
    predicted: int
    probability: float  # of the predicted class
    true_probability: float
    loss: float


@dataclass
class Interpretation:
    """The result of :func:`interpret`. ``mistakes``: wrong predictions, most confident first;
    ``top_losses``: the largest per-image losses (right or wrong), largest first."""

    dataset: str
    split: str
    classes: tuple[str, ...]
    confusion: torch.Tensor  # (K, K) int64: rows true, columns predicted
    mistakes: list[Mistake] = field(default_factory=list)
    top_losses: list[Mistake] = field(default_factory=list)
    images: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # index -> uint8
    pair_examples: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # first few

    def image(self, m: Mistake) -> torch.Tensor:
        """The (C, H, W) uint8 image of a kept mistake or top loss, as the model saw it."""
        return self.images[m.index]

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(self.confusion.diag().sum()) / max(self.total, 1)

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(true class, predicted class, count) by class name, as fastai's ``most_confused``
        gives them, for every off-diagonal cell with at least ``min_count`` images, most
        frequent first (ties: by class order). :meth:`most_confused_indices` gives the
        class numbers (to index ``confusion`` or ``pair_examples``)."""
        return [(self.classes[i], self.classes[j], n)
                for i, j, n in self.most_confused_indices(min_count)]

    def most_confused_indices(self, min_count: int = 1) -> list[tuple[int, int, int]]:
        """:meth:`most_confused` with class numbers: (true, predicted, count)."""
        c = self.confusion.clone()
        c.fill_diagonal_(0)
        pairs = [(i, j, int(c[i, j])) for i in range(len(c)) for j in range(len(c))
                 if c[i, j] >= min_count]
        return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))

    def to_dict(self) -> dict:
        def rows(ms: list[Mistake]) -> list[dict]:
            return [{"index": m.index, "true": self.classes[m.true],
                     "predicted": self.classes[m.predicted], "probability": m.probability,
                     "true_probability": m.true_probability, "loss": m.loss} for m in ms]

        return {"dataset": self.dataset, "split": self.split, "accuracy": self.accuracy,
                "examples": self.total, "classes": list(self.classes),
                "confusion": self.confusion.tolist(), "most_confused": [
                    {"true": t, "predicted": p, "count": n} for t, p, n in self.most_confused()],
                "mistakes": rows(self.mistakes), "top_losses": rows(self.top_losses)}


class _TopK:
    """The k rows with the largest score seen so far; ``add`` merges a batch in."""

    def __init__(self, k: int, device: torch.device):
        self.k = k
        self.scores = torch.empty(0, device=device)
        self.rows = torch.empty(0, _FIELDS, dtype=torch.float32, device=device)

    def add(self, scores: torch.Tensor, rows: torch.Tensor) -> None:
        keep = scores > float("-inf")
        scores = torch.cat([self.scores, scores[keep]])
        rows = torch.cat([self.rows, rows[keep]])
        if len(scores) > self.k:
            # ties broken by the earlier image (rows are appended in index order)
            order = torch.argsort(-scores, stable=True)[: self.k]
            scores, rows = scores[order], rows[order]
        self.scores, self.rows = scores, rows

    def result(self) -> list[Mistake]:
        order = torch.argsort(-self.scores, stable=True)
        return [Mistake(int(r[0]), int(r[1]), int(r[2]), float(r[3]), float(r[4]), float(r[5]))
                for r in self.rows[order].cpu().tolist()]


@torch.no_grad()
def interpret_loader(model: nn.Module, loader: DeviceLoader, num_classes: int, top: int = 16,
                     precision: str = "fp32", tta: int = 0, mirror: bool = True,
                     per_pair: int = 0
                     ) -> tuple[torch.Tensor, list[Mistake], list[Mistake],
                                dict[tuple[int, int], list[int]]]:
    """One pass over ``loader`` (stored order): (confusion, mistakes, top losses, and the
    indices of the first ``per_pair`` images of each (true, predicted) confusion)."""
    if top < 1:
        raise CnnlabError(f"--top must be at least 1, got {top}")
    was_training = model.training
    model.eval()
    device = loader.device
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    wrong, lossy = _TopK(top, device), _TopK(top, device)
    pairs: dict[tuple[int, int], list[int]] = {}
    start = 0
    for x, y in loader.epoch(0):
        with autocast(device, precision):
            logits = tta_logits(model, x, tta, mirror).float()
        logp = logits.log_softmax(1)
        conf, pred = logp.max(1)
        p_true = logp.gather(1, y[:, None])[:, 0]
        index = torch.arange(start, start + len(y), device=device)
        start += len(y)
        rows = torch.stack([index.float(), y.float(), pred.float(), conf.exp(), p_true.exp(),
                            -p_true], 1)  # float32 holds indices exactly up to 2**24
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes ** 2)
        wrong.add(torch.where(pred != y, conf, torch.full_like(conf, float("-inf"))), rows)
        lossy.add(-p_true, rows)
        if per_pair:  # at most K*K*per_pair indices are ever kept
            for i, t, p in zip(*(v.tolist() for v in (index[pred != y], y[pred != y],
                                                      pred[pred != y])), strict=True):
                kept = pairs.setdefault((t, p), [])
                if len(kept) < per_pair:
                    kept.append(i)
    model.train(was_training)
    return (confusion.view(num_classes, num_classes).cpu(), wrong.result(), lossy.result(),
            pairs)


def interpret(run_dir: str | Path | LoadedRun, split: str = "test", top: int = 16,
              dataset: str | None = None, data_dir: str | None = None,
              batch_size: int = 1024, device: str = "auto") -> Interpretation:
    """Most confident mistakes, top losses and the confusion matrix of a trained run on a
    split, with the run's own preprocessing and test-time augmentation (as `cnnlab eval`)."""
    from cnnlab.run import as_run

    run = as_run(run_dir, device)  # a LoadedRun as it is in memory
    return interpret_run(run, split, top, dataset, data_dir, batch_size)


def interpret_run(run: LoadedRun, split: str = "test", top: int = 16, dataset: str | None = None,
                  data_dir: str | None = None, batch_size: int = 1024, per_pair: int = 0
                  ) -> Interpretation:
    """:func:`interpret` for an already loaded run (a :class:`~cnnlab.run.LoadedRun`);
    ``per_pair`` also keeps the first few images of each confused class pair."""
    name, data = run_split(run, dataset, data_dir, split)
    cfg = run.config
    confusion, mistakes, losses, pairs = interpret_loader(
        run.model, split_loader(run, data, batch_size), len(run.classes), top, cfg.precision,
        cfg.tta, cfg.flip, per_pair)
    kept = {m.index for m in mistakes + losses} | {i for v in pairs.values() for i in v}
    images = {i: run.preprocess.adapt(data.images[i:i + 1])[0] for i in sorted(kept)}
    return Interpretation(name, split, run.classes, confusion, mistakes, losses, images, pairs)
