"""The explicit SGD update used for CUDA-graph steps equals torch.optim.SGD bit for bit
(checked eagerly on CPU; the graph replay itself needs a GPU: benchmarks/gpu.py graphs-check)."""

import copy

import pytest
import torch

from cnnlab.config import build_config
from cnnlab.engine.graphed import GraphedSGDStep
from cnnlab.engine.optim import build_optimizer, set_lr
from cnnlab.models import create_model


@pytest.mark.parametrize("over", [
    {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "bias_lr_scale": 16.0},
    {"momentum": 0.5, "nesterov": False, "weight_decay": 0.0},
])
def test_explicit_sgd_matches_torch_sgd(over):
    cfg = build_config(None, {"model": "fastnet", "dataset": "mnist", "lr": 0.05, **over})
    torch.manual_seed(0)
    a = create_model("fastnet")
    b = copy.deepcopy(a)
    opt_a, opt_b = build_optimizer(cfg, a), build_optimizer(cfg, b)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    step_b = GraphedSGDStep(b, opt_b, crit, "fp32", (8, 1, 28, 28), torch.device("cpu"), False)
    for i in range(4):
        x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
        lr = 0.05 * (1 + i)  # a changing schedule
        set_lr(opt_a, lr)
        set_lr(opt_b, lr)
        loss_a = crit(a(x), y)
        opt_a.zero_grad()
        loss_a.backward()
        opt_a.step()
        loss_b, _ = step_b.eager_step(x, y)
        assert torch.equal(loss_b, loss_a.detach()), i  # bit for bit, step after step
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), k
