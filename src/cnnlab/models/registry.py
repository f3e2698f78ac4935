"""Model registry in the style of timm: ``@register_model`` fills a dict, nothing more.

This module imports no model family: ``cnnlab/models/__init__.py`` imports the families
(which run their ``@register_model`` decorators), so there is no import circle and no lazy
"ensure loaded" step. Each entry records the input shape the network was designed for, so
a mismatched data set is reported before training, in words, instead of as a shape error
deep inside ``forward``; and, for nets whose modules are numbered (``nn.Sequential``),
readable layer aliases (``conv1`` -> ``0``) for commands that name a layer.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from cnnlab.errors import CnnlabError, did_you_mean


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, ...]  # (C, H, W); a series model: a default (C, L), any fits
    description: str
    source: str
    aliases: dict[str, str] = field(default_factory=dict)  # readable name -> module name
    # too costly for every registry-wide check on a CPU (d2l's full-size nets at 224x224 or
    # 96x96, up to 129M parameters): those checks run them at batch 1, and the export
    # round trips check their -small variant's layer types instead (see tests/test_export.py)
    heavy: bool = False
    series: bool = False  # takes 1-D series (N, C, L) of any C and L, not images

    @property
    def kind(self) -> str:
        return "1-D series" if self.series else "images"

    def shape_text(self) -> str:
        """``1x28x28``; a series model: ``C x L (any)``."""
        return "C x L (any)" if self.series else "x".join(map(str, self.input_shape))


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, input_shape: tuple[int, ...], description: str, source: str,
                   aliases: dict[str, str] | None = None, heavy: bool = False,
                   series: bool = False):
    """Decorator that adds a builder ``f(num_classes=10) -> nn.Module`` to the registry; a
    ``series`` model's builder also takes ``in_channels`` (the data's channel count)."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelInfo(name, fn, input_shape, description, source,
                                    dict(aliases or {}), heavy, series)
        return fn

    return wrap


def model_names() -> list[str]:
    return list(_REGISTRY)


def get_model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise CnnlabError(
            f"unknown model '{name}'; {did_you_mean(name, list(_REGISTRY))}choose one of: "
            f"{', '.join(_REGISTRY)} (see `cnnlab models`)"
        )
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 10, in_channels: int | None = None) -> nn.Module:
    """Build model ``name`` with a ``num_classes``-way output layer. ``in_channels``: the
    channel count of a series model's data (image models take their registered shape, to
    which images are adapted, and ignore it)."""
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) \
            or num_classes < 2:
        raise CnnlabError(f"num_classes must be a whole number of at least 2, got "
                          f"{num_classes!r}")
    info = get_model_info(name)
    if info.series:
        return info.builder(num_classes=num_classes,
                            in_channels=in_channels or info.input_shape[0])
    return info.builder(num_classes=num_classes)


def series_model_names() -> list[str]:
    return [m for m in _REGISTRY if _REGISTRY[m].series]


def check_input_shape(name: str, shape: tuple[int, ...], dataset: str = "the data",
                      fixed_model: bool = False) -> None:
    """Raise a clear error when ``shape`` is not what model ``name`` takes: (C, H, W) images
    of its registered shape, or, for a series model, (C, L) series of any C and L.
    ``fixed_model``: the model cannot change (fine-tuning a run), so no other is offered."""
    info = get_model_info(name)
    want = info.input_shape
    given = "x".join(map(str, shape))
    if info.series != (len(shape) == 2):
        if info.series:
            raise CnnlabError(
                f"model '{name}' takes 1-D series (C x L) but {dataset} gives images ({given}); "
                f"pick an image model (see `cnnlab models`) or a series data set (ucr:NAME)")
        raise CnnlabError(
            f"model '{name}' takes images ({info.shape_text()}) but {dataset} gives 1-D series "
            f"({given}); pick a series model: {', '.join(series_model_names())}")
    if info.series or tuple(shape) == want:
        return
    c, h, _ = want
    fixes = []
    if shape[0] != c:
        fixes.append(f"--channels {c}")
    if tuple(shape[1:]) != (h, h):
        fixes.append(f"--resize {h}")
    fits = [m for m in model_names() if get_model_info(m).input_shape == tuple(shape)
            and not get_model_info(m).series]
    alt = f", or pick a model made for it ({', '.join(fits)})" if fits and not fixed_model \
        else ""
    raise CnnlabError(
        f"model '{name}' takes {c}x{h}x{want[2]} input but {dataset} gives "
        f"{'x'.join(map(str, shape))}; pass {' '.join(fixes)} to adapt the data{alt}"
    )


def layer_names(name: str, model: nn.Module) -> dict[str, str]:
    """Every name a layer of ``model`` (registered as ``name``) answers to: its module name,
    and the registry's aliases (``conv1`` for LeNet's ``0``), mapped to module names."""
    modules = {n: n for n, _ in model.named_modules() if n}
    aliases = {a: m for a, m in get_model_info(name).aliases.items() if m in modules}
    return {**modules, **aliases}


def find_layer(name: str, model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """The module called ``layer`` (a module name or an alias); a clear error otherwise."""
    names = layer_names(name, model)
    if layer not in names:
        aliases = list(get_model_info(name).aliases)
        outer = [a for a in aliases if "." not in a]  # a block's inner layers: one example
        inner = [a for a in aliases if "." in a]
        listed = outer or [n for n, m in model.named_modules() if n and not list(m.children())]
        more = (f" (or a layer inside a block, e.g. {inner[0]}, as `cnnlab summary` lists "
                "them, or a module name, as `cnnlab summary --depth N` lists them)" if inner
                else " (or a module name, as `cnnlab summary --depth N` lists them)" if aliases
                else "")
        raise CnnlabError(f"model '{name}' has no layer '{layer}'; "
                          f"{did_you_mean(layer, list(names))}choose one of: "
                          f"{', '.join(listed)}{more}")
    module_name = names[layer]
    return module_name, model.get_submodule(module_name)


def upgrade_state_dict(model: nn.Module, state: dict) -> dict:
    """Rename keys saved by older cnnlab versions (``0.weight``) to the model's current names
    (``conv1.weight``), using the model class's ``LEGACY_KEYS`` prefix map, if it has one."""
    legacy: dict[str, str] = getattr(model, "LEGACY_KEYS", {})
    if not legacy or any(k in state for k in model.state_dict()):
        return state
    out = {}
    for k, v in state.items():
        prefix, _, rest = k.partition(".")
        out[f"{legacy[prefix]}.{rest}" if prefix in legacy else k] = v
    return out
