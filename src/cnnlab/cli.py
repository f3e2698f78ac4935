"""The ``cnnlab`` command: parses arguments, builds a config, calls the library.

Every user-facing failure arrives here as a :class:`CnnlabError` and is printed as one line
(``Error: ...``) with a non-zero exit; no traceback for mistakes a user can fix.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from cnnlab import __version__
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError


class _Group(click.Group):
    """Turn CnnlabError into click's one-line ``Error: ...`` and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CnnlabError as e:
            raise click.ClickException(str(e)) from None


def _console():
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:  # pipes and CI: wide enough that tables do not wrap
        console.width = 132
    return console


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(__version__, prog_name="cnnlab")
def cli() -> None:
    """Build, inspect, train, evaluate and visualise CNNs in PyTorch."""


# ----------------------------------------------------------------------------------- train
def _train_options(fn):
    """One --option per TrainConfig field, its help text and default taken from the field."""
    for f in reversed(dataclasses.fields(TrainConfig)):
        flag = "--" + f.name.replace("_", "-")
        shown = "" if f.default is None else f" [default: {f.default}]"
        help_text = f"{f.metadata['help']}{shown}"
        t = str(f.type)
        if t.startswith("bool"):
            opt = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)
        else:
            typ = int if t.startswith("int") else float if t.startswith("float") else str
            opt = click.option(flag, f.name, type=typ, default=None, help=help_text)
        fn = opt(fn)
    return fn


@cli.command()
@click.option("--recipe", "-r", help="named recipe from `cnnlab recipes`, or a .yaml path")
@click.option("--resume", type=click.Path(path_type=Path),
              help="continue the run in this directory from its last checkpoint")
@_train_options
def train(recipe: str | None, resume: Path | None, **overrides: Any) -> None:
    """Train a model; every option overrides the recipe (or the defaults).

    With no options: mnist-net on the embedded digits data (resized to 28x28), in seconds.
    """
    from cnnlab.config import build_config, load_run_config

    if resume is not None:
        if recipe:
            raise CnnlabError("--resume continues a run with its saved config; drop --recipe")
        cfg = build_config(None, overrides, base=load_run_config(resume))
        cfg.out = str(resume)
    else:
        if recipe is None and overrides["model"] is None and overrides["dataset"] is None:
            recipe = "default"  # `cnnlab train --epochs 3` is still the main job, shorter
        cfg = build_config(recipe, overrides)
    _run_training(cfg, resume)


def _run_training(cfg: TrainConfig, resume: Path | None) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from cnnlab.device import describe, resolve_device, resolve_precision
    from cnnlab.engine.train import fit

    console = _console()
    device = resolve_device(cfg.device)
    console.print(f"cnnlab train: [bold]{cfg.model}[/] on [bold]{cfg.dataset}[/], "
                  f"{cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr}, "
                  f"{cfg.schedule}, {resolve_precision(cfg.precision, device)} on "
                  f"{describe(device)}")
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), console=console, transient=True,
                   disable=not console.is_terminal)
    task = bar.add_task("", total=1, info="")
    epoch_no = [0]

    def progress(step: int, steps: int, loss: float) -> None:
        bar.update(task, total=steps, completed=step,
                   description=f"epoch {epoch_no[0] + 1}/{cfg.epochs}", info=f"loss {loss:.4f}")

    def on_epoch_end(m) -> None:
        epoch_no[0] = m.epoch
        console.print(
            f"epoch {m.epoch:>3}/{cfg.epochs}  loss {m.train_loss:.4f}  train acc "
            f"{m.train_acc:.4f}  test acc {m.test_acc:.4f}  lr {m.lr:.4g}  "
            f"{m.examples_per_sec:,.0f} ex/s  {m.epoch_time:.1f} s"
        )

    try:
        with bar:
            result = fit(cfg, resume, log=lambda m: console.print(f"[dim]{m}[/]"),
                         progress=progress, on_epoch_end=on_epoch_end)
    except KeyboardInterrupt:
        raise CnnlabError("interrupted; continue with `cnnlab train --resume RUN_DIR`") from None
    h = result.history
    table = Table(title=f"{cfg.model} on {cfg.dataset}", show_edge=False)
    for col in ("epoch", "train loss", "train acc", "test acc", "examples/s", "time (s)"):
        table.add_column(col, justify="right")
    for m in h:
        table.add_row(str(m.epoch), f"{m.train_loss:.4f}", f"{m.train_acc:.4f}",
                      f"{m.test_acc:.4f}", f"{m.examples_per_sec:,.0f}", f"{m.epoch_time:.1f}")
    console.print(table)
    total = sum(m.epoch_time for m in h)
    console.print(f"final test acc {h[-1].test_acc:.4f}; {total:.1f} s over {len(h)} epochs; "
                  f"run saved in {result.run_dir}")


