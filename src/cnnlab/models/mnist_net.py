"""The 2-conv MNIST net of seed 003 section 9.5: conv, pool, ReLU twice, then 320 -> 10.

Layer order follows the seed exactly: ``relu(pool(conv(x)))``.
"""

from torch import nn

from cnnlab.models.registry import register_model


@register_model("mnist-net", (1, 28, 28), "conv 1->10 k5, conv 10->20 k5, max-pool, fc 320->10",
                "seed 003 section 9.5")
def mnist_net(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 10, kernel_size=5),  # (1,28,28) -> (10,24,24)
        nn.MaxPool2d(2),  # -> (10,12,12)
        nn.ReLU(),
        nn.Conv2d(10, 20, kernel_size=5),  # -> (20,8,8)
        nn.MaxPool2d(2),  # -> (20,4,4)
        nn.ReLU(),
        nn.Flatten(),  # -> 320
        nn.Linear(320, num_classes),
    )
