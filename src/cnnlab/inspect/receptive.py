"""Receptive fields, measured on the model itself.

For each layer: the receptive field (how many input pixels one output unit sees), the
effective stride or *jump* (how far apart, in input pixels, two neighbouring units look) and
the input region a given unit sees. The textbook recurrence (``r += (k - 1) * j; j *= s``)
only follows a chain of layers; an Inception block's branches or a residual skip break it.
So the fields are measured instead, on a linearised copy of the model: every convolution gets
positive weights and no bias, max pooling becomes average pooling over the same window (a
max sends its gradient to one pixel), batch norm becomes the identity. Then every path from
an input pixel to an output unit carries a positive amount, and the gradient of one unit
with respect to the input is non-zero exactly on the pixels it sees: padding, stride,
dilation, pooling, branches and skips are all taken into account, with no table of rules.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import CnnlabError

MAX_SIZE = 2048  # the largest probe input, per side


@dataclass(frozen=True)
class Field:
    """The receptive field of a layer's units: ``size`` (rows, cols) pixels, ``jump`` (rows,
    cols) between neighbouring units, and ``start``: the first input pixel unit (0, 0) sees
    (negative: the field starts in the zero padding). ``size`` None: every unit sees the
    whole input (after a flatten, a linear layer or a global pooling)."""

    size: tuple[int, int] | None
    jump: tuple[int, int] = (1, 1)
    start: tuple[int, int] = (0, 0)

    def region(self, unit: tuple[int, int], input_hw: tuple[int, int]
               ) -> tuple[tuple[int, int], tuple[int, int]]:
        """((row0, row1), (col0, col1)), end exclusive, of the pixels ``unit`` sees; may
        reach past the image into the padding."""
        if self.size is None:
            return (0, input_hw[0]), (0, input_hw[1])
        r0 = self.start[0] + unit[0] * self.jump[0]
        c0 = self.start[1] + unit[1] * self.jump[1]
        return (r0, r0 + self.size[0]), (c0, c0 + self.size[1])


@dataclass(frozen=True)
class LayerField:
    name: str
    kind: str
    output_shape: tuple[int, ...]  # (C, H, W) or (features,) for the real input size
    field: Field

    @property
    def centre(self) -> tuple[int, int]:
        """The unit in the middle of the layer's output map (what pictures show)."""
        if len(self.output_shape) != 3:
            return (0, 0)
        return (self.output_shape[1] // 2, self.output_shape[2] // 2)


class _Stop(Exception):
    """Raised from a hook to end the probe pass once the maps are flattened."""


def linearised(model: nn.Module) -> nn.Module:
    """A float64 eval copy in which every input pixel's path to an output unit is positive."""
    m = copy.deepcopy(model).double().eval()
    for name, mod in list(m.named_modules()):
        if isinstance(mod, nn.MaxPool2d):
            if mod.dilation not in (1, (1, 1)):
                raise CnnlabError(f"dilated max pooling ({name}) is not supported here")
            _replace(m, name, nn.AvgPool2d(mod.kernel_size, mod.stride, mod.padding,
                                           mod.ceil_mode, count_include_pad=True))
        elif isinstance(mod, nn.AdaptiveMaxPool2d):
            _replace(m, name, nn.AdaptiveAvgPool2d(mod.output_size))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.fill_(1.0 / fan_in)  # positive, and sums stay near 1 with depth
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.reset_parameters()  # weight 1, bias 0; running mean 0, var 1
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _leaves(model: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in model.named_modules() if n and not list(m.children())}


def _record(model: nn.Module, x: torch.Tensor, stop_at_flat: bool
            ) -> list[tuple[str, str, torch.Tensor]]:
    """(name, kind, output) of every leaf call in call order; with ``stop_at_flat`` the pass
    ends at the first output that is not a feature map (the probe input is too big for the
    classifier)."""
    names = _leaves(model)
    calls: list[tuple[str, str, torch.Tensor]] = []

    def hook(mod: nn.Module, _inp: object, out: object) -> None:
        if not isinstance(out, torch.Tensor):
            return
        calls.append((names[mod], type(mod).__name__, out))
        if stop_at_flat and out.dim() != 4:
            raise _Stop

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return calls


def _bbox(grad: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int], bool]:
    """(first row, first col), (rows, cols) of the non-zero gradient; and whether it touches
    the probe input's border (the field may be cut off)."""
    seen = grad.abs().sum(dim=(0, 1)) > 0
    rows = seen.any(1).nonzero()[:, 0]
    cols = seen.any(0).nonzero()[:, 0]
    if len(rows) == 0:
        raise CnnlabError("a layer's output does not depend on the input; cannot measure it")
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    touches = r0 == 0 or c0 == 0 or r1 == seen.shape[0] or c1 == seen.shape[1]
    return (r0, c0), (r1 - r0, c1 - c0), touches


def reaches_padding(regions: list[tuple[tuple[int, int], tuple[int, int]]],
                    input_hw: tuple[int, int]) -> bool:
    """Whether any ``((row0, row1), (col0, col1))`` region (from :meth:`Field.region`)
    reaches past the input, into the zero padding around it."""
    h, w = input_hw
    return any(r0 < 0 or c0 < 0 or r1 > h or c1 > w for (r0, r1), (c0, c1) in regions)


def receptive_fields(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerField]:
    """The field of every leaf layer call, in call order (a module called twice appears
    twice, as in `cnnlab summary`)."""
    c, h, w = input_shape
    with torch.no_grad():
        real = [(n, k, tuple(o.shape[1:])) for n, k, o in
                _record(copy.deepcopy(model).eval(), torch.rand(1, c, h, w), False)]
    lin = linearised(model)
    fields: list[Field | None] = [None] * len(real)
    size = max(h, w) * 3
    pending = [i for i, (_, _, shape) in enumerate(real) if len(shape) == 3]
    while pending:
        x = torch.ones(1, c, size, size, dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            calls = _record(lin, x, stop_at_flat=True)
        retry = []
        for i in pending:
            if i >= len(calls) or calls[i][2].dim() != 4:
                fields[i] = Field(None)
                continue
            out = calls[i][2]
            oh, ow = out.shape[2:]
            if oh < 2 or ow < 2:  # one unit for the whole probe: a global pooling
                fields[i] = Field(None)
                continue
            u = (oh // 2 - 1, ow // 2 - 1)
            starts, sizes, cut = [], [], False
            for du in (0, 1):  # the unit and its diagonal neighbour: size and jump
                (g,) = torch.autograd.grad(out[0, :, u[0] + du, u[1] + du].sum(), x,
                                           retain_graph=True)
                s, sz, touches = _bbox(g)
                starts.append(s)
                sizes.append(sz)
                cut = cut or touches
            if cut and size < MAX_SIZE:
                retry.append(i)
                continue
            if cut:
                fields[i] = Field(None)
                continue
            jump = (starts[1][0] - starts[0][0], starts[1][1] - starts[0][1])
            start = (starts[0][0] - u[0] * jump[0], starts[0][1] - u[1] * jump[1])
            fields[i] = Field(sizes[0], jump, start)
        pending, size = retry, size * 2
    return [LayerField(n, k, shape, f if f is not None else Field(None))
            for (n, k, shape), f in zip(real, fields, strict=True)]
