"""Per-layer output shapes and parameter counts, printed the way d2l's loop prints them.

d2l runs ``for layer in net: X = layer(X); print(...)``. That only works for a flat
``nn.Sequential``; we use forward hooks on leaf modules instead, so it also works for
models with nested blocks, and the lines come out the same for the flat ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inspect.receptive import LayerField


@dataclass(frozen=True)
class LayerRow:
    name: str  # qualified module name, e.g. "3" or "features.conv1"
    kind: str  # class name, e.g. "Conv2d"
    output_shape: torch.Size
    params: int


def _shown(name: str, module: nn.Module, depth: int | None) -> bool:
    """Whether ``module`` gets a row: every leaf; with ``depth``, the modules ``depth`` levels
    down (``depth`` 1: the top-level children) and any leaf above that level."""
    leaf = len(list(module.children())) == 0
    if depth is None:
        return leaf
    level = name.count(".") + 1
    return level == depth or (leaf and level < depth)


def layer_rows(model: nn.Module, input_shape: tuple[int, ...], depth: int | None = None
               ) -> list[LayerRow]:
    """Run one zero-grad forward pass of a (1, *input_shape) random input, recording the
    leaves, or with ``depth`` the modules that deep (1: d2l's ``for layer in net`` loop, which
    prints a block of a nested net as one ``Sequential`` line); the parameters of a row are
    those of its module and everything inside it."""
    rows: list[LayerRow] = []
    hooks = []
    for name, module in model.named_modules():
        if name and _shown(name, module, depth):
            def hook(mod, _inp, out, name=name):
                shape = out.shape if isinstance(out, torch.Tensor) else torch.Size([])
                n = sum(p.numel() for p in mod.parameters())
                rows.append(LayerRow(name, type(mod).__name__, shape, n))
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()
            model(torch.rand(1, *input_shape))
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CnnlabError(
            f"input shape {'x'.join(map(str, input_shape))} does not fit this model ({first}); "
            "pass the model's own --input C,H,W (a series model: C,L; see `cnnlab models`)"
        ) from e
    finally:
        for h in hooks:
            h.remove()
    return rows


def field_text(lf: LayerField, input_hw: tuple[int, int]) -> str:
    """``rf 16x16  jump 4  (2,2) sees rows 8..23, cols 8..23`` for one layer."""
    f = lf.field
    if f.size is None:
        return "rf: the whole input"
    (r0, r1), (c0, c1) = f.region(lf.centre, input_hw)
    size = f"{f.size[0]}" if f.size[0] == f.size[1] else f"{f.size[0]}x{f.size[1]}"
    jump = f"{f.jump[0]}" if f.jump[0] == f.jump[1] else f"{f.jump[0]}x{f.jump[1]}"
    return (f"rf {size:>3}  jump {jump:>2}  unit {lf.centre} sees rows {r0}..{r1 - 1}, "
            f"cols {c0}..{c1 - 1}")


def format_summary(rows: list[LayerRow], total_params: int,
                   aliases: dict[str, str] | None = None,
                   fields: list[str] | None = None) -> str:
    """d2l-style lines (``Conv2d output shape: torch.Size([1, 6, 28, 28])``) plus params and
    the layer's name, the one `--layer` takes (``aliases``: module name -> readable alias),
    and, when given, each layer's receptive-field text."""
    aliases = aliases or {}
    width = max(len(f"{r.kind} output shape: {r.output_shape}") for r in rows)
    pwidth = max(len(f"{r.params:,}") for r in rows)
    nwidth = max(len(aliases.get(r.name, r.name)) for r in rows) if fields else 0
    lines = [
        f"{f'{r.kind} output shape: {r.output_shape}':<{width}}  params: {r.params:>{pwidth},}"
        f"  layer: {aliases.get(r.name, r.name):<{nwidth}}"
        + (f"  {fields[i]}" if fields else "")
        for i, r in enumerate(rows)
    ]
    lines = [line.rstrip() for line in lines]
    lines.append(f"Total params: {total_params:,}")
    return "\n".join(lines)


