"""`cnnlab explain conv|pool|channels`: the operations on small grids of numbers."""

from __future__ import annotations

from pathlib import Path

import click

from cnnlab.cli.explain import explain
from cnnlab.cli.inspect import conv_operand_options

_OUT = "a .png picture, or a .gif animation with one frame per output number"


def frame_seconds_option(fn):
    """``--frame-seconds``: the pace of a .gif (0.7 s a frame by default; slower for a class)."""
    return click.option("--frame-seconds", type=float, default=None,
                        help="seconds each frame of a .gif shows [0.7; the last one 2.5]")(fn)


@explain.command()
@conv_operand_options
@click.option("--out", type=click.Path(path_type=Path), default=Path("explain-conv.png"),
              show_default=True, help=_OUT)
@frame_seconds_option
def conv(input_text: str | None, kernel_text: str | None, padding: int, stride: int,
         out: Path, frame_seconds: float | None) -> None:
    """A convolution drawn: the padded input, the kernel, the output, and (as a GIF) the
    kernel sliding, each step's products and their sum. The numbers are `cnnlab conv`'s."""
    from cnnlab.explain.grids import check_out
    from cnnlab.explain.ops import explain_conv
    from cnnlab.inspect.conv import conv_operands

    check_out(out)
    x, k, notes = conv_operands(input_text, kernel_text)
    path = explain_conv(x, k, padding, stride, out, frame_seconds)
    click.echo("\n".join([*notes, f"wrote {path}"]))


@explain.command()
@click.option("--input", "input_text",
              help="input matrix, rows separated by ';' (or n*n numbers in one row) "
                   "[the tutorial's 4x4 example]")
@click.option("--kernel-size", type=int, default=2, show_default=True, help="window size")
@click.option("--stride", type=int, help="[the kernel size]")
@click.option("--mode", type=click.Choice(["max", "avg"]), help="[both, side by side]")
@click.option("--out", type=click.Path(path_type=Path), default=Path("explain-pool.png"),
              show_default=True, help=_OUT)
@frame_seconds_option
def pool(input_text: str | None, kernel_size: int, stride: int | None, mode: str | None,
         out: Path, frame_seconds: float | None) -> None:
    """Max and average pooling drawn: every window, the number it keeps, the output; as a
    GIF, window by window. The numbers are `cnnlab pool`'s."""
    from cnnlab.explain.grids import check_out
    from cnnlab.explain.ops import explain_pool
    from cnnlab.inspect.conv import pool_operand

    check_out(out)
    x, notes = pool_operand(input_text)
    path = explain_pool(x, kernel_size, stride, mode, out, frame_seconds)
    click.echo("\n".join([*notes, f"wrote {path}"]))


@explain.command()
@click.option("--in-channels", type=int, default=3, show_default=True)
@click.option("--out-channels", type=int, default=2, show_default=True)
@click.option("--kernel-size", type=int, default=3, show_default=True)
@click.option("--size", type=int, default=5, show_default=True, help="input height and width")
@click.option("--seed", type=int, default=0, show_default=True,
              help="picks the small whole numbers of the input, kernels and biases")
@click.option("--out", type=click.Path(path_type=Path), default=Path("explain-channels.png"),
              show_default=True, help=_OUT)
@frame_seconds_option
def channels(in_channels: int, out_channels: int, kernel_size: int, size: int, seed: int,
             out: Path, frame_seconds: float | None) -> None:
    """A convolution over several channels drawn: one kernel per input channel, their results
    summed (plus a bias) into one output channel, one set of kernels per output channel, and
    the weight shape [out_channels, in_channels, k, k] (the tutorial's Conv2d(5, 10, 3):
    [10, 5, 3, 3])."""
    from cnnlab.explain.ops import explain_channels

    path = explain_channels(in_channels, out_channels, kernel_size, size, seed, out,
                            frame_seconds)
    click.echo(f"wrote {path}")
