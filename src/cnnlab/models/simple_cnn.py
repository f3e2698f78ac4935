"""SimpleCNN of the CIFAR-10 tutorial: one 3->18 conv, 2x2 max pooling, 4608 -> 64 -> classes.

Written as the tutorial's ``SimpleCNN`` class with its module names (``conv1``, ``pool``,
``fc1``, ``fc2``), so saved weights load into the tutorial's class with ``strict=True``.
ReLU and flatten are parameter-free modules here, so summaries and hooks see every step.
"""

import torch
from torch import nn

from cnnlab.models.registry import register_model


class SimpleCNN(nn.Module):
    LEGACY_KEYS = {"0": "conv1", "4": "fc1", "6": "fc2"}  # cnnlab 0.1's nn.Sequential

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 18, kernel_size=3, stride=1, padding=1)  # -> (18,32,32)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)  # -> (18,16,16)
        self.fc1 = nn.Linear(18 * 16 * 16, 64)  # 4608 -> 64
        self.fc2 = nn.Linear(64, num_classes)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc2(x)


@register_model("simple-cnn", (3, 32, 32), "conv 3->18 k3 p1, max-pool, fc 4608->64->10",
                "CIFAR-10 tutorial (SimpleCNN)")
def simple_cnn(num_classes: int = 10) -> nn.Module:
    return SimpleCNN(num_classes)