def _check_depth(depth: int | None, receptive: bool) -> None:
    if depth is not None and depth < 1:
        raise CnnlabError(f"--depth must be at least 1, got {depth}")
    if depth is not None and receptive:
        raise CnnlabError("--receptive-field measures every leaf layer; leave out --depth")


def model_summary(name: str | nn.Module, input_shape: tuple[int, ...] | None = None,
                  receptive: bool = False, depth: int | None = None) -> str:
    """What `cnnlab summary` prints for registered model ``name`` (``receptive``: with each
    layer's receptive field, jump and the input region its centre unit sees; ``depth``: rows
    for the modules that many levels down instead of the leaves). A series model takes
    ``input_shape`` (C, L) of any C and L (its default: one channel of 150 steps).

    ``name`` may also be any ``nn.Module`` of your own (like torchinfo's ``summary``); it
    then needs ``input_shape`` (C, H, W), without the batch axis."""
    from cnnlab.models import create_model, get_model_info

    _check_depth(depth, receptive)
    if isinstance(name, nn.Module):
        if input_shape is None or len(input_shape) not in (2, 3):
            raise CnnlabError("a module of your own needs input_shape=(C, H, W) (or (C, L) for "
                              "a 1-D net), without the batch axis")
        shape = tuple(int(v) for v in input_shape)
        return _summary_text(name, type(name).__name__, "your own module", shape, {},
                             receptive, "", depth)
    info = get_model_info(name)
    shape = input_shape or info.input_shape
    if info.series and len(shape) != 2:
        raise CnnlabError(f"model '{name}' takes 1-D series: give --input C,L (channels, "
                          f"length), e.g. 1,150")
    if receptive and info.series:
        raise CnnlabError("--receptive-field draws 2-D fields of image models; a 1-D model's "
                          "field is the sum of its kernel lengths minus their count, plus 1")
    net = create_model(name, in_channels=shape[0] if info.series else None)
    return _summary_text(net, name, info.description, shape, info.aliases, receptive, "", depth)


def run_summary(run_dir: str, receptive: bool = False, depth: int | None = None) -> str:
    """`cnnlab summary RUN_DIR`: the trained model at the input shape it was trained on."""
    from cnnlab.models import get_model_info
    from cnnlab.run import load_run

    _check_depth(depth, receptive)
    run = load_run(run_dir, device="cpu")
    info = get_model_info(run.config.model)
    if receptive and run.is_series:
        raise CnnlabError("--receptive-field draws 2-D fields of image models; this is a 1-D "
                          "series run")
    return _summary_text(run.model.float(), run.config.model, info.description,
                         run.preprocess.input_shape, info.aliases, receptive,
                         f"trained on {run.config.dataset_title()}", depth)


def _summary_text(net: nn.Module, name: str, description: str, shape: tuple[int, ...],
                  aliases: dict[str, str], receptive: bool, note: str,
                  depth: int | None = None) -> str:
    rows = layer_rows(net, shape, depth)
    extra = f"; {note}" if note else ""
    head = f"{name}: {description}  (input 1x{'x'.join(map(str, shape))}{extra})"
    readable = {module: alias for alias, module in aliases.items()}
    fields = None
    if receptive:
        from cnnlab.inspect.receptive import receptive_fields

        measured = receptive_fields(net, shape)
        fields = [field_text(lf, shape[1:]) for lf in measured]
        if len(fields) != len(rows):
            raise CnnlabError("could not match the receptive fields to the layers")
    text = head + "\n" + format_summary(rows, sum(p.numel() for p in net.parameters()),
                                        readable, fields)
    if receptive:
        from cnnlab.inspect.receptive import reaches_padding

        h, w = shape[1:]
        if reaches_padding([lf.field.region(lf.centre, (h, w)) for lf in measured
                            if lf.field.size is not None], (h, w)):
            text += (f"\nrows or columns outside 0..{h - 1} / 0..{w - 1} lie in the zero "
                     "padding around the input")
    return text
