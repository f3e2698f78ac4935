"""Commands that list what cnnlab has: `models`, `datasets`, `recipes`, `cache`, and
`download`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from cnnlab.cli import cli
from cnnlab.cli.console import console


@cli.command()
def models() -> None:
    """List the models: name, input shape, parameters, where they come from."""
    import torch
    from rich.table import Table

    from cnnlab.models import create_model, get_model_info, model_names

    table = Table(show_edge=False)
    for col in ("model", "input", "params", "layers", "from"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for name in model_names():
        info = get_model_info(name)
        with torch.device("meta"):  # shapes only: no memory, no initialisation (VGG-11: 129M)
            n = sum(p.numel() for p in create_model(name).parameters())
        params = f"{n:,}" + (" (C=1)" if info.series else "")  # a series model's grow with C
        table.add_row(name, info.shape_text(), params, info.description, info.source)
    console().print(table)


@cli.command()
@click.option("--data-dir", help="data root searched first")
def datasets(data_dir: str | None) -> None:
    """List the data sets: sizes, classes, and where their files are found (time series:
    ucr:NAME, the UCR/UEA sets bundled with aeon)."""
    from rich.table import Table

    from cnnlab.data.locate import check_data_dir, describe_location, search_roots
    from cnnlab.data.registry import dataset_names, get_info

    check_data_dir(data_dir)
    table = Table(show_edge=False)
    for col in ("data set", "shape", "train", "test", "classes", "found at"):
        table.add_column(col, justify="right" if col in ("train", "test") else "left",
                         overflow="fold" if col == "found at" else "ellipsis")  # whole paths
    for name in dataset_names():
        info = get_info(name)
        where = describe_location(name, data_dir)
        classes = ", ".join(info.classes[:4]) + " ..." if info.classes else "folder names"
        table.add_row(name, "x".join(map(str, info.shape)) if info.shape else "any",
                      f"{info.sizes['train']:,}" if info.sizes else "-",
                      f"{info.sizes['test']:,}" if info.sizes else "-", classes,
                      Text(where, style="red" if where == "not found" else ""))
    table.add_row(*_ucr_row())
    con = console()
    con.print(table)
    con.print("searched, in order: " + ", ".join(str(r) for r in search_roots(data_dir)))


def _ucr_row() -> tuple[str | Text, ...]:
    """The `ucr:NAME` line: the UCR/UEA sets bundled with aeon (the series extra), or how
    to install it."""
    from cnnlab.data.sources import ucr
    from cnnlab.errors import CnnlabError

    try:
        names = ucr.classification_names()
        where = f"embedded (aeon {ucr.aeon_version()}): {', '.join(names)}"
    except CnnlabError:
        where = Text.assemble(("needs the series extra", "red"),
                              ": pip install 'cnnlab[series]'")
    return ("ucr:NAME", "C x L series", "-", "-", "per set", where)


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
@click.argument("name", required=False)
def recipes(name: str | None) -> None:
    """List the named recipes for `cnnlab train --recipe NAME`; with NAME, show that
    recipe's settings (every one can be overridden by the option of the same name)."""
    from cnnlab.config import load_recipe, recipe_description, recipe_names, recipes_dir

    if name is None:
        for recipe in recipe_names():
            click.echo(f"{recipe:<20} {recipe_description(recipe)}")
        return
    from pathlib import Path

    load_recipe(name)  # an unknown name: one line with a did-you-mean
    given = Path(name)  # as load_recipe reads it: a .yaml path, else a bundled recipe
    path = given if given.suffix in (".yaml", ".yml") and given.is_file() else \
        recipes_dir() / given.with_suffix(".yaml").name
    click.echo(f"# {path}\n{path.read_text(encoding='utf-8').rstrip()}")


@cli.command()
@click.option("--clear", is_flag=True, help="delete the cached splits (they are decoded again "
                                             "when next needed)")
def cache(clear: bool) -> None:
    """Show the decode cache (decoded splits as safetensors files): where it is and what it
    holds; --clear empties it. Only cnnlab's own files there are counted or deleted."""
    import re

    from cnnlab.data.cache import cache_dir

    where = cache_dir()
    # NAME-SPLIT-[PLACE-]KEY.safetensors (and a killed decode's scratch): never a user's
    # own model.safetensors, should $CNNLAB_CACHE point at a folder that holds one
    own = re.compile(r"-(?:[0-9a-f]{8}-)?[0-9a-f]{16}\.safetensors(?:\.decode\.tmp\..*)?$")
    files = sorted(f for f in where.glob("*.safetensors*") if own.search(f.name))
    total = sum(f.stat().st_size for f in files if f.is_file())
    if clear:
        gone = 0
        for f in files:
            try:
                f.unlink()
                gone += 1
            except OSError as e:
                raise click.ClickException(f"cannot delete {f}: {e.strerror}; deleted "
                                           f"{gone} of {len(files)}") from None
        click.echo(f"deleted {gone} cached split(s), {total / 2**20:,.1f} MiB, from {where}")
        return
    click.echo(f"{where}: {len(files)} cached split(s), {total / 2**20:,.1f} MiB"
               + ("" if files else " (set $CNNLAB_CACHE to use another folder)"))
    for f in files:
        click.echo(f"  {f.stat().st_size / 2**20:>9,.1f} MiB  {f.name}")
