"""Schedules and parameter groups."""

import pytest
import torch

from cnnlab.config import build_config
from cnnlab.engine.optim import base_lr, build_optimizer, lr_factor, set_lr
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model


def _cfg(**kw):
    return build_config(None, {"model": "fastnet", "dataset": "mnist", "epochs": 10, **kw})


def test_triangle_schedule_points():
    cfg = _cfg(schedule="triangle", triangle=[0.2, 0.25, 0.1])
    steps = 10  # per epoch, 100 in all
    assert lr_factor(cfg, 0, steps) == pytest.approx(0.2)
    assert lr_factor(cfg, 25, steps) == pytest.approx(1.0)
    assert lr_factor(cfg, 100, steps) == pytest.approx(0.1)
    assert lr_factor(cfg, 60, steps) == pytest.approx(1 + (0.1 - 1) * 35 / 75)


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle", "triangle"])
def test_schedules_stay_positive_and_bounded(schedule):
    cfg = _cfg(schedule=schedule, warmup_epochs=1 if schedule != "onecycle" else 0)
    values = [lr_factor(cfg, s, 7) for s in range(70)]
    assert all(0 <= v <= 1.0 + 1e-9 for v in values)
    assert max(values) == pytest.approx(1.0, abs=0.05)


def test_bias_lr_scale_groups_norm_biases():
    model = create_model("fastnet")
    opt = build_optimizer(_cfg(bias_lr_scale=64, weight_decay=0.01, lr=0.5), model)
    biases, rest = opt.param_groups
    bn_biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(p) for p in biases["params"]} == {id(p) for p in bn_biases}
    assert biases["weight_decay"] == pytest.approx(0.01 / 64) and rest["weight_decay"] == 0.01
    set_lr(opt, 0.5)
    assert biases["lr"] == pytest.approx(32.0) and rest["lr"] == pytest.approx(0.5)
    assert base_lr(opt) == pytest.approx(0.5)


def test_bad_triangle_is_refused():
    with pytest.raises(CnnlabError, match="--triangle"):
        _cfg(schedule="triangle", triangle=[0.2, 1.5, 0.1])
