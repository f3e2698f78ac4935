"""On a GPU, a training epoch synchronises with the host only at its log points.

Randomness is drawn once per epoch on the device and batches are sliced there, so no step
copies anything from the host: a hidden copy would be a synchronisation per step. Skipped
without CUDA (the CPU has nothing to synchronise with).
"""

from __future__ import annotations

import pytest
import torch

from cnnlab.config import build_config
from cnnlab.engine import train as train_mod
from cnnlab.engine.build import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _relaxed(fn):
    """``fn`` with sync checks off: a log point may synchronise."""
    def wrapper(*args, **kwargs):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("error")
    return wrapper


@pytest.mark.parametrize("extra", [
    {"model": "fastnet", "crop_padding": 2, "flip": True, "cutout": 4},
    {"model": "fastnet", "flip": True, "alternate_flip": True, "crop_padding": 2,
     "crop_pad_mode": "reflect", "ema_every": 2},
])
def test_cuda_epoch_syncs_only_at_log_points(monkeypatch, extra):
    cfg = build_config(None, {"dataset": "digits", "resize": 28, "limit_train": 320,
                              "batch_size": 32, "log_every": 4, "device": "cuda", **extra})
    built = build(cfg)
    monkeypatch.setattr(train_mod, "log_point", _relaxed(train_mod.log_point))
    monkeypatch.setattr(train_mod, "epoch_result", _relaxed(train_mod.epoch_result))
    ema = None
    if built.cfg.ema_every:
        from cnnlab.engine.ema import LookaheadEMA

        ema = LookaheadEMA(built.model, built.cfg.ema_every, len(built.train))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for epoch in range(2):
            res = train_mod.train_one_epoch(built.step_model, built.train, built.optimizer,
                                            built.cfg, epoch, epoch * len(built.train), ema=ema,
                                            criterion=built.criterion)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert res.examples == 320
