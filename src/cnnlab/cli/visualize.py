"""`cnnlab visualize ...`: pictures of what a trained run learned."""

from __future__ import annotations

from pathlib import Path

import click

from cnnlab.cli import cli


@cli.group()
def visualize() -> None:
    """Pictures of a trained run: its filters and the feature maps its layers produce."""


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
@click.option("--layer", "layers", required=True,
              help="layers to show, comma-separated, e.g. conv1,conv2")
@click.option("--index", "indices", type=int, multiple=True, help="a test image by index")
@click.option("--class", "classes", multiple=True,
              help="the first test image of this class (name or number), e.g. Pullover")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--data-dir", help="data root for the run's data set")
@click.option("--out", type=click.Path(path_type=Path),
              help="PNG path [RUN_DIR/activations.png]")
def activations(run_dir: Path, layers: str, indices: tuple[int, ...], classes: tuple[str, ...],
                split: str, data_dir: str | None, out: Path | None) -> None:
    """The input and the feature maps each layer produces, one row per input."""
    from cnnlab.run import load_run
    from cnnlab.viz.inside import pick_examples, plot_activations

    run = load_run(run_dir, device="cpu")
    names = [n.strip() for n in layers.split(",") if n.strip()]
    images, labels = pick_examples(run, indices, classes, split, data_dir)
    click.echo(f"wrote {plot_activations(run, names, images, labels, out)}")