@cli.command("bench")
@click.argument("model")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--data-dir", help="data root searched first")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", default="fp32", show_default=True, help="fp32 | bf16 | auto")
@click.option("--channels-last/--no-channels-last", default=None, help="[auto]")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True)
@click.option("--threads", type=int)
@click.option("--resize", type=int, help="resize the data to SIZE x SIZE")
@click.option("--channels", type=int, help="convert the data to 1 or 3 channels")
@click.option("--steps", type=int, default=50, show_default=True, help="timed steps")
@click.option("--warmup", type=int, default=10, show_default=True)
def bench_cmd(model: str, dataset: str, data_dir: str | None, batch_size: int, device: str,
              precision: str, channels_last: bool | None, compile_: bool, threads: int | None,
              resize: int | None, channels: int | None, steps: int, warmup: int) -> None:
    """Time forward+backward+step: steps/sec, examples/sec, ms/step and peak memory."""
    from cnnlab.config import build_config
    from cnnlab.engine.bench import bench

    if steps < 1 or warmup < 0:
        raise CnnlabError("--steps must be at least 1 and --warmup 0 or more")
    from cnnlab.data.registry import get_info
    from cnnlab.models import get_model_info

    # bench measures speed, so it fits known data to the model instead of refusing it
    want, have = get_model_info(model).input_shape, get_info(dataset).shape
    if have is not None:
        if resize is None and have[1:] != want[1:]:
            resize = want[1]
        if channels is None and have[0] != want[0]:
            channels = want[0]
    cfg = build_config(None, {"model": model, "dataset": dataset, "data_dir": data_dir,
                              "batch_size": batch_size, "device": device, "precision": precision,
                              "channels_last": channels_last, "compile": compile_,
                              "threads": threads, "resize": resize, "channels": channels})
    r = bench(cfg, steps, warmup)
    click.echo(f"{model} on {dataset}, batch {batch_size}, {r.precision}, "
               f"{'channels_last' if r.channels_last else 'contiguous'}"
               f"{', compiled' if compile_ else ''}, {r.device}")
    click.echo(f"{r.steps_per_sec:,.1f} steps/s  {r.examples_per_sec:,.0f} examples/s  "
               f"{r.ms_per_step:.2f} ms/step  peak memory {r.peak_memory_mb:,.0f} MB")


