"""The tutorials' own pipelines, rebuilt without torchvision, for side-by-side benchmarks.

- seed 003: ``datasets.MNIST`` with ``Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])``,
  ``DataLoader(batch_size=64, shuffle=True)`` (default workers: 0), the seed's train/test loops.
- d2l ``load_data_fashion_mnist(256)``: ``ToTensor()`` only, ``num_workers=4``, and
  ``train_ch6`` (Xavier init, SGD, per-batch ``float()`` metrics on the host).

Per sample, like torchvision: the uint8 array becomes a PIL image, then a float tensor in
[0, 1] (ToTensor), then is normalised. That per-sample Python is what cnnlab removes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cnnlab.data import load_split


class TutorialDataset(Dataset):
    """torchvision.datasets.MNIST/FashionMNIST behaviour: PIL image -> ToTensor -> Normalize."""

    def __init__(self, name: str, split: str, data_dir: str | None,
                 normalize: tuple[float, float] | None):
        s = load_split(name, split, data_dir)
        self.images = s.images[:, 0].numpy()  # (N, 28, 28) uint8, like torchvision's .data
        self.labels = s.labels.numpy()
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).float().div(255)[None]  # ToTensor
        if self.normalize is not None:  # Normalize((m,), (s,))
            x = (x - self.normalize[0]) / self.normalize[1]
        return x, int(self.labels[i])


def seed_loaders(data_dir: str | None) -> tuple[DataLoader, DataLoader]:
    norm = (0.1307, 0.3081)
    train = TutorialDataset("mnist", "train", data_dir, norm)
    test = TutorialDataset("mnist", "test", data_dir, norm)
    return (DataLoader(train, batch_size=64, shuffle=True),
            DataLoader(test, batch_size=64, shuffle=False))


def d2l_loaders(data_dir: str | None, workers: int = 4) -> tuple[DataLoader, DataLoader]:
    train = TutorialDataset("fashion-mnist", "train", data_dir, None)
    test = TutorialDataset("fashion-mnist", "test", data_dir, None)
    return (DataLoader(train, 256, shuffle=True, num_workers=workers),
            DataLoader(test, 256, shuffle=False, num_workers=workers))


def seed_train_epoch(model: nn.Module, loader: DataLoader, optimizer, device) -> float:
    """Seed 003's ``train(epoch)``: returns examples/sec of the epoch."""
    criterion = nn.CrossEntropyLoss()
    running_loss = 0.0
    n = 0
    start = time.perf_counter()
    model.train()
    for inputs, target in loader:
        inputs, target = inputs.to(device), target.to(device)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, target)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        n += len(target)
    return n / (time.perf_counter() - start)


@torch.no_grad()
def tutorial_test(model: nn.Module, loader: DataLoader, device) -> float:
    """Seed 003's ``test()``: accuracy over the test loader."""
    model.eval()
    correct = total = 0
    for inputs, target in loader:
        inputs, target = inputs.to(device), target.to(device)
        outputs = model(inputs)
        _, predicted = torch.max(outputs.data, dim=1)
        total += target.size(0)
        correct += (predicted == target).sum().item()
    return correct / total


def d2l_train_epoch(net: nn.Module, loader: DataLoader, optimizer, device) -> tuple[float, float, float]:
    """One epoch of d2l's ``train_ch6``: (train loss, train acc, examples/sec)."""
    loss = nn.CrossEntropyLoss()
    l_sum = acc_sum = n = 0.0
    start = time.perf_counter()
    net.train()
    for X, y in loader:
        X, y = X.to(device), y.to(device)
        optimizer.zero_grad()
        y_hat = net(X)
        l = loss(y_hat, y)  # noqa: E741 - d2l's name
        l.backward()
        optimizer.step()
        with torch.no_grad():
            l_sum += float(l) * X.shape[0]
            acc_sum += float((y_hat.argmax(1) == y).sum())
            n += X.shape[0]
    return l_sum / n, acc_sum / n, n / (time.perf_counter() - start)


def xavier(net: nn.Module) -> None:
    """d2l's ``init_weights``."""
    for m in net.modules():
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and, separately, its reaped children), MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


if __name__ == "__main__":
    import sys

    sys.exit("baselines.py is the tutorials' pipelines for the other benchmarks to import; run "
             "benchmarks/loader.py or benchmarks/time_to_accuracy.py instead")
