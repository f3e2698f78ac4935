"""Optimisers and learning-rate schedules.

Schedules are plain functions of the global step (as in airbench), applied by setting each
param group's ``lr`` before the step. The whole schedule state is then one integer, which
makes checkpoints trivially exact and needs no pickled scheduler object.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab.config import TrainConfig

# SyncBatchNorm is no BatchNorm2d subclass: without it, --sync-bn dropped airbench's 64x bias lr
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
          nn.LayerNorm)


def param_groups(cfg: TrainConfig, model: nn.Module, head: set[int] | None = None
                 ) -> list[dict]:
    """One group, or more: norm-layer biases get lr x ``bias_lr_scale`` and weight decay /
    scale (so their decay per step stays the same), as airbench does; the classifier head's
    parameters (``head``: their ids) get lr x ``head_lr_scale`` when fine-tuning.

    Every group records its ``lr_scale``; :func:`set_lr` multiplies the schedule by it.
    Parameters frozen at build time (``requires_grad`` False) are left out for good.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    head = (head or set()) if cfg.head_lr_scale != 1.0 else set()
    norm_biases = set() if cfg.bias_lr_scale == 1.0 else {
        id(m.bias) for m in model.modules()
        if isinstance(m, _NORMS) and getattr(m, "bias", None) is not None}
    head_params = [p for p in trainable if id(p) in head]
    special = [p for p in trainable if id(p) in norm_biases and id(p) not in head]
    rest = [p for p in trainable if id(p) not in head and id(p) not in norm_biases]
    groups = []
    if special:
        groups.append({"params": special, "lr_scale": cfg.bias_lr_scale,
                       "weight_decay": cfg.weight_decay / cfg.bias_lr_scale})
    if head_params:
        groups.append({"params": head_params, "lr_scale": cfg.head_lr_scale})
    if rest or not groups:
        groups.append({"params": rest, "lr_scale": 1.0})
    return groups


def build_optimizer(cfg: TrainConfig, model: nn.Module, head: set[int] | None = None
                    ) -> torch.optim.Optimizer:
    groups = param_groups(cfg, model, head)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``cfg.lr`` at global ``step`` (0-based) of a run."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":  # PyTorch OneCycleLR's defaults: cosine up 30%, then down
        peak, div, final_div = 0.3 * total, 25.0, 1e4
        if step < peak:
            t = step / max(peak, 1)
            return (1 / div) + (1 - 1 / div) * (1 - math.cos(math.pi * t)) / 2
        t = (step - peak) / max(total - peak, 1)
        low = 1 / (div * final_div)
        return low + (1 - low) * (1 + math.cos(math.pi * t)) / 2
    if cfg.schedule == "triangle":  # linear start -> 1 at the peak -> end (airbench)
        start, peak_at, end = cfg.triangle or (0.2, 0.23, 0.07)
        peak = int(peak_at * total)
        if step < peak:
            return start + (1 - start) * step / max(peak, 1)
        return 1 + (end - 1) * min((step - peak) / max(total - peak, 1), 1.0)
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** (step // steps_per_epoch // cfg.step_size)
    t = (step - warm) / max(total - warm, 1)  # cosine to zero after warm-up
    return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The schedule's current lr, without any group's ``lr_scale``."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)
