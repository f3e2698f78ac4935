"""Small, fast conv nets for the `mnist-fast` and `fashion-fast` recipes.

fastnet: three blocks of conv 3x3 -> max-pool 2 -> BatchNorm -> ReLU (pooling *before* the
norm and activation, as airbench does, so those run on a quarter of the pixels: on 2 CPU
cores this took the net from 8.5k to 11.7k examples/sec), then one linear layer.

fastnet-white and fastnet-white-wide replace the first block by airbench's fixed whitening
layer: filters computed once from the training images and never trained, so backward stops
before the first trained convolution (no input gradient there, no pool/BN/ReLU backward at
full resolution). On 2 CPU cores that makes their steps 1.5-1.6x faster than the fastnets
they replace, at the same or better accuracy.
"""

from collections.abc import Callable

import torch
from torch import nn

from cnnlab.models.registry import register_model


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2),
            nn.BatchNorm2d(cout), nn.ReLU()]


def fastnet(widths: tuple[int, int, int], in_channels: int, size: int, num_classes: int
            ) -> nn.Sequential:
    final = size // 8  # three 2x poolings (28 -> 14 -> 7 -> 3)
    return nn.Sequential(
        *_block(in_channels, widths[0]), *_block(widths[0], widths[1]),
        *_block(widths[1], widths[2]), nn.Flatten(),
        nn.Linear(widths[2] * final * final, num_classes),
    )


def _block_aliases(first: int, blocks: int) -> dict[str, str]:
    """conv1, pool1, bn1, relu1, conv2 ... for ``blocks`` of _block's four layers, the first
    at Sequential index ``first``; then flatten and fc."""
    out = {}
    for b in range(blocks):
        for j, part in enumerate(("conv", "pool", "bn", "relu")):
            out[f"{part}{b + 1}"] = str(first + 4 * b + j)
    end = first + 4 * blocks
    return {**out, "flatten": str(end), "fc": str(end + 1)}


# readable names for the numbered layers, for commands that name one (--freeze conv1): one for
# every layer `cnnlab summary` lists
FASTNET_ALIASES = _block_aliases(0, 3)


@register_model("fastnet", (1, 28, 28), "3 x (conv3 -> pool -> BN -> ReLU), 16/32/64, fc",
                "cnnlab (mnist-fast before fastnet-white)", aliases=FASTNET_ALIASES)
def fastnet_s(num_classes: int = 10) -> nn.Module:
    return fastnet((16, 32, 64), 1, 28, num_classes)


@register_model("fastnet-wide", (1, 28, 28), "3 x (conv3 -> pool -> BN -> ReLU), 24/48/96, fc",
                "cnnlab (fashion-fast before fastnet-white-wide)", aliases=FASTNET_ALIASES)
def fastnet_wide(num_classes: int = 10) -> nn.Module:
    return fastnet((24, 48, 96), 1, 28, num_classes)


def whitening_filters(images: torch.Tensor, to_patches: Callable[[torch.Tensor], torch.Tensor],
                      count: int, eps: float, chunk: int = 500) -> torch.Tensor:
    """The ``count`` strongest whitening filters of the images' patches: the eigenvectors of
    the patches' covariance, largest eigenvalue first, each scaled by 1/sqrt(eigenvalue +
    eps), so the filter responses are uncorrelated with unit variance (airbench's whitening
    layer). ``to_patches`` turns images into flattened patches (P, D). The covariance is
    summed over ``chunk`` images at a time, in float64: 5,000 Fashion-MNIST images have 3.9M
    3x3 patches, 280 MB at once. It runs on the CPU (Apple's MPS has no float64) and
    returns (count, D) in float64 there; copying into the layer moves it to the model."""
    images = images.cpu()

    def chunks():
        return (to_patches(images[i:i + chunk]).double() for i in range(0, len(images), chunk))

    n = sum(len(c) for c in chunks())
    mean = sum(c.sum(0) for c in chunks()) / n
    covariance = sum((c - mean).T @ (c - mean) for c in chunks()) / n
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0)[:count], eigenvectors.T.flip(0)[:count]
    return eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]


def _patches_2x2_of_folded(images: torch.Tensor) -> torch.Tensor:
    x = nn.functional.pixel_unshuffle(images.float().contiguous(), 2)
    return x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 16)


def _patches_3x3_padded(images: torch.Tensor) -> torch.Tensor:
    x = nn.functional.pad(images.float().contiguous(), (1, 1, 1, 1))
    return x.unfold(2, 3, 1).unfold(3, 3, 1).reshape(-1, 9)


