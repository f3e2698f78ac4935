"""Convolution and pooling on small explicit inputs, with the output-size arithmetic.

The tutorials teach ``out = floor((in + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``;
:func:`output_size` computes it and :func:`explain_size` shows the sum with the numbers in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError

TUTORIAL_INPUT_5x5 = "3 4 6 5 7; 2 4 6 8 2; 1 6 7 8 4; 9 7 4 6 2; 3 7 5 4 1"
TUTORIAL_KERNEL_3x3 = "1 2 3; 4 5 6; 7 8 9"
TUTORIAL_INPUT_4x4 = "3 4 6 5; 2 4 6 8; 1 6 7 8; 9 7 4 6"


def parse_matrix(text: str, what: str) -> tuple[torch.Tensor, str | None]:
    """Parse ``"1 2 3; 4 5 6"`` (rows by ';' or newline, values by spaces or commas).

    A single row whose length is a perfect square n*n (n > 1) is read as n x n, the way the
    tutorial writes its 5x5 input as 25 numbers before ``.view(1, 1, 5, 5)``; the second
    value returned then says so. Rows of different lengths are refused.
    """
    rows = [r for r in text.replace("\n", ";").split(";") if r.strip()]
    try:
        values = [[float(v) for v in r.replace(",", " ").split()] for r in rows]
    except ValueError as e:
        raise CnnlabError(f"{what} must be numbers like '1 2 3; 4 5 6' ({e})") from e
    if not values or not values[0]:
        raise CnnlabError(f"{what} is empty; give numbers like '1 2 3; 4 5 6'")
    lengths = [len(r) for r in values]
    if len(set(lengths)) > 1:
        raise CnnlabError(f"{what} has rows of different lengths ({', '.join(map(str, lengths))}); "
                          "every row needs as many numbers, rows separated by ';'")
    note = None
    if len(values) == 1 and len(values[0]) > 1:
        n = math.isqrt(len(values[0]))
        if n > 1 and n * n == len(values[0]):
            values = [values[0][k * n:(k + 1) * n] for k in range(n)]
            note = (f"{what}: read {n * n} numbers in one row as {n}x{n} (row by row, like "
                    f".view(1, 1, {n}, {n})); separate rows with ';' to give another shape")
    return torch.tensor(values, dtype=torch.float32), note


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                dilation: int = 1) -> int:
    return math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1


def explain_size(axis: str, size: int, kernel: int, stride: int, padding: int) -> str:
    out = output_size(size, kernel, stride, padding)
    return (f"{axis}: floor(({size} + 2*{padding} - {kernel}) / {stride}) + 1 = {out}")


def _check(size: tuple[int, int], kernel: tuple[int, int], stride: int, padding: int,
           can_pad: bool = True) -> None:
    if stride < 1:
        raise CnnlabError(f"stride must be at least 1, got {stride}")
    if padding < 0:
        raise CnnlabError(f"padding must be 0 or more, got {padding}")
    for s, k in zip(size, kernel, strict=True):
        if output_size(s, k, stride, padding) < 1:
            raise CnnlabError(
                f"kernel {kernel[0]}x{kernel[1]} does not fit input {size[0]}x{size[1]} "
                f"with padding {padding}; use a smaller kernel"
                + (", a larger input or more padding" if can_pad else " or a larger input")
            )


def conv2d(x: torch.Tensor, kernel: torch.Tensor, stride: int = 1, padding: int = 0
           ) -> torch.Tensor:
    """Cross-correlate a 2-D input with a 2-D kernel (one channel, no bias), as Conv2d does."""
    _check(tuple(x.shape), tuple(kernel.shape), stride, padding)
    return F.conv2d(x[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0]


def pool2d(x: torch.Tensor, kernel_size: int, stride: int | None = None, padding: int = 0,
           mode: str = "max") -> torch.Tensor:
    """Max or average pooling of a 2-D input; stride defaults to the kernel size."""
    if kernel_size < 1:
        raise CnnlabError(f"--kernel-size must be at least 1, got {kernel_size}")
    stride = kernel_size if stride is None else stride
    _check(tuple(x.shape), (kernel_size, kernel_size), stride, padding, can_pad=False)
    if padding * 2 > kernel_size:
        raise CnnlabError(f"padding {padding} must be at most half the kernel size {kernel_size}")
    fn = {"max": F.max_pool2d, "avg": F.avg_pool2d}.get(mode)
    if fn is None:
        raise CnnlabError(f"unknown pooling mode '{mode}'; choose max or avg")
    return fn(x[None, None], kernel_size, stride=stride, padding=padding)[0, 0]


def conv_shape(in_shape: tuple[int, int, int, int], out_channels: int, kernel_size: int,
               stride: int = 1, padding: int = 0) -> tuple[torch.Size, torch.Size]:
    """Run ``nn.Conv2d`` on a random input of ``in_shape``; return (weight shape, output shape)."""
    n, c, h, w = in_shape
    _check((h, w), (kernel_size, kernel_size), stride, padding)
    layer = torch.nn.Conv2d(c, out_channels, kernel_size, stride=stride, padding=padding)
    with torch.no_grad():
        out = layer(torch.randn(n, c, h, w))
    return layer.weight.shape, out.shape


def number_format(t: torch.Tensor) -> Callable[[float], str]:
    """How the numbers of ``t`` print: all whole, without a decimal point; else up to 4
    significant digits (and never as -0)."""
    if bool(torch.all(t == t.round())):
        return lambda v: f"{int(v)}"
    return lambda v: f"{v + 0.0:.4g}"   # + 0.0: -0.0 prints as 0


def format_matrix(t: torch.Tensor) -> str:
    """Integers print without a decimal point; others with up to 4 decimals."""
    fmt = number_format(t)
    cells = [[fmt(v) for v in row.tolist()] for row in t]
    width = max(len(c) for row in cells for c in row)
    return "\n".join("[" + " ".join(c.rjust(width) for c in row) + "]" for row in cells)


def conv_operands(input_text: str | None, kernel_text: str | None
                  ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The input and kernel matrices `cnnlab conv` and `cnnlab explain conv` work on, and the
    notes on how they were read. Without a text, the tutorial's 5x5 example and its 3x3
    kernel."""
    x, x_note = parse_matrix(input_text or TUTORIAL_INPUT_5x5, "--input")
    k, k_note = parse_matrix(kernel_text or TUTORIAL_KERNEL_3x3, "--kernel")
    return x, k, [n for n in (x_note, k_note) if n]


