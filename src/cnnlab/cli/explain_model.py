"""`cnnlab explain receptive-field|shapes MODEL`: pictures of a whole network.

MODEL is a registered model name (`cnnlab models`) or a run directory (its trained model and
input size); receptive fields and shapes do not depend on the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cnnlab.cli.explain import explain
from cnnlab.cli.options import layer_names
from cnnlab.errors import CnnlabError


def _model(target: str) -> tuple[Any, str, tuple[int, int, int], dict[str, str], Any]:
    """(module, model name, input shape, module name -> alias, LoadedRun or None)."""
    from cnnlab.models import create_model, get_model_info
    from cnnlab.run import RunDir, load_run

    if Path(target).exists():  # a run directory; a file (a .pt checkpoint) is refused
        RunDir(target).require()
        run = load_run(target, device="cpu")
        name = run.config.model
        run.require_images("`cnnlab explain` (receptive fields, shapes)")
        return (run.model.float(), name, run.preprocess.input_shape, _aliases(name), run)
    info = get_model_info(target)  # an unknown name lists the models
    if info.series:
        raise CnnlabError(f"`cnnlab explain` draws image models; '{target}' is a 1-D series "
                          f"model: see its layers with `cnnlab summary {target}`")
    return create_model(target), target, info.input_shape, _aliases(target), None


def _aliases(name: str) -> dict[str, str]:
    from cnnlab.models import get_model_info

    return {module: alias for alias, module in get_model_info(name).aliases.items()}


def _out(out: Path | None, default: str) -> Path:
    path = out or Path(default)
    if path.suffix.lower() != ".png":
        raise CnnlabError(f"--out must end in .png, got {path.name}")
    return path


@explain.command("receptive-field")
@click.argument("model")
@click.option("--image", type=click.Path(path_type=Path), help="draw on this image file")
@click.option("--index", type=int, help="draw on this test image of --dataset [0]")
@click.option("--dataset", help="the data set --index picks from [the run's, or digits]")
@click.option("--data-dir", help="data root for --dataset")
@click.option("--layer", "layers", multiple=True,
              help="layers to show, comma-separated or repeated [every conv and pool]")
@click.option("--out", type=click.Path(path_type=Path),
              help="PNG path [receptive-field-MODEL.png]")
def receptive_field(model: str, image: Path | None, index: int | None, dataset: str | None,
                    data_dir: str | None, layers: tuple[str, ...], out: Path | None) -> None:
    """The input square the centre unit of each layer sees, drawn on a real input."""
    from cnnlab.data.images import load_images
    from cnnlab.data.preprocess import Preprocess
    from cnnlab.explain.network import plot_receptive_field

    net, name, shape, aliases, run = _model(model)
    path = _out(out, f"receptive-field-{name}.png")
    pre = run.preprocess if run is not None else Preprocess(channels=shape[0], size=shape[1:])
    if image is not None and (index is not None or dataset):
        raise CnnlabError("give --image FILE or --index I [--dataset D], not both")
    if image is not None:
        images, labels = load_images([image], pre, invert="no")
    else:
        from cnnlab.data import load_split
        from cnnlab.data.registry import dataset_title

        dataset = dataset or (run.config.dataset if run is not None else "digits")
        root = data_dir if data_dir is not None else (run.config.data_dir if run else None)
        data = load_split(dataset, "test", root)
        shown = dataset_title(dataset, root)  # folder 'letters', not folder
        i = 0 if index is None else index
        if not 0 <= i < len(data):
            raise CnnlabError(f"--index {i} is out of range: the test split of {shown} has "
                              f"{len(data)} images (0..{len(data) - 1})")
        images, labels = pre.adapt(data.images[i:i + 1]), [f"{shown} #{i}"]
    chosen = layer_names(layers) if layers else None
    title = f"{name}: what the centre unit of each layer sees ({labels[0]})"
    click.echo(f"wrote {plot_receptive_field(net, name, images[0], path, chosen, aliases, title)}")


@explain.command()
@click.argument("model")
@click.option("--input", "input_shape", help="input shape C,H,W [the model's own]")
@click.option("--out", type=click.Path(path_type=Path), help="PNG path [shapes-MODEL.png]")
def shapes(model: str, input_shape: str | None, out: Path | None) -> None:
    """A diagram of the network: each layer's output C x H x W and parameters."""
    from cnnlab.cli.inspect import parse_ints
    from cnnlab.explain.network import plot_shapes

    net, name, shape, aliases, _ = _model(model)
    if input_shape:
        shape = parse_ints(input_shape, 3, "--input")
    path = _out(out, f"shapes-{name}.png")
    click.echo(f"wrote {plot_shapes(net, name, shape, path, aliases)}")
