"""`cnnlab visualize ...`: pictures of what a trained run learned and where it looks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cnnlab.cli import cli
from cnnlab.cli.options import layer_names


@cli.group()
def visualize() -> None:
    """Pictures of a trained run: filters, feature maps, Grad-CAM and saliency maps (images);
    class activation maps over time (series)."""


def input_options(fn: Callable) -> Callable:
    """--index / --class / --image / --split / --data-dir: the inputs a picture is about."""
    for opt in reversed([
        click.option("--index", "indices", type=int, multiple=True,
                     help="an image of the run's data set by index (repeatable)"),
        click.option("--class", "classes", multiple=True,
                     help="the first image of this class (name or number), e.g. Pullover"),
        click.option("--image", "images", multiple=True, type=click.Path(path_type=Path),
                     help="an image file (PNG, JPEG, ...), resized to the model's input"),
        click.option("--split", type=click.Choice(["test", "train"]), default="test",
                     show_default=True, help="split --index and --class pick from"),
        click.option("--data-dir", help="data root for the run's data set"),
    ]):
        fn = opt(fn)
    return fn


def _examples(run: Any, indices: tuple[int, ...], classes: tuple[str, ...],
              images: tuple[Path, ...], split: str, data_dir: str | None) -> Any:
    from cnnlab.viz.inside import pick_examples

    return pick_examples(run, indices, classes, split, data_dir, images)


@visualize.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--layer", help="a conv layer (`cnnlab summary MODEL` names them) [the first]")
@click.option("--out", type=click.Path(path_type=Path), help="PNG path [RUN_DIR/filters-LAYER.png]")
def filters(run_dir: Path, layer: str | None, out: Path | None) -> None:
    """The kernels of a conv layer as a grid of tiles."""
    from cnnlab.run import load_run
    from cnnlab.viz.inside import plot_filters

    click.echo(f"wrote {plot_filters(load_run(run_dir, device='cpu'), layer, out)}")


@visualize.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--layer", "layers", required=True, multiple=True,
              help="layers to show, comma-separated or repeated, e.g. conv1,conv2")
@input_options
@click.option("--out", type=click.Path(path_type=Path),
              help="PNG path [RUN_DIR/activations.png]")
def activations(run_dir: Path, layers: tuple[str, ...], indices: tuple[int, ...], classes: tuple[str, ...],
                images: tuple[Path, ...], split: str, data_dir: str | None,
                out: Path | None) -> None:
    """The input and the feature maps each layer produces, one row per input."""
    from cnnlab.models import find_layer
    from cnnlab.run import load_run
    from cnnlab.viz.inside import plot_activations

    run = load_run(run_dir, device="cpu")
    names = layer_names(layers)
    for name in names:  # a wrong layer is said before a missing input
        find_layer(run.config.model, run.model, name)
    ex = _examples(run, indices, classes, images, split, data_dir)
    click.echo(f"wrote {plot_activations(run, names, ex.images, ex.labels, out)}")


def _attribution_command(method: str) -> Callable:
    def command(run_dir: Path, indices: tuple[int, ...], classes: tuple[str, ...],
                images: tuple[Path, ...], split: str, data_dir: str | None, target: str | None,
                scale: str, out: Path | None, layer: str | None = None) -> None:
        from cnnlab.models import find_layer
        from cnnlab.run import load_run
        from cnnlab.viz.attribution import attribute, plot_attribution

        run = load_run(run_dir, device="cpu")
        if layer is not None:  # a wrong layer is said before a missing input
            find_layer(run.config.model, run.model, layer)
        ex = _examples(run, indices, classes, images, split, data_dir)
        result = attribute(run, ex.images, method, layer, target, scale)
        if any(result.flat):
            click.echo(f"note: {sum(result.flat)} map(s) are flat (the same value everywhere: "
                       "nothing to show); drawn as zeros", err=True)
        click.echo(f"wrote {plot_attribution(run, ex, result, out)}")

    return command


_TARGET = click.option("--target", help="the class to explain (name or number) [the predicted]")
_SCALE = click.option("--scale", type=click.Choice(["image", "raw"]), default="image",
                      show_default=True,
                      help="image: each map stretched to 0..1; raw: the values, comparable "
                           "across images")


@visualize.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@input_options
@click.option("--layer", help="a layer with feature maps [the last one before the classifier]")
@_TARGET
@_SCALE
@click.option("--out", type=click.Path(path_type=Path), help="PNG path [RUN_DIR/gradcam.png]")
def gradcam(**kwargs: Any) -> None:
    """Grad-CAM: which regions raise the target class's logit, over each input."""
    _attribution_command("gradcam")(**kwargs)


@visualize.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@input_options
@_TARGET
@_SCALE
@click.option("--out", type=click.Path(path_type=Path), help="PNG path [RUN_DIR/saliency.png]")
def saliency(**kwargs: Any) -> None:
    """Saliency: how strongly each input pixel moves the target class's logit."""
    _attribution_command("saliency")(**kwargs)


@visualize.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--index", "indices", type=int, multiple=True,
              help="a series of the run's data set by index (repeatable)")
@click.option("--class", "classes", multiple=True,
              help="the first --per-class series of this class (name or number; repeatable)")
@click.option("--per-class", type=int, default=2, show_default=True,
              help="series per class (without --index/--class: of every class)")
@click.option("--limit", type=int, default=8, show_default=True,
              help="at most this many series when choosing by default")
@click.option("--split", type=click.Choice(["test", "train"]), default="test",
              show_default=True)
@click.option("--data-dir", help="data root for the run's data set")
@_TARGET
@click.option("--out", type=click.Path(path_type=Path), help="PNG path [RUN_DIR/cam.png]")
def cam(run_dir: Path, indices: tuple[int, ...], classes: tuple[str, ...], per_class: int,
        limit: int, split: str, data_dir: str | None, target: str | None,
        out: Path | None) -> None:
    """Class activation maps over time (series runs of fcn/resnet1d): each series coloured
    by how much each part of it raised the class's score."""
    from cnnlab.run import load_run
    from cnnlab.viz.series import plot_run_cam

    run = load_run(run_dir, device="cpu")
    path = plot_run_cam(run, out, split, indices, classes, per_class, limit, target, data_dir)
    click.echo(f"wrote {path}")
