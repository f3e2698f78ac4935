"""The two MNIST nets of Liu Er's "PyTorch深度学习实践" lecture 11, 卷积神经网络(高级篇)
(advanced CNNs): a net of two ``InceptionA`` modules, and a net of two ``ResidualBlock``\\ s.

Written as the lecture's own classes, with its module names for every weighted layer
(``conv1``, ``conv2``, ``incep1.branch1x1``, ``incep1.branch5x5_1`` ... ``incep1.branch_pool``,
``rblock1.conv1``, ``rblock1.conv2``, ``fc``), so saved weights load into the lecture's classes
with ``strict=True``. As in ``mnist_net.py``, the steps the lecture writes as functions
(``F.relu``, ``F.avg_pool2d``, ``torch.cat``, ``view``) are parameter-free modules here, so
per-layer summaries and hooks see every step; each is a separate module per use (``relu1``,
``relu2``, ``pool1``, ``pool2`` where the lecture calls one ``mp`` twice), so a layer name
picks one activation. None of them adds a weight or changes the state_dict.
"""

import torch
from torch import nn

from cnnlab.models.registry import register_model


class Concat(nn.Module):
    """``torch.cat(inputs, dim)`` as a module, so an Inception module's 88-channel output is
    a layer that summaries, hooks and Grad-CAM can name."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class InceptionA(nn.Module):
    """Four branches on the same input, concatenated in the lecture's order
    [branch1x1 (16), branch5x5 (24), branch3x3 (24), branch_pool (24)] -> 88 channels,
    spatial size kept."""

    out_channels = 16 + 24 * 3  # 88

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch1x1 = nn.Conv2d(in_channels, 16, kernel_size=1)

        self.branch5x5_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_2 = nn.Conv2d(16, 24, kernel_size=5, padding=2)

        self.branch3x3_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3_2 = nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3_3 = nn.Conv2d(24, 24, kernel_size=3, padding=1)

        self.avg_pool = nn.AvgPool2d(kernel_size=3, stride=1, padding=1)  # F.avg_pool2d
        self.branch_pool = nn.Conv2d(in_channels, 24, kernel_size=1)
        self.cat = Concat(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3 = self.branch3x3_3(self.branch3x3_2(self.branch3x3_1(x)))
        branch_pool = self.branch_pool(self.avg_pool(x))
        return self.cat(branch1x1, branch5x5, branch3x3, branch_pool)


class InceptionNet(nn.Module):
    """The lecture's Inception net: (1,28,28) -conv1 k5-> (10,24,24) -pool, ReLU-> (10,12,12)
    -incep1-> (88,12,12) -conv2 k5-> (20,8,8) -pool, ReLU-> (20,4,4) -incep2-> (88,4,4)
    -flatten-> 1408 -fc-> classes."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(InceptionA.out_channels, 20, kernel_size=5)
        self.incep1 = InceptionA(in_channels=10)
        self.incep2 = InceptionA(in_channels=20)
        self.pool1 = nn.MaxPool2d(2)  # the lecture's one `mp`, at its first use
        self.pool2 = nn.MaxPool2d(2)  # ... and its second
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(InceptionA.out_channels * 4 * 4, num_classes)  # 1408

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.pool1(self.conv1(x)))  # -> (10,12,12)
        x = self.incep1(x)  # -> (88,12,12)
        x = self.relu2(self.pool2(self.conv2(x)))  # -> (20,4,4)
        x = self.incep2(x)  # -> (88,4,4)
        return self.fc(self.flatten(x))  # 1408 -> classes


class ResidualBlock(nn.Module):
    """``relu(x + conv2(relu(conv1(x))))``, both convs 3x3 with padding 1 and ``channels``
    in and out, so the skip connection adds tensors of the same shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()  # after the sum: the block's output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.conv1(x))
        y = self.conv2(y)
        return self.relu2(x + y)


class ResidualNet(nn.Module):
    """The lecture's residual net: (1,28,28) -conv1 k5, ReLU, pool-> (16,12,12) -rblock1->
    (16,12,12) -conv2 k5, ReLU, pool-> (32,4,4) -rblock2-> (32,4,4) -flatten-> 512 -fc->
    classes. (ReLU before pooling here; the Inception net pools first, as the lecture does.)"""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.pool1 = nn.MaxPool2d(2)
        self.pool2 = nn.MaxPool2d(2)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.rblock1 = ResidualBlock(16)
        self.rblock2 = ResidualBlock(32)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32 * 4 * 4, num_classes)  # 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))  # -> (16,12,12)
        x = self.rblock1(x)
        x = self.pool2(self.relu2(self.conv2(x)))  # -> (32,4,4)
        x = self.rblock2(x)
        return self.fc(self.flatten(x))  # 512 -> classes


LECTURE = "Liu Er, PyTorch lecture 11 (advanced CNN)"


@register_model("mnist-inception", (1, 28, 28),
                "conv 1->10 k5, InceptionA (1x1, 5x5, 3x3x2, avg-pool branches -> 88), "
                "conv 88->20 k5, InceptionA, fc 1408->10", f"{LECTURE}: InceptionA Net")
def mnist_inception(num_classes: int = 10) -> nn.Module:
    return InceptionNet(num_classes)


@register_model("mnist-resnet", (1, 28, 28),
                "conv 1->16 k5, residual block (2 conv3), conv 16->32 k5, residual block, "
                "fc 512->10", f"{LECTURE}: ResidualBlock Net")
def mnist_resnet(num_classes: int = 10) -> nn.Module:
    return ResidualNet(num_classes)
