"""SimpleCNN from seeds 000-002: one 3->18 conv, 2x2 max pooling, 4608 -> 64 -> classes.

Written as an ``nn.Sequential`` of modules (ReLU and Flatten included) so that a d2l-style
loop over the layers prints every step's output shape.
"""

from torch import nn

from cnnlab.models.registry import register_model


@register_model("simple-cnn", (3, 32, 32), "conv 3->18 k3 p1, max-pool, fc 4608->64->10",
                "seeds 000-002 (SimpleCNN)")
def simple_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 18, kernel_size=3, stride=1, padding=1),  # (3,32,32) -> (18,32,32)
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2, padding=0),  # -> (18,16,16)
        nn.Flatten(),  # -> 4608
        nn.Linear(18 * 16 * 16, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )
