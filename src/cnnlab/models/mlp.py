"""The fully connected 784-512-256-128-64-10 net of the tutorial's section 9.1.

Written as the tutorial's ``Net`` class with its module names ``l1`` ... ``l5``, so saved
weights load into the tutorial's class with ``strict=True``.
"""

import torch
from torch import nn

from cnnlab.models.registry import register_model


class MLP(nn.Module):
    LEGACY_KEYS = {"1": "l1", "3": "l2", "5": "l3", "7": "l4", "9": "l5"}  # cnnlab 0.1

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.l1 = nn.Linear(784, 512)
        self.l2 = nn.Linear(512, 256)
        self.l3 = nn.Linear(256, 128)
        self.l4 = nn.Linear(128, 64)
        self.l5 = nn.Linear(64, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for layer in (self.l1, self.l2, self.l3, self.l4):
            x = self.relu(layer(x))
        return self.l5(x)


@register_model("mlp", (1, 28, 28), "fully connected 784-512-256-128-64-10, ReLU",
                "tutorial section 9.1 (Net)")
def mlp(num_classes: int = 10) -> nn.Module:
    return MLP(num_classes)
