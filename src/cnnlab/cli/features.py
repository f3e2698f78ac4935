"""`cnnlab features RUN --out F.npz`, `cnnlab features map F.npz` and `cnnlab probe`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from cnnlab.cli import cli
from cnnlab.cli.console import console


class _ExtractByDefault(click.Group):
    """`cnnlab features RUN ...` means `cnnlab features extract RUN ...`; `map` is the one
    other subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["extract", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_ExtractByDefault)
def features() -> None:
    """Feature vectors of a trained run (`features RUN --out F.npz`) and their 2-D map
    (`features map F.npz`)."""


@features.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="the .npz to write")
@click.option("--layer", help="a layer name (`cnnlab summary MODEL`); feature maps are "
              "averaged to one value per channel [the penultimate: the last linear layer's input]")
@click.option("--dataset", help="another data set's images [the run's own]")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--data-dir", help="data root for the data set")
@click.option("--limit", type=int, help="a fixed random subset of this many images")
def extract(run_dir: Path, out: Path, layer: str | None, dataset: str | None, split: str,
            data_dir: str | None, limit: int | None) -> None:
    """One feature row per image, with its label, to an .npz file."""
    from cnnlab.engine.features import extract_split
    from cnnlab.run import load_run

    if out.suffix != ".npz":
        raise click.ClickException(f"--out must end in .npz, got {out.name}")
    feats = extract_split(load_run(run_dir), layer, dataset, split, data_dir, limit)
    feats.save(out)
    click.echo(f"wrote {out}: {feats.features.shape[0]} rows of {feats.features.shape[1]} "
               f"features ({feats.layer}, {feats.dataset_title()} {split})")


@features.command("map")
@click.argument("npz", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True)
@click.option("--limit", type=int, default=3000, show_default=True,
              help="plot at most this many points (a fixed random subset)")
@click.option("--out", type=click.Path(path_type=Path), help="PNG path [NPZ with -METHOD.png]")
def map_cmd(npz: Path, method: str, limit: int, out: Path | None) -> None:
    """A 2-D map of the features, coloured by class."""
    from cnnlab.engine.features import Features
    from cnnlab.viz.feature_map import plot_feature_map
    from cnnlab.viz.plots import check_png_path

    if limit < 3:
        raise click.ClickException(f"--limit must be at least 3, got {limit}")
    feats = Features.load(npz)
    out = out or npz.with_name(f"{npz.stem}-{method}.png")
    check_png_path(out)  # before t-SNE's minute, not after it
    if method == "tsne":  # the slow one: say what is happening before the wait
        n = min(limit, len(feats.labels))
        click.echo(f"t-SNE of {n:,} points (this can take a minute; --limit for fewer) ...",
                   err=True)
    click.echo(f"wrote {plot_feature_map(feats, out, method, limit)}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, help="the data set to probe (any number of classes)")
@click.option("--layer", help="a layer name [the penultimate]")
@click.option("--data-dir", help="data root for the data set")
@click.option("--limit-train", type=int, default=10000, show_default=True,
              help="train the probe on a fixed random subset of this many images")
@click.option("--limit-test", type=int, help="score it on at most this many test images")
@click.option("--pixels/--no-pixels", default=True, show_default=True,
              help="also fit the probe on raw pixels, for comparison")
def probe(run_dir: Path, dataset: str, layer: str | None, data_dir: str | None,
          limit_train: int, limit_test: int | None, pixels: bool) -> None:
    """A linear probe: logistic regression on the run's frozen features of another data set.

    The tutorials' feature-extraction lesson: how much of what a network learned on one
    data set carries over to another?
    """
    from cnnlab.engine.features import probe as run_probe
    from cnnlab.run import load_run

    res = run_probe(load_run(run_dir), dataset, layer, data_dir, limit_train, limit_test, pixels)
    con = console()
    con.print(f"linear probe on {res.title or res.dataset}: {res.dims} features at {res.layer}, "
              f"{res.train_examples} train / {res.test_examples} test images")
    con.print(Text.assemble("  test accuracy  ", (f"{res.accuracy:.4f}", "bold")))
    if res.pixel_accuracy is not None:
        con.print(f"  raw pixels     {res.pixel_accuracy:.4f}  (the same classifier on the "
                  "images themselves)")
    con.print(f"  chance         {res.chance:.4f}  (always the train split's most common class)")
