"""The 2-conv MNIST net of the tutorial (section 9.5): conv, pool, ReLU twice, then 320 -> 10.

Written as the tutorial's own ``Net`` class, with its module names (``conv1``, ``conv2``,
``pooling``, ``fc``), so its saved weights load into the tutorial's class with
``strict=True`` and ``conv1`` is called ``conv1`` wherever a layer is named. The ReLU and
flatten steps are parameter-free modules here (the tutorial calls ``F.relu`` and ``view``):
that adds no weights, and lets per-layer summaries and hooks see every step.
"""

import torch
from torch import nn

from cnnlab.models.registry import register_model


class MnistNet(nn.Module):
    LEGACY_KEYS = {"0": "conv1", "3": "conv2", "7": "fc"}  # cnnlab 0.1's nn.Sequential

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)  # (1,28,28) -> (10,24,24)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)  # (10,12,12) -> (20,8,8)
        self.pooling = nn.MaxPool2d(2)
        self.fc = nn.Linear(320, num_classes)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.pooling(self.conv1(x)))  # -> (10,12,12)
        x = self.relu(self.pooling(self.conv2(x)))  # -> (20,4,4)
        return self.fc(self.flatten(x))  # 320 -> classes


@register_model("mnist-net", (1, 28, 28), "conv 1->10 k5, conv 10->20 k5, max-pool, fc 320->10",
                "tutorial section 9.5 (Net)")
def mnist_net(num_classes: int = 10) -> nn.Module:
    return MnistNet(num_classes)