class WhitenedFastNet(nn.Sequential):
    """fastnet for 1-channel 28x28 digits with airbench's fixed whitening layer in front.

    The image is folded 2x2 into 4 channels at 14x14 (space-to-depth, no information lost),
    then a 2x2 convolution whose 16 filters whiten those 4x4-pixel patches (the eigenvectors
    of their covariance over training images, scaled by 1/sqrt(eigenvalue); set by
    ``init_from_data`` and never trained), then two blocks of conv 3x3 -> max-pool -> BN ->
    ReLU and one linear layer. Nothing before the first trained convolution has parameters,
    so backward stops there: no gradient for the input of that convolution, nor for the
    whitening layer. On 2 CPU cores that makes a step 1.6x faster than fastnet's (6.5k vs
    4.0k examples/sec at batch 128) at the same one-epoch accuracy.
    """

    def __init__(self, widths: tuple[int, int] = (32, 64), num_classes: int = 10,
                 eps: float = 5e-4):
        whiten = nn.Conv2d(4, 16, 2, bias=False)  # 14x14 -> 13x13
        whiten.weight.requires_grad = False
        self.eps = eps
        super().__init__(
            nn.PixelUnshuffle(2), whiten,
            *_block(16, widths[0]), *_block(widths[0], widths[1]),  # 13 -> 6 -> 3
            nn.Flatten(), nn.Linear(widths[1] * 3 * 3, num_classes),
        )

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalised training images (N, 1, 28, 28)."""
        conv = self[1]
        filters = whitening_filters(images, _patches_2x2_of_folded, 16, self.eps)
        conv.weight.copy_(filters.reshape(16, 4, 2, 2).to(conv.weight.dtype))


# fold (the 2x2 space-to-depth) and whiten (the fixed whitening conv), then the trained blocks
WHITENED_FASTNET_ALIASES = {"fold": "0", "whiten": "1", **_block_aliases(2, 2)}


@register_model("fastnet-white", (1, 28, 28), "2x2 space-to-depth, fixed whitening conv (16), "
                "2 x (conv3 -> pool -> BN -> ReLU) 32/64, fc", "cnnlab (mnist-fast)",
                aliases=WHITENED_FASTNET_ALIASES)
def fastnet_white(num_classes: int = 10) -> nn.Module:
    return WhitenedFastNet(num_classes=num_classes)


class PixelWhitenedNet(nn.Sequential):
    """fastnet-wide for Fashion-MNIST with a fixed whitening layer at full resolution.

    A 3x3 convolution whose 8 filters are the strongest whitening directions of the training
    images' 3x3 patches, used with both signs (16 channels) and a ReLU so that no
    information is lost (airbench's trick); then max-pool, then two blocks of conv 3x3 ->
    max-pool -> BN -> ReLU and one linear layer. The first layer keeps the full 28x28
    resolution that Fashion-MNIST needs (the 2x2 space-to-depth of fastnet-white costs it
    about a point), and nothing before the first trained convolution has parameters, so
    backward stops there. On 2 CPU cores a step is 1.47x faster than fastnet-wide's (2.9k vs
    2.0k examples/sec at batch 256).
    """

    def __init__(self, widths: tuple[int, int] = (48, 96), num_classes: int = 10,
                 directions: int = 8, eps: float = 5e-4):
        whiten = nn.Conv2d(1, 2 * directions, 3, padding=1, bias=False)
        whiten.weight.requires_grad = False
        self.directions, self.eps = directions, eps
        super().__init__(
            whiten, nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 14
            *_block(2 * directions, widths[0]), *_block(widths[0], widths[1]),  # 14 -> 7 -> 3
            nn.Flatten(), nn.Linear(widths[1] * 3 * 3, num_classes),
        )

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalised training images (N, 1, 28, 28)."""
        conv = self[0]
        filters = whitening_filters(images, _patches_3x3_padded, self.directions, self.eps)
        filters = filters.reshape(-1, 1, 3, 3)
        conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight.dtype))


# the fixed whitening and its ReLU and pooling (stage 0), then the trained blocks 1 and 2
PIXEL_WHITENED_ALIASES = {"whiten": "0", "relu0": "1", "pool0": "2", **_block_aliases(3, 2)}


@register_model("fastnet-white-wide", (1, 28, 28), "fixed 3x3 whitening (8 directions, +/-, "
                "ReLU), pool, 2 x (conv3 -> pool -> BN -> ReLU) 48/96, fc",
                "cnnlab (fashion-fast)", aliases=PIXEL_WHITENED_ALIASES)
def fastnet_white_wide(num_classes: int = 10) -> nn.Module:
    return PixelWhitenedNet(num_classes=num_classes)
