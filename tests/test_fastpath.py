"""The fast path (in-memory DeviceLoader + channels_last model + ``training_step``) computes
what a plain per-sample pipeline (PIL image -> ToTensor -> Normalize, contiguous model,
hand-written SGD step) computes, checked in three parts so that each has a tight tolerance:

1. data: the loader yields the same examples, labels and order as the plain pipeline, in
   channels_last, and pixel values equal to fp32 rounding (it normalises with one
   multiply-add, ``x * scale + shift``: ~40% of the values differ in the last bits, by at
   most 2.4e-7, one ulp of the largest value).
2. fp32, one step at a time from identical weights (the fast model is reset to the plain
   one before every step, so nothing accumulates): same loss to 1e-5 relative and same
   BatchNorm running statistics. fp32 gradients are *not* compared: they jump at ReLU and
   max-pool kinks. In fastnet, a BatchNorm output whose exact value is 3e-7 came out
   -1.3e-7 in the contiguous fp32 step and 4.4e-6 in the channels_last one (PyTorch's
   channels_last CPU BatchNorm is off by up to 2e-5 in fp32, the contiguous one by 3e-7;
   where it lands depends on the CPU's vector width and thread count), so one ReLU passed a
   gradient the other blocked, and the gradients differed by 6e-3 relative although both
   are right to fp32 rounding.
3. float64, the whole trajectory (six SGD+momentum steps, the loader's input values on both
   sides): losses, every gradient and the final weights and BatchNorm buffers agree to
   1e-9 relative (measured: < 1e-13). Rounding there is ~1e-16, too small to cross a kink.

Why not compare fp32 trajectories: that flipped ReLU changed the next weights by 2e-5
relative, and fastnet (BatchNorm, lr 0.01, momentum 0.9) then grows the difference 3-5x a
step, each new flip adding to it: 2e-3 by step 6 (loss 1.685 vs 1.693), 1e-2 by step 13.
Both sides contiguous, fed inputs that differ in the last bit, drift exactly the same way;
float64 after a 1e-6 perturbation of the weights too, while a 1e-9 one stays 1e-9. So it
is rounding amplified by the net, not a difference between the two paths.
"""

import copy
import functools

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.data import Split, load_split
from cnnlab.data.loader import DeviceLoader
from cnnlab.data.preprocess import Preprocess, adapt_images
from cnnlab.engine.train import training_step
from cnnlab.models import create_model

MEAN, STD = 0.1307, 0.3081
MODELS = ["mnist-net", "fastnet", "lenet5"]
BATCH, STEPS = 32, 6
LR, MOMENTUM = 0.01, 0.9


@functools.cache
def _digits28() -> Split:
    s = load_split("digits", "train")  # called inside a test: conftest isolates the cache dir
    n = BATCH * STEPS
    return Split(adapt_images(s.images[:n], 28, None), s.labels[:n], s.classes)


def _loader() -> DeviceLoader:
    split = _digits28()
    pre = Preprocess(channels=1, size=(28, 28), mean=(MEAN,), std=(STD,), channels_last=True)
    return DeviceLoader(split.images, split.labels, BATCH, torch.device("cpu"), pre,
                        shuffle=True, seed=3)


def _plain_batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What torchvision's MNIST + ToTensor + Normalize give, one sample at a time."""
    split, xs = _digits28(), []
    for i in idx.tolist():
        img = Image.fromarray(split.images[i, 0].numpy())  # uint8 (H, W): mode "L"
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).float().div(255)[None]
        xs.append((x - MEAN) / STD)
    return torch.stack(xs), split.labels[idx]


def _plain_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The plain pipeline over the examples of each of the loader's epoch-0 batches."""
    return [_plain_batch(idx) for idx in _loader().batch_indices(0)]


def _models(name: str, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = create_model(name).to(dtype)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    plain.train()
    fast.train()
    return plain, fast


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def _plain_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
                ) -> torch.Tensor:
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def test_loader_yields_the_plain_batches():
    batches = list(_loader().epoch(0))
    plain = _plain_batches()
    assert len(batches) == len(plain) == STEPS
    for k, ((x, y), (xp, yp)) in enumerate(zip(batches, plain, strict=True)):
        assert x.dtype == torch.float32 and x.shape == xp.shape
        assert x.is_contiguous(memory_format=torch.channels_last), k
        assert torch.equal(y, yp), k
        # both round (v/255 - mean)/std to fp32 in two or three operations, each off by at
        # most eps/2 of a value <= max|x| (2.8), so they agree to 4 * eps * 2.8 = 1.3e-6
        # (measured: 2.4e-7). Dividing by 256, or std off by 1%, is 1e-2 off; a moved pixel, 1.
        tol = 4 * torch.finfo(torch.float32).eps * float(xp.abs().max())
        torch.testing.assert_close(x, xp, rtol=0, atol=tol, msg=lambda m, k=k: f"batch {k}: {m}")


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running_" in k}


@pytest.mark.parametrize("name", MODELS)
def test_fp32_step_from_same_weights_matches_plain_step(name):
    plain, fast = _models(name, torch.float32)
    opt_plain, opt_fast = _sgd(plain), _sgd(fast)
    crit = nn.CrossEntropyLoss()
    for k, ((x, y), (xp, yp)) in enumerate(zip(_loader().epoch(0), _plain_batches(), strict=True)):
        fast.load_state_dict(plain.state_dict())  # copy_ into the fast model keeps its layout
        loss_fast, _ = training_step(fast, opt_fast, crit, x, y, "fp32")
        loss_plain = _plain_step(plain, opt_plain, xp, yp)
        # the forward pass is continuous in inputs and weights: measured <= 1e-6 relative
        # (9 seeds, 1 and 2 threads, oneDNN/ATen ISA levels down to SSE4.1); 1e-5 leaves
        # room for other CPUs' summation orders. Running stats: <= 1e-6 relative.
        torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-5, atol=0,
                                   msg=lambda m, k=k: f"step {k}: {m}")
        for key, b in _bn_buffers(plain).items():  # batch statistics folded in this step
            torch.testing.assert_close(_bn_buffers(fast)[key], b, rtol=1e-4, atol=1e-6,
                                       msg=lambda m, k=k, key=key: f"step {k} {key}: {m}")
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in fast.parameters() if p.dim() == 4)


@pytest.mark.parametrize("name", MODELS)
def test_float64_trajectory_matches_plain_training(name):
    plain, fast = _models(name, torch.float64)
    opt_plain, opt_fast = _sgd(plain), _sgd(fast)
    crit = nn.CrossEntropyLoss()
    steps = 0
    for k, (x, y) in enumerate(_loader().epoch(0)):
        x = x.double()  # keeps channels_last; the plain side gets the same values, NCHW
        assert x.is_contiguous(memory_format=torch.channels_last)
        loss_fast, _ = training_step(fast, opt_fast, crit, x, y, "fp32")
        loss_plain = _plain_step(plain, opt_plain, x.contiguous(), y)
        torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-9, atol=0,
                                   msg=lambda m, k=k: f"step {k}: {m}")
        for (key, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12,
                                       msg=lambda m, k=k, key=key: f"step {k} grad {key}: {m}")
        steps += 1
    assert steps == STEPS
    fast_state = fast.state_dict()
    for key, v in plain.state_dict().items():
        torch.testing.assert_close(fast_state[key], v, rtol=1e-9, atol=1e-12, msg=key)
