"""An airbench-style CIFAR-10 net for the `cifar-fast` recipe (after Keller Jordan's airbench94).

What makes it train fast, each piece a small module here:
- a first 2x2 convolution fixed to whiten image patches: its filters are the eigenvectors of
  the patch covariance of training images (and their negatives), set by ``init_from_data``;
  only its bias trains, and only for the first 3 epochs (``on_epoch_start``);
- three blocks conv -> max-pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU, with
  convolutions initialised as partial identities (dirac) so the net starts near a residual net;
- BatchNorm with a frozen scale, tiny eps and fast-moving statistics, and outputs scaled 1/9.

``airbench-res`` follows airbench96 instead: a third convolution in each group, a residual
connection over the group's last two, and widths 128/512/512.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.registry import register_model


class FrozenScaleBN(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1 (only the bias trains). PyTorch's momentum 0.4 is
    airbench94's 0.6 (it counts the other way); airbench96 keeps PyTorch's 0.1."""

    def __init__(self, channels: int, momentum: float = 0.4):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad = False


class DiracConv(nn.Conv2d):
    """3x3 'same' convolution, no bias, whose first in_channels filters start as identities."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            nn.init.dirac_(self.weight[: self.in_channels])


def _group(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(DiracConv(cin, cout), nn.MaxPool2d(2), FrozenScaleBN(cout), nn.GELU(),
                         DiracConv(cout, cout), FrozenScaleBN(cout), nn.GELU())


class ResidualGroup(nn.Module):
    """conv -> pool -> BN -> GELU, then two conv -> BN layers added back to that, then GELU
    (the activation after the sum, as in airbench96's 2024-06 update)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.stem = nn.Sequential(DiracConv(cin, cout), nn.MaxPool2d(2),
                                  FrozenScaleBN(cout, 0.1), nn.GELU())
        self.body = nn.Sequential(DiracConv(cout, cout), FrozenScaleBN(cout, 0.1), nn.GELU(),
                                  DiracConv(cout, cout), FrozenScaleBN(cout, 0.1))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.act(x + self.body(x))


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class AirNet(nn.Sequential):
    """Sequential, so summaries and the training loop treat it like every other model."""

    whiten_bias_epochs = 3

    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), num_classes: int = 10,
                 whiten_kernel: int = 2, residual: bool = False):
        whiten = nn.Conv2d(3, 2 * 3 * whiten_kernel**2, whiten_kernel, bias=True)
        whiten.weight.requires_grad = False
        nn.init.zeros_(whiten.bias)
        group = ResidualGroup if residual else _group
        super().__init__(
            whiten, nn.GELU(),
            group(whiten.out_channels, widths[0]), group(widths[0], widths[1]),
            group(widths[1], widths[2]),
            nn.MaxPool2d(3), nn.Flatten(), nn.Linear(widths[2], num_classes, bias=False),
            Scale(1 / 9),
        )

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from normalised training images (N, 3, H, W)."""
        conv = self[0]
        k = conv.kernel_size[0]
        x = images.float().contiguous()
        patches = x.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * k * k).double()
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
        filters = eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]
        filters = filters.reshape(-1, x.shape[1], k, k).to(conv.weight.dtype)
        conv.weight.copy_(torch.cat([filters, -filters]))

    def on_epoch_start(self, epoch: int) -> None:
        self[0].bias.requires_grad = epoch < self.whiten_bias_epochs


def _airnet_aliases(residual: bool) -> dict[str, str]:
    """Readable names for AirNet's numbered layers (--freeze-until group1, --layer group2),
    one for every layer `cnnlab summary` lists: whiten, gelu, group1..3 and the layers inside
    each group (group1.conv1, group1.pool, group1.bn1, group1.gelu1, group1.conv2 ...; in
    airbench-res's residual groups also conv3/bn3, and gelu3 after the sum), pool, flatten,
    fc, scale."""
    out = {"whiten": "0", "gelu": "1", "group1": "2", "group2": "3", "group3": "4"}
    if residual:  # ResidualGroup: stem (conv, pool, BN, GELU), body (conv, BN, GELU, conv, BN)
        parts = {"conv1": "stem.0", "pool": "stem.1", "bn1": "stem.2", "gelu1": "stem.3",
                 "conv2": "body.0", "bn2": "body.1", "gelu2": "body.2", "conv3": "body.3",
                 "bn3": "body.4", "gelu3": "act"}
    else:  # _group: conv, pool, BN, GELU, conv, BN, GELU
        parts = {name: str(i) for i, name in enumerate(
            ("conv1", "pool", "bn1", "gelu1", "conv2", "bn2", "gelu2"))}
    for g in range(3):
        out.update({f"group{g + 1}.{name}": f"{g + 2}.{at}" for name, at in parts.items()})
    return {**out, "pool": "5", "flatten": "6", "fc": "7", "scale": "8"}


AIRNET_ALIASES = _airnet_aliases(residual=False)
AIRNET_RES_ALIASES = _airnet_aliases(residual=True)


@register_model("airbench", (3, 32, 32), "airbench-style: whitening conv, 3 conv groups "
                "64/256/256, GELU, fc", "cnnlab (cifar-fast, after airbench94)", aliases=AIRNET_ALIASES)
def airbench(num_classes: int = 10) -> nn.Module:
    return AirNet(num_classes=num_classes)


@register_model("airbench-small", (3, 32, 32), "airbench-style, narrow: groups 32/64/128 "
                "(a CIFAR-10 net that trains in minutes on a CPU)",
                "cnnlab (the fine-tuning demo's source)", aliases=AIRNET_ALIASES)
def airbench_small(num_classes: int = 10) -> nn.Module:
    return AirNet(widths=(32, 64, 128), num_classes=num_classes)


@register_model("airbench-wide", (3, 32, 32), "airbench-style, wider: groups 128/384/384",
                "cnnlab (after airbench95)", aliases=AIRNET_ALIASES)
def airbench_wide(num_classes: int = 10) -> nn.Module:
    return AirNet(widths=(128, 384, 384), num_classes=num_classes)


@register_model("airbench-res", (3, 32, 32), "airbench-style with residual groups of 3 convs: "
                "128/512/512", "cnnlab (after airbench96)", aliases=AIRNET_RES_ALIASES)
def airbench_res(num_classes: int = 10) -> nn.Module:
    return AirNet(widths=(128, 512, 512), num_classes=num_classes, residual=True)
