"""d2l's modern CNNs: AlexNet, VGG, NiN, GoogLeNet, batch-normalised LeNet, ResNet, DenseNet.

"Dive into Deep Learning" (PyTorch edition, chapter "Modern Convolutional Neural Networks")
trains each of these on Fashion-MNIST, upscaled to 224x224 (AlexNet, VGG, NiN) or 96x96
(GoogLeNet, ResNet, DenseNet). The full-size nets here are d2l's own, module for module:
the same ``nn.Sequential`` nesting and indices as d2l's d2l==0.17.5 code (the version whose
training settings the ``d2l-*`` recipes copy), so `cnnlab summary MODEL --depth 1` prints
d2l's ``for layer in net`` shape list and the state_dict keys are d2l's. The steps d2l
writes as functions inside a block (``F.relu``, ``torch.cat``, the residual sum's ReLU) are
parameter-free modules here, as in ``mnist_advanced.py``, so hooks, summaries and
``--layer`` see them; none adds a weight or a state_dict key.

Readable aliases (``conv1``, ``fc1``, ``inception4a``, ``b2`` ...) name the numbered
modules on the command line, like LeNet's.

Each heavy net also has a ``-small`` variant: the same family design (AlexNet's five convs
and dropout MLP, VGG's 3x3 blocks, NiN's 1x1 "MLP" convs and global average pooling,
Inception blocks, residual blocks, dense blocks) with fewer channels and Fashion-MNIST's own
28x28 input (32x32 for VGG, whose five 2x2 poolings need it), so that it trains to about
90% on two CPU cores in minutes, where the full nets take hours there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.models.mnist_advanced import Concat
from cnnlab.models.registry import register_model

D2L = "d2l modern CNNs"


def _side(n: int, k: int, s: int = 1, p: int = 0) -> int:
    """Output height/width of a k x k convolution or pooling with stride s and padding p."""
    return (n + 2 * p - k) // s + 1


def stem_channels(stem: nn.Sequential) -> int:
    """Output channels of a stem: those of its last conv."""
    return [m for m in stem if isinstance(m, nn.Conv2d)][-1].out_channels


def _stem(channels: int, kernel: int, stride: int, batch_norm: bool) -> nn.Sequential:
    """d2l's ``b1`` of GoogLeNet, ResNet and DenseNet: conv, (batch norm,) ReLU, 3x3/2 max
    pool. d2l's is a 7x7/2 conv, a quarter of 96x96 left; the -small variants' 3x3/1 conv
    leaves half of 28x28."""
    return nn.Sequential(
        nn.Conv2d(1, channels, kernel_size=kernel, stride=stride, padding=kernel // 2),
        *([nn.BatchNorm2d(channels)] if batch_norm else []), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


# ----------------------------------------------------------------------------- AlexNet
def _alexnet(widths: Sequence[int], first: tuple[int, int, int], hidden: int, side: int,
             num_classes: int) -> nn.Sequential:
    """d2l's AlexNet layout: a large first conv (kernel, stride, padding = ``first``), 3x3/2
    max pooling after conv1, conv2 and conv5, a 5x5 conv2 and three 3x3 convs; then a
    two-hidden-layer MLP of ``hidden`` units with dropout 0.5. ``side`` is the input size."""
    c1, c2, c3, c4, c5 = widths
    k, s, p = first
    n = _side(side, k, s, p)
    for _ in range(3):  # the three 3x3/2 max poolings; the other convs keep the size
        n = _side(n, 3, 2)
    return nn.Sequential(
        nn.Conv2d(1, c1, kernel_size=k, stride=s, padding=p), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(c5 * n * n, hidden), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(hidden, num_classes),
    )


ALEXNET_ALIASES = {
    "conv1": "0", "relu1": "1", "pool1": "2", "conv2": "3", "relu2": "4", "pool2": "5",
    "conv3": "6", "relu3": "7", "conv4": "8", "relu4": "9", "conv5": "10", "relu5": "11",
    "pool3": "12", "flatten": "13", "fc1": "14", "relu6": "15", "drop1": "16", "fc2": "17",
    "relu7": "18", "drop2": "19", "fc3": "20",
}


@register_model("alexnet", (1, 224, 224), "AlexNet: conv 96 k11/4, 256 k5, 384, 384, 256 k3, "
                "3 max-pools, fc 6400-4096-4096-10, dropout", f"{D2L}: AlexNet",
                aliases=ALEXNET_ALIASES, heavy=True)
def alexnet(num_classes: int = 10) -> nn.Module:
    return _alexnet((96, 256, 384, 384, 256), (11, 4, 1), 4096, 224, num_classes)


@register_model("alexnet-small", (1, 28, 28), "AlexNet's layout at 28x28: conv 16 k5, 32 k5, "
                "48, 48, 32 k3, 3 max-pools, fc 128-256-256-10, dropout",
                f"cnnlab (after {D2L}: AlexNet)", aliases=ALEXNET_ALIASES)
def alexnet_small(num_classes: int = 10) -> nn.Module:
    return _alexnet((16, 32, 48, 48, 32), (5, 1, 2), 256, 28, num_classes)


# --------------------------------------------------------------------------------- VGG
VGG11_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))  # (convs, channels) per block


def vgg_block(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """``num_convs`` 3x3 convs (padding 1, size kept) with ReLU, then 2x2 max pooling:
    VGG's one repeated unit, d2l's ``vgg_block``."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def _vgg(arch: Sequence[tuple[int, int]], hidden: int, side: int, num_classes: int
         ) -> nn.Sequential:
    """d2l's ``vgg(conv_arch)``: the blocks, then a two-hidden-layer MLP with dropout 0.5.
    Each block halves the input ``side``."""
    blocks, c_in = [], 1
    for num_convs, c_out in arch:
        blocks.append(vgg_block(num_convs, c_in, c_out))
        c_in = c_out
    n = side >> len(arch)
    return nn.Sequential(
        *blocks, nn.Flatten(),
        nn.Linear(c_in * n * n, hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )


def _vgg_aliases(arch: Sequence[tuple[int, int]]) -> dict[str, str]:
    """block1..5, conv1..8 (numbered through the net), pool1..5, then the MLP's modules."""
    out, conv = {}, 0
    for b, (num_convs, _) in enumerate(arch):
        out[f"block{b + 1}"] = str(b)
        for j in range(num_convs):
            conv += 1
            out[f"conv{conv}"], out[f"relu{conv}"] = f"{b}.{2 * j}", f"{b}.{2 * j + 1}"
        out[f"pool{b + 1}"] = f"{b}.{2 * num_convs}"
    b = len(arch)
    names = ("flatten", "fc1", f"relu{conv + 1}", "drop1", "fc2", f"relu{conv + 2}", "drop2",
             "fc3")
    out.update({name: str(b + i) for i, name in enumerate(names)})
    return out


VGG_ALIASES = _vgg_aliases(VGG11_ARCH)


def _divided(arch: Sequence[tuple[int, int]], ratio: int) -> tuple[tuple[int, int], ...]:
    """d2l's ``small_conv_arch``: every block's channel count divided by ``ratio``."""
    return tuple((n, c // ratio) for n, c in arch)


@register_model("vgg11", (1, 224, 224), "VGG-11: 5 blocks of 3x3 convs 64-128-256x2-512x2-"
                "512x2, max-pools, fc 25088-4096-4096-10, dropout (d2l's shape list; "
                "~129M parameters)", f"{D2L}: VGG", aliases=VGG_ALIASES, heavy=True)
def vgg11(num_classes: int = 10) -> nn.Module:
    return _vgg(VGG11_ARCH, 4096, 224, num_classes)


@register_model("vgg11-d2l", (1, 224, 224), "VGG-11 as d2l trains it: channels / 4 "
                "(16-32-64x2-128x2-128x2), fc 6272-4096-4096-10, dropout",
                f"{D2L}: VGG (small_conv_arch, ratio 4)", aliases=VGG_ALIASES, heavy=True)
def vgg11_d2l(num_classes: int = 10) -> nn.Module:
    return _vgg(_divided(VGG11_ARCH, 4), 4096, 224, num_classes)


@register_model("vgg11-small", (1, 32, 32), "VGG-11's 8 convs / 5 blocks at 32x32, channels / 8 "
                "(8-16-32x2-64x2-64x2), fc 64-256-256-10, dropout",
                f"cnnlab (after {D2L}: VGG)", aliases=VGG_ALIASES)
def vgg11_small(num_classes: int = 10) -> nn.Module:
    return _vgg(_divided(VGG11_ARCH, 8), 256, 32, num_classes)


# --------------------------------------------------------------------------------- NiN
def nin_block(in_channels: int, out_channels: int, kernel_size: int, strides: int,
              padding: int) -> nn.Sequential:
    """One spatial conv, then two 1x1 convs: a small MLP applied at every pixel, NiN's
    replacement for AlexNet's big fully connected layers (d2l's ``nin_block``)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )


def _nin(widths: Sequence[int], first: tuple[int, int, int], num_classes: int
         ) -> nn.Sequential:
    """d2l's NiN: three NiN blocks with 3x3/2 max pooling, dropout, a last NiN block with
    one channel per class, and global average pooling: no fully connected layer at all (so
    the class scores come out of a ReLU, as in d2l)."""
    c1, c2, c3 = widths
    k, s, p = first
    return nn.Sequential(
        nin_block(1, c1, kernel_size=k, strides=s, padding=p),
        nn.MaxPool2d(3, stride=2),
        nin_block(c1, c2, kernel_size=5, strides=1, padding=2),
        nn.MaxPool2d(3, stride=2),
        nin_block(c2, c3, kernel_size=3, strides=1, padding=1),
        nn.MaxPool2d(3, stride=2),
        nn.Dropout(0.5),
        nin_block(c3, num_classes, kernel_size=3, strides=1, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
    )


def _nin_aliases() -> dict[str, str]:
    """nin1..4 (the blocks), conv1..12 and relu1..12 (numbered through the net, each ReLU
    after its conv), pool1..3, drop, gap, flatten: a short name for every layer, as
    AlexNet's and VGG's."""
    out: dict[str, str] = {}
    blocks = (0, 2, 4, 7)
    for b, m in enumerate(blocks):
        out[f"nin{b + 1}"] = str(m)
    for b, m in enumerate(blocks):
        for j in range(3):
            out[f"conv{3 * b + j + 1}"] = f"{m}.{2 * j}"
            out[f"relu{3 * b + j + 1}"] = f"{m}.{2 * j + 1}"
    out.update({f"pool{b + 1}": str(2 * b + 1) for b in range(3)})
    return {**out, "drop": "6", "gap": "8", "flatten": "9"}


NIN_ALIASES = _nin_aliases()


@register_model("nin", (1, 224, 224), "NiN: NiN blocks (conv + two 1x1 convs) 96 k11/4, 256 k5, "
                "384 k3, 10 k3, max-pools, dropout, global average pooling (no linear layer)",
                f"{D2L}: NiN", aliases=NIN_ALIASES, heavy=True)
def nin(num_classes: int = 10) -> nn.Module:
    return _nin((96, 256, 384), (11, 4, 0), num_classes)


@register_model("nin-small", (1, 28, 28), "NiN's layout at 28x28: NiN blocks 16 k5, 32 k5, "
                "128 k3, 10 k3, max-pools, dropout, global average pooling",
                f"cnnlab (after {D2L}: NiN)", aliases=NIN_ALIASES)
def nin_small(num_classes: int = 10) -> nn.Module:
    # the third block at 128 rather than 64 channels: it runs at 6x6, so it costs little, and
    # in short CPU trials (30k images, 10 epochs) it lifted test accuracy from 0.878 to 0.893
    return _nin((16, 32, 128), (5, 1, 2), num_classes)


# --------------------------------------------------------------------------- GoogLeNet
class Inception(nn.Module):
    """d2l's Inception block: four paths on the same input, concatenated on channels:
    1x1 conv (``c1``); 1x1 -> 3x3 (``c2``); 1x1 -> 5x5 (``c3``); 3x3 max pool -> 1x1 (``c4``).
    Spatial size is kept. d2l's ``F.relu`` calls and ``torch.cat`` are modules here (one per
    use) so each step can be named and hooked."""

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int],
                 c4: int):
        super().__init__()
        self.p1_1 = nn.Conv2d(in_channels, c1, kernel_size=1)
        self.p2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
        self.p2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.p3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
        self.p3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        self.p4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.p4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)
        self.relu1_1, self.relu2_1, self.relu2_2 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.relu3_1, self.relu3_2, self.relu4_2 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.cat = Concat(dim=1)
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p1 = self.relu1_1(self.p1_1(x))
        p2 = self.relu2_2(self.p2_2(self.relu2_1(self.p2_1(x))))
        p3 = self.relu3_2(self.p3_2(self.relu3_1(self.p3_1(x))))
        p4 = self.relu4_2(self.p4_2(self.p4_1(x)))
        return self.cat(p1, p2, p3, p4)


# GoogLeNet's nine Inception blocks (c1, c2, c3, c4), by the paper's names: 3a 3b | 4a-4e | 5a 5b
INCEPTIONS = {
    "3a": (64, (96, 128), (16, 32), 32), "3b": (128, (128, 192), (32, 96), 64),
    "4a": (192, (96, 208), (16, 48), 64), "4b": (160, (112, 224), (24, 64), 64),
    "4c": (128, (128, 256), (24, 64), 64), "4d": (112, (144, 288), (32, 64), 64),
    "4e": (256, (160, 320), (32, 128), 128),
    "5a": (256, (160, 320), (32, 128), 128), "5b": (384, (192, 384), (48, 128), 128),
}


def _googlenet(ratio: int, stem: nn.Sequential, num_classes: int) -> nn.Sequential:
    """d2l's GoogLeNet: the stem ``b1``, ``b2`` (1x1 conv, 3x3 conv to 192 / ``ratio``, max
    pool), ``b3`` (3a, 3b, max pool), ``b4`` (4a-4e, max pool), ``b5`` (5a, 5b, global average
    pooling, flatten) and one linear layer; every width divided by ``ratio``, but none
    below 8 channels: at ``ratio`` 8 some 1x1 convs would keep 2 to 4, and a ReLU silences
    all of them for a whole batch often enough that 7 of 20 random initialisations started
    with a dead path (none of 20 with 8)."""

    def w(c: int) -> int:
        return max(c // ratio, 8)

    def block(name: str, c_in: int) -> Inception:
        c1, c2, c3, c4 = INCEPTIONS[name]
        return Inception(c_in, w(c1), (w(c2[0]), w(c2[1])), (w(c3[0]), w(c3[1])), w(c4))

    c0 = stem_channels(stem)
    b2 = nn.Sequential(nn.Conv2d(c0, c0, kernel_size=1), nn.ReLU(),
                       nn.Conv2d(c0, w(192), kernel_size=3, padding=1), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    stages, c = [], w(192)
    for names, last in ((("3a", "3b"), "pool"), (("4a", "4b", "4c", "4d", "4e"), "pool"),
                        (("5a", "5b"), "gap")):
        mods: list[nn.Module] = []
        for name in names:
            mods.append(block(name, c))
            c = mods[-1].out_channels
        mods += ([nn.MaxPool2d(kernel_size=3, stride=2, padding=1)] if last == "pool"
                 else [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten()])
        stages.append(nn.Sequential(*mods))
    return nn.Sequential(stem, b2, *stages, nn.Linear(c, num_classes))


# the layers inside an Inception block, by d2l's attribute names (inception3a.p2_2 ...)
INCEPTION_PARTS = ("p1_1", "relu1_1", "p2_1", "relu2_1", "p2_2", "relu2_2", "p3_1", "relu3_1",
                   "p3_2", "relu3_2", "p4_1", "p4_2", "relu4_2", "cat")
_INCEPTION_AT = {"3a": "2.0", "3b": "2.1", **{f"4{x}": f"3.{i}" for i, x in enumerate("abcde")},
                 "5a": "4.0", "5b": "4.1"}
GOOGLENET_ALIASES = {
    "b1": "0", "b2": "1", "b3": "2", "b4": "3", "b5": "4",
    "conv1": "0.0", "relu1": "0.1", "pool1": "0.2", "conv2": "1.0", "relu2": "1.1",
    "conv3": "1.2", "relu3": "1.3", "pool2": "1.4",
    "inception3a": "2.0", "inception3b": "2.1", "pool3": "2.2",
    **{f"inception4{x}": f"3.{i}" for i, x in enumerate("abcde")}, "pool4": "3.5",
    "inception5a": "4.0", "inception5b": "4.1", "gap": "4.2", "flatten": "4.3", "fc": "5",
    **{f"inception{b}.{part}": f"{at}.{part}" for b, at in _INCEPTION_AT.items()
       for part in INCEPTION_PARTS},
}


@register_model("googlenet", (1, 96, 96), "GoogLeNet: 7x7/2 stem, 1x1 + 3x3 convs, 9 Inception "
                "blocks (3a-5b), max-pools, global average pooling, fc 1024-10",
                f"{D2L}: GoogLeNet", aliases=GOOGLENET_ALIASES, heavy=True)
def googlenet(num_classes: int = 10) -> nn.Module:
    return _googlenet(1, _stem(64, 7, 2, batch_norm=False), num_classes)


@register_model("googlenet-small", (1, 28, 28), "GoogLeNet's 9 Inception blocks at 28x28, "
                "widths / 8 (at least 8): 3x3 stem + max-pool, 1x1 + 3x3 convs, max-pools, global average "
                "pooling, fc 128-10", f"cnnlab (after {D2L}: GoogLeNet)",
                aliases=GOOGLENET_ALIASES)
def googlenet_small(num_classes: int = 10) -> nn.Module:
    # widths / 8 rather than / 4: in short CPU trials it learned as fast per example (0.85
    # after 90k examples against 0.856) at 1.5x the examples/sec
    return _googlenet(8, _stem(8, 3, 1, batch_norm=False), num_classes)


# ---------------------------------------------------------------------------- BN LeNet
LENET_BN_ALIASES = {
    "conv1": "0", "bn1": "1", "act1": "2", "pool1": "3", "conv2": "4", "bn2": "5", "act2": "6",
    "pool2": "7", "flatten": "8", "fc1": "9", "bn3": "10", "act3": "11", "fc2": "12",
    "bn4": "13", "act4": "14", "fc3": "15",
}


@register_model("lenet-bn", (1, 28, 28), "LeNet with batch norm after every conv and hidden "
                "linear layer (sigmoid, average pooling, no padding: fc 256-120-84-10); small "
                "already, trains in seconds per epoch on a CPU", f"{D2L}: batch normalization",
                aliases=LENET_BN_ALIASES)
def lenet_bn(num_classes: int = 10) -> nn.Module:
    """d2l's concise BN LeNet (``nn.BatchNorm2d``/``1d``, the same maths as its from-scratch
    ``BatchNorm``). Unlike ``lenet5`` the first conv has no padding, so 4x4 maps reach fc1."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(256, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )


