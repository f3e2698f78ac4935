"""`cnnlab bench`: the speed of forward+backward+step for one model, data set and setting.

It runs the real training step (same loader, optimizer, precision and memory format as
``cnnlab train``) for a few warm-up steps, then times ``steps`` more, syncing the device
only at the two ends of the timed window.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

import torch

from cnnlab.config import TrainConfig
from cnnlab.engine.build import build, model_config
from cnnlab.engine.train import training_step
from cnnlab.errors import CnnlabError


@dataclass
class BenchResult:
    dataset: str
    compiled: bool
    device: str
    steps: int
    seconds: float
    batch_size: int
    peak_memory_mb: float
    channels_last: bool
    precision: str
    title: str = ""  # the data set as titles name it (folder 'letters'); empty: ``dataset``

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


def bench(model: str | TrainConfig, overrides: dict[str, Any] | None = None, steps: int = 50,
          warmup: int = 10) -> BenchResult:
    """Time ``steps`` training steps of ``model`` after ``warmup`` untimed ones."""
    if steps < 1 or warmup < 0:
        raise CnnlabError("--steps must be at least 1 and --warmup 0 or more")
    cfg = model if isinstance(model, TrainConfig) else model_config(model, overrides)
    run = build(cfg)
    cfg, device, net = run.cfg, run.device, run.model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    it = run.train.forever()
    net.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        x, y = next(it)
        training_step(run.step_model, run.optimizer, run.criterion, x, y, cfg.precision)
    _sync(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BenchResult(cfg.dataset, cfg.compile, str(device), steps, seconds, cfg.batch_size,
                       peak, bool(cfg.channels_last), cfg.precision, cfg.dataset_title())
