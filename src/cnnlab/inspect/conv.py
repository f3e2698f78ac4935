"""Convolution and pooling on small explicit inputs, with the output-size arithmetic.

The tutorials teach ``out = floor((in + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``;
:func:`output_size` computes it and :func:`explain_size` shows the sum with the numbers in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError

SEED_INPUT_5x5 = "3 4 6 5 7; 2 4 6 8 2; 1 6 7 8 4; 9 7 4 6 2; 3 7 5 4 1"
SEED_KERNEL_3x3 = "1 2 3; 4 5 6; 7 8 9"
SEED_INPUT_4x4 = "3 4 6 5; 2 4 6 8; 1 6 7 8; 9 7 4 6"


def parse_matrix(text: str, what: str) -> torch.Tensor:
    """Parse ``"1 2 3; 4 5 6"`` (rows by ';' or newline, values by spaces or commas)."""
    rows = [r for r in text.replace("\n", ";").split(";") if r.strip()]
    try:
        values = [[float(v) for v in r.replace(",", " ").split()] for r in rows]
    except ValueError as e:
        raise CnnlabError(f"{what} must be numbers like '1 2 3; 4 5 6' ({e})") from e
    if not values or any(len(r) != len(values[0]) for r in values) or not values[0]:
        raise CnnlabError(f"{what} must be a non-empty rectangle of numbers: every row as long")
    return torch.tensor(values, dtype=torch.float32)


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                dilation: int = 1) -> int:
    return math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1


def explain_size(axis: str, size: int, kernel: int, stride: int, padding: int) -> str:
    out = output_size(size, kernel, stride, padding)
    return (f"{axis}: floor(({size} + 2*{padding} - {kernel}) / {stride}) + 1 = {out}")


def _check(size: tuple[int, int], kernel: tuple[int, int], stride: int, padding: int) -> None:
    if stride < 1:
        raise CnnlabError(f"stride must be at least 1, got {stride}")
    if padding < 0:
        raise CnnlabError(f"padding must be 0 or more, got {padding}")
    for s, k in zip(size, kernel, strict=True):
        if output_size(s, k, stride, padding) < 1:
            raise CnnlabError(
                f"kernel {kernel[0]}x{kernel[1]} does not fit input {size[0]}x{size[1]} "
                f"with padding {padding}; use a smaller kernel or more padding"
            )


def conv2d(x: torch.Tensor, kernel: torch.Tensor, stride: int = 1, padding: int = 0
           ) -> torch.Tensor:
    """Cross-correlate a 2-D input with a 2-D kernel (one channel, no bias), as Conv2d does."""
    _check(tuple(x.shape), tuple(kernel.shape), stride, padding)
    return F.conv2d(x[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0]


def pool2d(x: torch.Tensor, kernel_size: int, stride: int | None = None, padding: int = 0,
           mode: str = "max") -> torch.Tensor:
    """Max or average pooling of a 2-D input; stride defaults to the kernel size."""
    stride = stride or kernel_size
    _check(tuple(x.shape), (kernel_size, kernel_size), stride, padding)
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


def format_matrix(t: torch.Tensor) -> str:
    """Integers print without a decimal point; others with up to 4 decimals."""
    is_int = bool(torch.all(t == t.round()))
    cells = [[f"{int(v)}" if is_int else f"{v:.4g}" for v in row.tolist()] for row in t]
    width = max(len(c) for row in cells for c in row)
    return "\n".join("[" + " ".join(c.rjust(width) for c in row) + "]" for row in cells)