# ------------------------------------------------------------------------------ ResNet
class Residual(nn.Module):
    """d2l's residual block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + skip)``, both convs
    3x3. With ``use_1x1conv`` the skip is a strided 1x1 conv (``conv3``) that matches the
    new channel count and size; otherwise it is ``x`` itself (and ``conv3`` is absent, as in
    d2l, where it is None)."""

    def __init__(self, input_channels: int, num_channels: int, use_1x1conv: bool = False,
                 strides: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1,
                               stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.conv3 = (nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
                      if use_1x1conv else None)
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()  # after the sum: the block's output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return self.relu2(y + x)


def resnet_block(input_channels: int, num_channels: int, num_residuals: int,
                 first_block: bool = False) -> nn.Sequential:
    """d2l's ``resnet_block``: residual blocks, the first halving the size and changing the
    channels through a 1x1 skip (except after the stem, which already pooled)."""
    blk = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blk.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blk.append(Residual(num_channels, num_channels))
    return nn.Sequential(*blk)


def _resnet18(stem: nn.Sequential, widths: Sequence[int], num_classes: int) -> nn.Sequential:
    """d2l's ResNet-18: stem ``b1``, four stages ``b2``-``b5`` of two residual blocks each
    (``widths`` channels), global average pooling, one linear layer."""
    stages, c = [], stem_channels(stem)
    for i, w in enumerate(widths):
        stages.append(resnet_block(c, w, 2, first_block=(i == 0)))
        c = w
    return nn.Sequential(stem, *stages, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                         nn.Linear(c, num_classes))


# the layers inside a residual block, by d2l's attribute names; conv3 is the 1x1 skip, which
# only the first block of b3, b4 and b5 has
RESIDUAL_PARTS = ("conv1", "bn1", "relu1", "conv2", "bn2", "conv3", "relu2")


def _resnet_aliases() -> dict[str, str]:
    """b1..b5 and the stem's conv1, bn1, relu, pool1; res2a, res2b .. res5a, res5b for the
    two residual blocks of each stage b2..b5 (the paper's conv2_x..conv5_x, as Caffe's
    ResNets name them), and the layers inside them: res2a.conv1, res2a.bn1, res2a.relu1,
    res2a.conv2, res2a.bn2, res3a.conv3 (the 1x1 skip) and res2a.relu2 (after the sum); gap,
    flatten, fc: a short name for every layer, as GoogLeNet's and DenseNet's."""
    out = {"b1": "0", "b2": "1", "b3": "2", "b4": "3", "b5": "4",
           "conv1": "0.0", "bn1": "0.1", "relu": "0.2", "pool1": "0.3"}
    for stage in range(4):
        for i, block in enumerate("ab"):
            out[f"res{stage + 2}{block}"] = f"{stage + 1}.{i}"
    for stage in range(4):
        for i, block in enumerate("ab"):
            for part in RESIDUAL_PARTS:
                if part != "conv3" or (stage > 0 and i == 0):
                    out[f"res{stage + 2}{block}.{part}"] = f"{stage + 1}.{i}.{part}"
    return {**out, "gap": "5", "flatten": "6", "fc": "7"}


RESNET_ALIASES = _resnet_aliases()


@register_model("resnet18", (1, 96, 96), "ResNet-18: 7x7/2 stem + max-pool, 4 stages of 2 "
                "residual blocks 64-128-256-512, batch norm, global average pooling, fc",
                f"{D2L}: ResNet", aliases=RESNET_ALIASES, heavy=True)
def resnet18(num_classes: int = 10) -> nn.Module:
    return _resnet18(_stem(64, 7, 2, batch_norm=True), (64, 128, 256, 512), num_classes)


@register_model("resnet18-small", (1, 28, 28), "ResNet-18's 4 stages of 2 residual blocks at "
                "28x28, widths 16-32-64-128: 3x3 stem + max-pool, batch norm, global average "
                "pooling, fc", f"cnnlab (after {D2L}: ResNet)", aliases=RESNET_ALIASES)
def resnet18_small(num_classes: int = 10) -> nn.Module:
    return _resnet18(_stem(16, 3, 1, batch_norm=True), (16, 32, 64, 128), num_classes)


# ---------------------------------------------------------------------------- DenseNet
def conv_block(input_channels: int, num_channels: int) -> nn.Sequential:
    """DenseNet's pre-activation unit: batch norm, ReLU, 3x3 conv (d2l's ``conv_block``)."""
    return nn.Sequential(nn.BatchNorm2d(input_channels), nn.ReLU(),
                         nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1))


