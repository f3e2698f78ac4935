"""Model registry in the style of timm: ``@register_model`` and ``create_model(name)``.

Each entry records the input shape the network was designed for, so a mismatched data set
is reported before training, in words, instead of as a shape error deep inside ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    description: str
    source: str


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, input_shape: tuple[int, int, int], description: str, source: str):
    """Decorator that adds a builder ``f(num_classes=10) -> nn.Module`` to the registry."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelInfo(name, fn, input_shape, description, source)
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Importing the family modules runs their @register_model decorators.
    from cnnlab.models import airbench, fastnet, lenet, mlp, mnist_net, simple_cnn  # noqa: F401


def model_names() -> list[str]:
    _ensure_loaded()
    return list(_REGISTRY)


def get_model_info(name: str) -> ModelInfo:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise CnnlabError(
            f"unknown model '{name}'; choose one of: {', '.join(_REGISTRY)} (see `cnnlab models`)"
        )
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build model ``name`` with a ``num_classes``-way output layer."""
    if num_classes < 2:
        raise CnnlabError(f"num_classes must be at least 2, got {num_classes}")
    return get_model_info(name).builder(num_classes=num_classes)


def check_input_shape(name: str, shape: tuple[int, ...], dataset: str = "the data") -> None:
    """Raise a clear error when ``shape`` (C, H, W) is not what model ``name`` takes."""
    want = get_model_info(name).input_shape
    if tuple(shape) == want:
        return
    c, h, _ = want
    fixes = []
    if shape[0] != c:
        fixes.append(f"--channels {c}")
    if tuple(shape[1:]) != (h, h):
        fixes.append(f"--resize {h}")
    fits = [m for m in model_names() if get_model_info(m).input_shape == tuple(shape)]
    alt = f", or pick a model made for it ({', '.join(fits)})" if fits else ""
    raise CnnlabError(
        f"model '{name}' takes {c}x{h}x{want[2]} input but {dataset} gives "
        f"{'x'.join(map(str, shape))}; pass {' '.join(fixes)} to adapt the data{alt}"
    )


def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialise conv and linear weights: 'default' keeps PyTorch's, 'xavier' as d2l."""
    if scheme == "default":
        return
    if scheme != "xavier":
        raise CnnlabError(f"unknown init '{scheme}'; choose default or xavier")
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
