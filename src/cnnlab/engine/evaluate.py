"""Evaluation: accuracy and loss over a loader, and the confusion matrix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.data.loader import DeviceLoader
from cnnlab.device import autocast
from cnnlab.errors import CnnlabError


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    confusion: torch.Tensor  # (K, K) int64, rows = true class, columns = predicted

    def per_class_accuracy(self) -> list[float]:
        totals = self.confusion.sum(1).clamp_min(1)
        return (self.confusion.diag().double() / totals).tolist()


def tta_logits(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """Logits with test-time augmentation: 0 plain, 1 mean with the mirror image,
    2 also the views shifted one pixel up-left and down-right (reflect padded), as airbench."""
    if level == 0:
        return model(x)
    mirrored = 0.5 * model(x) + 0.5 * model(x.flip(3))
    if level == 1:
        return mirrored
    h, w = x.shape[2:]
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, :h, :w], padded[:, :, 2:, 2:]]
    return 0.5 * mirrored + 0.25 * sum(0.5 * model(v) + 0.5 * model(v.flip(3)) for v in shifted)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, num_classes: int,
             precision: str = "fp32", tta: int = 0) -> EvalResult:
    """One pass over ``loader`` in eval mode; a single sync at the end."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=loader.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    for x, y in loader.epoch(0):
        with autocast(loader.device, precision):
            out = tta_logits(model, x, tta)
        loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum").double()
        confusion += torch.bincount(y * num_classes + out.argmax(1),
                                    minlength=num_classes * num_classes)
    model.train(was_training)
    confusion = confusion.view(num_classes, num_classes).cpu()
    n = max(int(confusion.sum()), 1)
    return EvalResult(float(confusion.diag().sum()) / n, float(loss_sum) / n, confusion)


def evaluate_run(run_dir: Path, dataset: str | None = None, data_dir: str | None = None,
                 split: str = "test", batch_size: int = 1024, adapt: dict | None = None,
                 ) -> tuple[EvalResult, tuple[str, ...]]:
    """Evaluate a run directory's final weights on a split; also writes eval-SPLIT.json."""
    from cnnlab.config import build_config, load_run_config
    from cnnlab.data.load import normalization
    from cnnlab.data.prepare import prepare_split
    from cnnlab.device import resolve_device
    from cnnlab.engine.checkpoint import load_weights
    from cnnlab.fileio import write_json
    from cnnlab.models import create_model

    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {batch_size}")
    cfg = build_config(None, dict(adapt or {}), base=load_run_config(run_dir))
    cfg.limit_train = cfg.limit_test = None  # evaluation reads whole splits
    device = resolve_device(cfg.device)
    meta = json.loads((run_dir / "classes.json").read_text())
    classes = tuple(meta["classes"])
    data = prepare_split(cfg, split, lambda _m: None, dataset, data_dir)
    if len(data.classes) != len(classes):
        raise CnnlabError(f"data set has {len(data.classes)} classes but the model was trained "
                          f"on {len(classes)}")
    mean = std = None
    if cfg.normalize:
        mean, std = meta.get("mean"), meta.get("std")
        if mean is None:
            mean, std = normalization(cfg.dataset, data)
    loader = DeviceLoader(data, batch_size, device, mean=mean, std=std,
                          channels_last=bool(cfg.channels_last))
    model = create_model(cfg.model, num_classes=len(classes))
    load_weights(run_dir / "model.safetensors", model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    res = evaluate(model, loader, len(classes), cfg.precision, cfg.tta)
    write_json(run_dir / f"eval-{split}.json", {
        "dataset": dataset or cfg.dataset, "split": split, "accuracy": res.accuracy,
        "loss": res.loss, "classes": list(classes),
        "per_class_accuracy": res.per_class_accuracy(), "confusion": res.confusion.tolist(),
    })
    return res, classes