class DenseBlock(nn.Module):
    """``num_convs`` conv blocks, each reading the concatenation of the block's input and
    every earlier conv block's output and adding ``num_channels`` (the growth rate) to it.
    ``net`` is d2l's attribute; the concatenations are modules (``cats``, one per use)."""

    def __init__(self, num_convs: int, input_channels: int, num_channels: int):
        super().__init__()
        self.net = nn.Sequential(*[conv_block(num_channels * i + input_channels, num_channels)
                                   for i in range(num_convs)])
        self.cats = nn.ModuleList([Concat(dim=1) for _ in range(num_convs)])
        self.out_channels = input_channels + num_convs * num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk, cat in zip(self.net, self.cats, strict=True):
            x = cat(x, blk(x))
        return x


def transition_block(input_channels: int, num_channels: int) -> nn.Sequential:
    """Between dense blocks: BN, ReLU, 1x1 conv to ``num_channels`` (half), 2x2 average
    pooling, so the channel count and the size stop growing (d2l's ``transition_block``)."""
    return nn.Sequential(nn.BatchNorm2d(input_channels), nn.ReLU(),
                         nn.Conv2d(input_channels, num_channels, kernel_size=1),
                         nn.AvgPool2d(kernel_size=2, stride=2))


def _densenet(stem: nn.Sequential, growth_rate: int, convs: Sequence[int], num_classes: int
              ) -> nn.Sequential:
    """d2l's DenseNet: stem ``b1``, dense blocks with a halving transition block between
    them, then BN, ReLU, global average pooling and one linear layer."""
    c = stem_channels(stem)
    blks: list[nn.Module] = []
    for i, num_convs in enumerate(convs):
        blks.append(DenseBlock(num_convs, c, growth_rate))
        c += num_convs * growth_rate
        if i != len(convs) - 1:
            blks.append(transition_block(c, c // 2))
            c //= 2
    return nn.Sequential(stem, *blks, nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)),
                         nn.Flatten(), nn.Linear(c, num_classes))


