"""Commands that look at a network or an operation: `summary`, `conv`, `pool`."""

from __future__ import annotations

from typing import Any

import click

from cnnlab.cli import cli
from cnnlab.errors import CnnlabError


def parse_ints(text: str, n: int, what: str) -> tuple[int, ...]:
    """``"3,32,32"`` (or ``3x32x32``) -> (3, 32, 32); exactly ``n`` positive integers."""
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        vals = ()
    if len(vals) != n or any(v < 1 for v in vals):
        raise CnnlabError(f"{what} must be {n} positive integers like "
                          f"{','.join(['3', '32', '32', '1'][:n])}, got '{text}'")
    return vals


@cli.command()
@click.argument("model")
@click.option("--input", "input_shape",
              help="input shape C,H,W; a series model: C,L [the model's own]")
@click.option("--receptive-field", "receptive", is_flag=True,
              help="also each layer's receptive field, jump (effective stride) and the input "
                   "region its centre unit sees")
@click.option("--depth", type=int,
              help="one row per module this many levels down, a block as one row (1: the "
                   "top-level modules, as d2l's `for layer in net` loop prints them) "
                   "[every leaf layer]")
def summary(model: str, input_shape: str | None, receptive: bool, depth: int | None) -> None:
    """Print each layer's output shape and parameter count, like d2l's layer loop.

    MODEL is a model name (`cnnlab models`) or a run directory (its trained model, at the
    input shape it was trained on)."""
    from pathlib import Path

    from cnnlab.inspect.summary import model_summary, run_summary
    from cnnlab.models import get_model_info, model_names

    if model not in model_names() and Path(model).exists():
        if input_shape:
            raise CnnlabError("--input applies to a model name; a run directory has its own "
                              "input shape")
        click.echo(run_summary(model, receptive, depth))
        return
    n = 2 if get_model_info(model).series else 3
    shape = parse_ints(input_shape, n, "--input") if input_shape else None
    click.echo(model_summary(model, shape, receptive, depth))


def conv_operand_options(fn: Any) -> Any:
    """--input / --kernel / --padding / --stride, shared by `conv` and `explain conv`."""
    for opt in reversed([
        click.option("--input", "input_text",
                     help="input matrix, rows separated by ';' (or n*n numbers in one row) "
                          "[the tutorial's 5x5 example]"),
        click.option("--kernel", "kernel_text",
                     help="kernel matrix [the tutorial's 3x3 kernel 1..9]"),
        click.option("--padding", type=int, default=0, show_default=True),
        click.option("--stride", type=int, default=1, show_default=True),
    ]):
        fn = opt(fn)
    return fn


@cli.command()
@conv_operand_options
@click.option("--shape", help="instead: run nn.Conv2d on a random input of shape N,C,H,W")
@click.option("--out-channels", type=int, help="with --shape  [default: 1]")
@click.option("--kernel-size", type=int, help="with --shape  [default: 3]")
def conv(input_text: str | None, kernel_text: str | None, padding: int, stride: int,
         shape: str | None, out_channels: int | None, kernel_size: int | None) -> None:
    """Compute a 2-D convolution and show the output-size arithmetic."""
    from cnnlab.inspect import conv as C

    if shape:
        if input_text or kernel_text:
            raise CnnlabError("give either --shape (a layer on a random input) or --input/"
                              "--kernel (a matrix worked by hand), not both")
        lines = C.layer_shape_report(parse_ints(shape, 4, "--shape"), out_channels or 1,
                                     kernel_size or 3, stride, padding)
    elif kernel_size is not None or out_channels is not None:
        raise CnnlabError("--kernel-size and --out-channels go with --shape N,C,H,W; for a "
                          "matrix, give the kernel itself: --kernel '1,0;0,1'")
    else:
        lines = C.conv_report(input_text, kernel_text, padding, stride)
    click.echo("\n".join(lines))


@cli.command()
@click.option("--input", "input_text",
              help="input matrix, rows separated by ';' (or n*n numbers in one row) "
                   "[the tutorial's 4x4 example]")
@click.option("--kernel-size", type=int, default=2, show_default=True)
@click.option("--stride", type=int, help="[the kernel size]")
@click.option("--padding", type=int, default=0, show_default=True)
@click.option("--mode", type=click.Choice(["max", "avg"]), default="max", show_default=True)
def pool(input_text: str | None, kernel_size: int, stride: int | None, padding: int,
         mode: str) -> None:
    """Compute 2-D max or average pooling and show the output-size arithmetic."""
    from cnnlab.inspect.conv import pool_report

    click.echo("\n".join(pool_report(input_text, kernel_size, stride, padding, mode)))