# ------------------------------------------------------------------------------ eval, plot
@cli.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--dataset", help="evaluate on this data set instead of the run's own")
@click.option("--data-dir", help="data root for --dataset")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--batch-size", type=int, default=1024, show_default=True)
@click.option("--resize", type=int, help="resize the data to SIZE x SIZE [the run's setting]")
@click.option("--channels", type=int, help="convert the data to 1 or 3 channels [the run's]")
def eval_cmd(run_dir: Path, dataset: str | None, data_dir: str | None, split: str,
             batch_size: int, resize: int | None, channels: int | None) -> None:
    """Accuracy, per-class accuracy and confusion matrix of a trained run."""
    from rich.table import Table

    from cnnlab.engine.evaluate import evaluate_run

    res, classes = evaluate_run(run_dir, dataset, data_dir, split, batch_size,
                                {"resize": resize, "channels": channels})
    console = _console()
    console.print(f"accuracy {res.accuracy:.4f}  loss {res.loss:.4f}  "
                  f"({int(res.confusion.sum())} examples, {split} split)")
    per = Table(title="per-class accuracy", show_edge=False)
    per.add_column("class")
    per.add_column("accuracy", justify="right")
    per.add_column("n", justify="right")
    for name, acc, n in zip(classes, res.per_class_accuracy(), res.confusion.sum(1).tolist(),
                            strict=True):
        per.add_row(name, f"{acc:.4f}", str(n))
    console.print(per)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)", show_edge=False)
    cm.add_column("")
    for i in range(len(classes)):
        cm.add_column(str(i), justify="right")
    for i, row in enumerate(res.confusion.tolist()):
        cm.add_row(f"{i} {classes[i]}", *[f"[bold]{v}[/]" if j == i else str(v)
                                          for j, v in enumerate(row)])
    console.print(cm)
    console.print(f"wrote {run_dir / f'eval-{split}.json'}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), help="PNG path [RUN_DIR/curves.png]")
def plot(run_dir: Path, out: Path | None) -> None:
    """Plot train loss, train acc and test acc per epoch (d2l's curves) to a PNG."""
    from cnnlab.config import load_run_config
    from cnnlab.engine.runlog import read_metrics
    from cnnlab.viz.plots import plot_curves

    load_run_config(run_dir)
    path = plot_curves(read_metrics(run_dir), out or run_dir / "curves.png")
    click.echo(f"wrote {path}")


# --------------------------------------------------------------------------------- inspect
def _parse_ints(text: str, n: int, what: str) -> tuple[int, ...]:
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
@click.option("--input", "input_shape", help="input shape C,H,W [the model's own]")
def summary(model: str, input_shape: str | None) -> None:
    """Print each layer's output shape and parameter count, like d2l's layer loop."""
    from cnnlab.inspect.summary import format_summary, layer_rows
    from cnnlab.models import create_model, get_model_info

    info = get_model_info(model)
    shape = _parse_ints(input_shape, 3, "--input") if input_shape else info.input_shape
    net = create_model(model)
    rows = layer_rows(net, shape)
    click.echo(f"{model}: {info.description}  (input 1x{'x'.join(map(str, shape))})")
    click.echo(format_summary(rows, sum(p.numel() for p in net.parameters())))


@cli.command()
@click.option("--input", "input_text", help="input matrix, rows by ';' [seed 003's 5x5 input]")
@click.option("--kernel", "kernel_text", help="kernel matrix [seed 003's 3x3 kernel 1..9]")
@click.option("--padding", type=int, default=0, show_default=True)
@click.option("--stride", type=int, default=1, show_default=True)
@click.option("--shape", help="instead: run nn.Conv2d on a random input of shape N,C,H,W")
@click.option("--out-channels", type=int, default=1, show_default=True, help="with --shape")
@click.option("--kernel-size", type=int, default=3, show_default=True, help="with --shape")
def conv(input_text: str | None, kernel_text: str | None, padding: int, stride: int,
         shape: str | None, out_channels: int, kernel_size: int) -> None:
    """Compute a 2-D convolution and show the output-size arithmetic."""
    from cnnlab.inspect import conv as C

    if shape:
        n, c, h, w = _parse_ints(shape, 4, "--shape")
        if out_channels < 1:
            raise CnnlabError(f"--out-channels must be at least 1, got {out_channels}")
        wshape, oshape = C.conv_shape((n, c, h, w), out_channels, kernel_size, stride, padding)
        click.echo(f"input  {list((n, c, h, w))}\nweight {list(wshape)}  (out, in, kH, kW)\n"
                   f"output {list(oshape)}")
        click.echo(C.explain_size("height", h, kernel_size, stride, padding))
        click.echo(C.explain_size("width ", w, kernel_size, stride, padding))
        return
    x = C.parse_matrix(input_text or C.SEED_INPUT_5x5, "--input")
    k = C.parse_matrix(kernel_text or C.SEED_KERNEL_3x3, "--kernel")
    out = C.conv2d(x, k, stride=stride, padding=padding)
    click.echo(f"input {x.shape[0]}x{x.shape[1]}, kernel {k.shape[0]}x{k.shape[1]}, "
               f"padding {padding}, stride {stride}")
    click.echo(C.explain_size("height", x.shape[0], k.shape[0], stride, padding))
    click.echo(C.explain_size("width ", x.shape[1], k.shape[1], stride, padding))
    click.echo(C.format_matrix(out))


@cli.command()
@click.option("--input", "input_text", help="input matrix, rows by ';' [seed 003's 4x4 input]")
@click.option("--kernel-size", type=int, default=2, show_default=True)
@click.option("--stride", type=int, help="[the kernel size]")
@click.option("--padding", type=int, default=0, show_default=True)
@click.option("--mode", type=click.Choice(["max", "avg"]), default="max", show_default=True)
def pool(input_text: str | None, kernel_size: int, stride: int | None, padding: int,
         mode: str) -> None:
    """Compute 2-D max or average pooling and show the output-size arithmetic."""
    from cnnlab.inspect import conv as C

    if kernel_size < 1:
        raise CnnlabError(f"--kernel-size must be at least 1, got {kernel_size}")
    x = C.parse_matrix(input_text or C.SEED_INPUT_4x4, "--input")
    s = stride or kernel_size
    out = C.pool2d(x, kernel_size, stride=s, padding=padding, mode=mode)
    click.echo(f"{mode} pooling: input {x.shape[0]}x{x.shape[1]}, kernel {kernel_size}, "
               f"stride {s}, padding {padding}")
    click.echo(C.explain_size("height", x.shape[0], kernel_size, s, padding))
    click.echo(C.explain_size("width ", x.shape[1], kernel_size, s, padding))
    click.echo(C.format_matrix(out))


# ------------------------------------------------------------------------------- catalogue
@cli.command()
def models() -> None:
    """List the models: name, input shape, parameters, where they come from."""
    from rich.table import Table

    from cnnlab.models import create_model, get_model_info, model_names

    table = Table(show_edge=False)
    for col in ("model", "input", "params", "layers", "from"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for name in model_names():
        info = get_model_info(name)
        n = sum(p.numel() for p in create_model(name).parameters())
        table.add_row(name, "x".join(map(str, info.input_shape)), f"{n:,}", info.description,
                      info.source)
    _console().print(table)


@cli.command()
@click.option("--data-dir", help="data root searched first")
def datasets(data_dir: str | None) -> None:
    """List the data sets: sizes, classes, and where their files are found."""
    from rich.markup import escape
    from rich.table import Table

    from cnnlab.data.locate import describe_location, search_roots
    from cnnlab.data.registry import dataset_names, get_info

    table = Table(show_edge=False)
    for col in ("data set", "shape", "train", "test", "classes", "found at"):
        table.add_column(col, justify="right" if col in ("train", "test") else "left")
    for name in dataset_names():
        info = get_info(name)
        where = describe_location(name, data_dir)
        where = "[red]not found[/]" if where == "not found" else escape(where)
        classes = ", ".join(info.classes[:4]) + " ..." if info.classes else "folder names"
        table.add_row(name, "x".join(map(str, info.shape)) if info.shape else "any",
                      f"{info.sizes['train']:,}" if info.sizes else "-",
                      f"{info.sizes['test']:,}" if info.sizes else "-", classes, where)
    console = _console()
    console.print(table)
    console.print("searched, in order: " + ", ".join(str(r) for r in search_roots(data_dir)))


@cli.command()
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path),
              help="where to put the files [user data dir/NAME]")
@click.option("--mirror", multiple=True, help="base URL to try instead of the built-in mirrors")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def download(name: str, directory: Path | None, mirror: tuple[str, ...], timeout: float) -> None:
    """Download a data set from its mirrors, checking md5 checksums."""
    from cnnlab.data.download import download_dataset
    from cnnlab.data.locate import default_download_dir

    target = directory or default_download_dir(name)
    path = download_dataset(name, target, mirror or None, timeout, log=click.echo)
    click.echo(f"{name} is in {path}")


@cli.command()
def recipes() -> None:
    """List the named recipes for `cnnlab train --recipe NAME`."""
    from cnnlab.config import recipe_description, recipe_names

    for name in recipe_names():
        click.echo(f"{name:<20} {recipe_description(name)}")


def main() -> None:
    try:
        cli(prog_name="cnnlab")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
