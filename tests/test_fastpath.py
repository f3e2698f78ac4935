"""Fast paths must not change results: the real training step on the in-memory loader with
channels_last gives the same per-step losses (fp32) as a plain per-sample pipeline
(PIL image -> ToTensor -> Normalize, contiguous model) fed the very same batches."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.config import build_config
from cnnlab.data.load import Split, load_split
from cnnlab.data.loader import DeviceLoader, adapt_images
from cnnlab.engine.train import train_one_epoch
from cnnlab.models import create_model

MEAN, STD = 0.1307, 0.3081


def _digits28(n: int) -> Split:
    s = load_split("digits", "train")
    return Split(adapt_images(s.images[:n], 28, None), s.labels[:n], s.classes)


def _plain_batch(split: Split, idx: torch.Tensor):
    xs = []
    for i in idx.tolist():  # what torchvision's MNIST + ToTensor + Normalize do per sample
        img = Image.fromarray(split.images[i, 0].numpy(), mode="L")
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).float().div(255)[None]
        xs.append((x - MEAN) / STD)
    return torch.stack(xs), split.labels[idx]


@pytest.mark.parametrize("name", ["mnist-net", "fastnet", "lenet5"])
def test_fast_step_matches_plain_step(name):
    split = _digits28(192)
    cfg = build_config(None, {"model": name, "dataset": "digits", "resize": 28, "batch_size": 32,
                              "lr": 0.01, "momentum": 0.9, "schedule": "constant",
                              "log_every": 1, "precision": "fp32"})
    torch.manual_seed(0)
    base = create_model(name)
    plain, fast = copy.deepcopy(base), copy.deepcopy(base).to(memory_format=torch.channels_last)
    loader = DeviceLoader(split, 32, torch.device("cpu"), mean=(MEAN,), std=(STD,), shuffle=True,
                          seed=3, channels_last=True)
    fast_losses = []
    opt_fast = torch.optim.SGD(fast.parameters(), lr=0.01, momentum=0.9)
    train_one_epoch(fast, loader, opt_fast, cfg, 0, 0,
                    progress=lambda _s, _n, loss: fast_losses.append(loss))
    plain_losses = []
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    plain.train()
    for idx in loader.batch_indices(0):
        x, y = _plain_batch(split, idx)
        loss = torch.nn.functional.cross_entropy(plain(x), y)
        opt_plain.zero_grad()
        loss.backward()
        opt_plain.step()
        plain_losses.append(loss.item())
    assert len(fast_losses) == len(plain_losses) == 6
    # the first step sees identical weights: only float summation order may differ
    assert fast_losses[0] == pytest.approx(plain_losses[0], rel=1e-6)
    np.testing.assert_allclose(fast_losses, plain_losses, rtol=1e-4, atol=1e-6)
    for (k, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b.contiguous(), rtol=1e-4, atol=1e-5, msg=k)