def pool_operand(input_text: str | None) -> tuple[torch.Tensor, list[str]]:
    """The input matrix of `cnnlab pool` and `cnnlab explain pool` (the tutorial's 4x4
    without a text) and the notes on how it was read."""
    x, note = parse_matrix(input_text or TUTORIAL_INPUT_4x4, "--input")
    return x, [note] if note else []


def conv_report(input_text: str | None, kernel_text: str | None, padding: int = 0,
                stride: int = 1) -> list[str]:
    """What `cnnlab conv` prints: the sizes, their arithmetic and the output matrix.
    Without an input or kernel, the tutorial's 5x5 example and its 3x3 kernel."""
    x, k, notes = conv_operands(input_text, kernel_text)
    out = conv2d(x, k, stride=stride, padding=padding)
    return notes + [
        f"input {x.shape[0]}x{x.shape[1]}, kernel {k.shape[0]}x{k.shape[1]}, "
        f"padding {padding}, stride {stride}",
        explain_size("height", x.shape[0], k.shape[0], stride, padding),
        explain_size("width ", x.shape[1], k.shape[1], stride, padding),
        format_matrix(out)]


def layer_shape_report(shape: tuple[int, int, int, int], out_channels: int, kernel_size: int,
                       stride: int = 1, padding: int = 0) -> list[str]:
    """What `cnnlab conv --shape N,C,H,W` prints: nn.Conv2d's weight and output shapes."""
    if out_channels < 1:
        raise CnnlabError(f"--out-channels must be at least 1, got {out_channels}")
    n, c, h, w = shape
    wshape, oshape = conv_shape(shape, out_channels, kernel_size, stride, padding)
    return [f"input  {list((n, c, h, w))}", f"weight {list(wshape)}  (out, in, kH, kW)",
            f"output {list(oshape)}", explain_size("height", h, kernel_size, stride, padding),
            explain_size("width ", w, kernel_size, stride, padding)]


def pool_report(input_text: str | None, kernel_size: int = 2, stride: int | None = None,
                padding: int = 0, mode: str = "max") -> list[str]:
    """What `cnnlab pool` prints; without an input, the tutorial's 4x4 example."""
    x, notes = pool_operand(input_text)
    s = kernel_size if stride is None else stride
    out = pool2d(x, kernel_size, stride=s, padding=padding, mode=mode)
    return notes + [
        f"{mode} pooling: input {x.shape[0]}x{x.shape[1]}, kernel {kernel_size}, "
        f"stride {s}, padding {padding}",
        explain_size("height", x.shape[0], kernel_size, s, padding),
        explain_size("width ", x.shape[1], kernel_size, s, padding),
        format_matrix(out)]
