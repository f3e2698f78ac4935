"""`cnnlab bench`: the speed of forward+backward+step for one model, data set and setting.

It runs the real training step (same loader, optimizer, precision and memory format as
``cnnlab train``) for a few warm-up steps, then times ``steps`` more, syncing the device
only at the two ends of the timed window.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch

from cnnlab.config import TrainConfig
from cnnlab.data.prepare import prepare
from cnnlab.device import (
    auto_channels_last,
    autocast,
    resolve_device,
    resolve_precision,
    set_threads,
)
from cnnlab.engine.optim import build_optimizer
from cnnlab.models import create_model


@dataclass
class BenchResult:
    device: str
    steps: int
    seconds: float
    batch_size: int
    peak_memory_mb: float
    channels_last: bool
    precision: str

    @property
    def steps_per_sec(self) -> float:
        return self.steps / self.seconds

    @property
    def examples_per_sec(self) -> float:
        return self.steps * self.batch_size / self.seconds

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.seconds / self.steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(cfg: TrainConfig, steps: int = 50, warmup: int = 10) -> BenchResult:
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    cfg.precision = resolve_precision(cfg.precision, device)
    data = prepare(cfg, device)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=len(data.classes)).to(device)
    channels_last = (auto_channels_last(model, device) if cfg.channels_last is None
                     else cfg.channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        data.train.channels_last = True
    optimizer = build_optimizer(cfg, model)
    step_model = torch.compile(model) if cfg.compile else model
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def batches():
        epoch = 0
        while True:
            yield from data.train.epoch(epoch)
            epoch += 1

    it = batches()
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        x, y = next(it)
        with autocast(device, cfg.precision):
            loss = criterion(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BenchResult(str(device), steps, seconds, cfg.batch_size, peak, channels_last,
                       cfg.precision)
