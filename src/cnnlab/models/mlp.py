"""The fully connected 784-512-256-128-64-10 net of seed 003 section 9.1."""

from torch import nn

from cnnlab.models.registry import register_model


@register_model("mlp", (1, 28, 28), "fully connected 784-512-256-128-64-10, ReLU",
                "seed 003 section 9.1")
def mlp(num_classes: int = 10) -> nn.Module:
    widths = [784, 512, 256, 128, 64]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)
