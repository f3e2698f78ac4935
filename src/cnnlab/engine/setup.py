"""Everything a run needs before its first step, resolved once: shared by train and bench.

Order matters: the device first (precision and memory format depend on it), the data before
the model (the number of classes comes from it, and a bad data set must fail before anything
is written), the optimizer before ``torch.compile`` (it must hold the real parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data.prepare import Prepared, prepare
from cnnlab.device import auto_channels_last, resolve_device, resolve_precision, set_threads
from cnnlab.engine.optim import build_optimizer
from cnnlab.models import create_model, init_weights


@dataclass
class RunSetup:
    device: torch.device
    data: Prepared
    model: nn.Module  # the real module (checkpoints, EMA)
    step_model: nn.Module  # what the steps call: the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer


def setup_run(cfg: TrainConfig, log: Callable[[str], None] = lambda _m: None,
              fresh: bool = True) -> RunSetup:
    """Resolve ``cfg`` (its 'auto' precision and channels_last are filled in) and build the
    run's parts. ``fresh`` is False when resuming: data-dependent init is then skipped,
    since the checkpoint brings the weights."""
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    cfg.precision = resolve_precision(cfg.precision, device)
    data = prepare(cfg, device, log=log)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=len(data.classes))
    init_weights(model, cfg.init)
    model.to(device)
    if cfg.channels_last is None:
        cfg.channels_last = auto_channels_last(model, device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
        data.train.channels_last = data.test.channels_last = True
    init_from_data = getattr(model, "init_from_data", None)
    if init_from_data is not None and fresh:  # e.g. airbench's whitening layer
        pick = torch.randperm(len(data.train.labels), generator=torch.Generator().manual_seed(
            cfg.seed))[:5000].to(device)  # a random sample: stored order may be by class
        init_from_data(data.train.to_float(data.train.images[pick]))
    optimizer = build_optimizer(cfg, model)
    step_model = torch.compile(model) if cfg.compile else model
    return RunSetup(device, data, model, step_model, optimizer)