def _densenet_aliases(convs: int = 4) -> dict[str, str]:
    """b1 and its conv1, bn1, relu1, pool1; dense1..4 and trans1..3; bn, relu, gap, flatten,
    fc; and the layers inside the blocks: dense1.bn1, dense1.relu1, dense1.conv1 and
    dense1.cat1 for each of a dense block's ``convs`` conv blocks, trans1.bn, .relu, .conv
    and .pool in a transition."""
    out = {"b1": "0", "conv1": "0.0", "bn1": "0.1", "relu1": "0.2", "pool1": "0.3",
           "dense1": "1", "trans1": "2", "dense2": "3", "trans2": "4", "dense3": "5",
           "trans3": "6", "dense4": "7", "bn": "8", "relu": "9", "gap": "10", "flatten": "11",
           "fc": "12"}
    for d in range(4):
        for i in range(convs):
            for j, part in enumerate(("bn", "relu", "conv")):
                out[f"dense{d + 1}.{part}{i + 1}"] = f"{2 * d + 1}.net.{i}.{j}"
            out[f"dense{d + 1}.cat{i + 1}"] = f"{2 * d + 1}.cats.{i}"
    for t in range(3):
        for j, part in enumerate(("bn", "relu", "conv", "pool")):
            out[f"trans{t + 1}.{part}"] = f"{2 * t + 2}.{j}"
    return out


DENSENET_ALIASES = _densenet_aliases()


@register_model("densenet", (1, 96, 96), "DenseNet: 7x7/2 stem + max-pool, 4 dense blocks of 4 "
                "convs (growth 32) with halving transitions, BN, global average pooling, fc "
                "248-10", f"{D2L}: DenseNet", aliases=DENSENET_ALIASES, heavy=True)
def densenet(num_classes: int = 10) -> nn.Module:
    return _densenet(_stem(64, 7, 2, batch_norm=True), 32, (4, 4, 4, 4), num_classes)


@register_model("densenet-small", (1, 28, 28), "DenseNet's 4 dense blocks of 4 convs at 28x28, "
                "growth 12: 3x3 stem 24 + max-pool, halving transitions, BN, global average "
                "pooling, fc", f"cnnlab (after {D2L}: DenseNet)", aliases=DENSENET_ALIASES)
def densenet_small(num_classes: int = 10) -> nn.Module:
    return _densenet(_stem(24, 3, 1, batch_norm=True), 12, (4, 4, 4, 4), num_classes)
