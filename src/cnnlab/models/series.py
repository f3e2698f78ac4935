"""1-D convnets for time series: the FCN and the ResNet of Wang, Yan and Oates (2017).

"Time series classification from scratch with deep neural networks: a strong baseline"
(IJCNN 2017, arXiv:1611.06455) proposed both as baselines for the UCR archive; Fawaz et al.
("Deep learning for time series classification: a review", DMKD 2019) found the ResNet the
best of nine deep models. Both are fully convolutional: 'same'-padded convolutions keep the
length, and global average pooling (GAP) over time feeds one linear layer. So they take any
series length, and any number of channels (``in_channels``, given by the data), and their
last feature maps ``A`` (K x L) and the linear layer's weights ``w`` give a *class activation
map* over time, ``CAM_c(t) = sum_k w[c, k] * A_k(t)``: which part of the signal decided the
class (:mod:`cnnlab.viz.series`). Its mean over time plus the bias is the logit.

- ``fcn``: conv 128 k8 -> BN -> ReLU, conv 256 k5 -> BN -> ReLU, conv 128 k3 -> BN -> ReLU,
  GAP, linear.
- ``resnet1d``: three residual blocks of 64, 128 and 128 filters; each block is conv k8 ->
  BN -> ReLU, conv k5 -> BN -> ReLU, conv k3 -> BN, plus a shortcut (1x1 conv + BN where the
  channel count changes, BN alone in the third block), added, then ReLU; GAP, linear.

The convolutions carry no bias (BatchNorm's shift follows each one, so a bias would only be
cancelled); otherwise the layers are those of the authors' Keras code (Wang et al.'s
``FCN.py``/``ResNet.py``, Fawaz et al.'s ``classifiers/fcn.py``/``resnet.py``), including
Keras's 'same' padding of even kernels (3 steps before, 4 after, for k8).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.models.registry import register_model

WANG = "Wang, Yan & Oates 2017 (arXiv:1611.06455)"
INPUT = (1, 150)  # what `cnnlab summary` shows by default (GunPoint); any C x L works


class SameConv1d(nn.Conv1d):
    """Conv1d (stride 1, no bias) whose output is as long as its input, padded as Keras's
    'same' pads: (k - 1) // 2 zeros before, k // 2 after, so an even kernel (k8) looks one
    step further ahead than back. (PyTorch's own ``padding="same"`` pads the same way, but
    warns about it.)"""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        even = kernel_size % 2 == 0
        super().__init__(in_channels, out_channels, kernel_size, bias=False,
                         padding=0 if even else kernel_size // 2)
        self.pads = ((kernel_size - 1) // 2, kernel_size // 2) if even else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.pads is None else F.pad(x, self.pads))


class ConvBlock1d(nn.Module):
    """Conv1d ('same' padding, no bias) -> BatchNorm1d -> ReLU (or no activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool = True):
        super().__init__()
        self.conv = SameConv1d(in_channels, out_channels, kernel_size)
        self.bn = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ResidualBlock1d(nn.Module):
    """conv k8 -> BN -> ReLU -> conv k5 -> BN -> ReLU -> conv k3 -> BN, plus the shortcut
    (1x1 conv + BN when the channel count changes, else BN), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvBlock1d(in_channels, out_channels, 8)
        self.conv2 = ConvBlock1d(out_channels, out_channels, 5)
        self.conv3 = ConvBlock1d(out_channels, out_channels, 3, relu=False)
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv1d(in_channels, out_channels, 1, bias=False),
                bn=nn.BatchNorm1d(out_channels)))
        else:
            self.shortcut = nn.Sequential(OrderedDict(bn=nn.BatchNorm1d(out_channels)))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class GapNet1d(nn.Module):
    """``features`` (N, C, L) -> (N, K, L), global average pooling over time, ``fc`` K -> classes.

    :meth:`class_activation_maps` is the CAM of Zhou et al. (2016) over time, as Wang et al.
    draw it: the linear layer applied at every time step of the last feature maps."""

    def __init__(self, features: nn.Sequential, width: int, num_classes: int):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))

    def class_activation_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, classes), CAMs (N, classes, L)): ``CAM[n, c, t] = sum_k fc.weight[c, k]
        * A[n, k, t]``, with ``A = features(x)``; its mean over t plus ``fc.bias[c]`` is the
        logit of class c."""
        maps = self.features(x)
        cams = torch.einsum("ck,nkl->ncl", self.fc.weight, maps)
        return self.fc(maps.mean(-1)), cams


class FCN(GapNet1d):
    """Wang et al.'s fully convolutional network: three conv blocks (128 k8, 256 k5, 128 k3)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        features = nn.Sequential(OrderedDict(
            block1=ConvBlock1d(in_channels, 128, 8),
            block2=ConvBlock1d(128, 256, 5),
            block3=ConvBlock1d(256, 128, 3)))
        super().__init__(features, 128, num_classes)


class ResNet1d(GapNet1d):
    """Wang et al.'s ResNet: residual blocks of 64, 128 and 128 filters."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        features = nn.Sequential(OrderedDict(
            block1=ResidualBlock1d(in_channels, 64),
            block2=ResidualBlock1d(64, 128),
            block3=ResidualBlock1d(128, 128)))
        super().__init__(features, 128, num_classes)


# short names for every layer `cnnlab summary` lists (--layer takes them): the blocks, the
# layers inside them, and the head's own names
_HEAD = {"pool": "pool", "flatten": "flatten", "fc": "fc"}
_FCN_ALIASES = {
    **{f"block{i}": f"features.block{i}" for i in (1, 2, 3)},
    **{f"{part}{i}": f"features.block{i}.{part}" for i in (1, 2, 3)
       for part in ("conv", "bn", "relu")},
    **_HEAD,
}


def _resnet1d_aliases() -> dict[str, str]:
    """block1..3, and inside each: conv1, bn1, relu1, conv2, bn2, relu2, conv3, bn3, id3
    (conv3's block has no activation: an Identity), skip_conv and skip_bn (the shortcut;
    block3's is BN alone) and relu (after the sum): block1.conv1 .. block3.relu."""
    out = {f"block{i}": f"features.block{i}" for i in (1, 2, 3)}
    for i in (1, 2, 3):
        at = f"features.block{i}"
        for j in (1, 2, 3):
            out.update({f"block{i}.conv{j}": f"{at}.conv{j}.conv",
                        f"block{i}.bn{j}": f"{at}.conv{j}.bn",
                        f"block{i}.{'id' if j == 3 else 'relu'}{j}": f"{at}.conv{j}.relu"})
        if i < 3:
            out[f"block{i}.skip_conv"] = f"{at}.shortcut.conv"
        out[f"block{i}.skip_bn"] = f"{at}.shortcut.bn"
        out[f"block{i}.relu"] = f"{at}.relu"
    return {**out, **_HEAD}


_RESNET_ALIASES = _resnet1d_aliases()


@register_model("fcn", INPUT, "conv 128 k8, 256 k5, 128 k3 (BN, ReLU), global average "
                "pooling over time, fc; any C x L", f"{WANG}: FCN", aliases=_FCN_ALIASES,
                series=True)
def fcn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return FCN(num_classes, in_channels)


@register_model("resnet1d", INPUT, "3 residual blocks (64, 128, 128 filters; conv k8, k5, k3 "
                "with BN), global average pooling over time, fc; any C x L", f"{WANG}: ResNet",
                aliases=_RESNET_ALIASES, series=True)
def resnet1d(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return ResNet1d(num_classes, in_channels)
