"""`cnnlab predict RUN FILE|FOLDER ...`: classify your own images with a trained run."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.text import Text

from cnnlab.cli import cli
from cnnlab.cli.console import console
from cnnlab.errors import CnnlabError


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default="3", show_default=True, metavar="K|all",
              help="classes per image: a number, or all")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: file, inverted, top-k")
@click.option("--invert", type=click.Choice(["auto", "yes", "no"]), default="auto",
              show_default=True, help="auto: invert dark-on-light drawings for a model trained "
                                      "light-on-dark (MNIST)")
@click.option("--frame", is_flag=True,
              help="frame each digit as MNIST's were (scaled into a 20x20 box, centred on its "
                   "centre of mass): for a digit drawn small or off-centre; grey models only")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
def predict(run_dir: Path, inputs: tuple[Path, ...], top_k: str, as_json: bool, invert: str,
            frame: bool, batch_size: int, device: str) -> None:
    """The top-k classes of image files (PNG, JPEG, ...; any size or mode) and folders; for
    a time-series run, of the series in .npy, .csv or .txt files (one series per row).

    Each image is resized and converted as the run's preprocessing says, exactly as in
    training (a picture that is not square is stretched, as training images were). Folders
    are read recursively and streamed in batches.
    """
    from rich.progress import Progress
    from rich.table import Table

    from cnnlab.data.images import IMAGE_SUFFIXES
    from cnnlab.engine.predict import SERIES_SUFFIXES, collect_files, predict_files, reads_digits
    from cnnlab.run import load_run
    from cnnlab.viz.plots import percent

    k = _top_k(top_k)
    run = load_run(run_dir, device)
    files = collect_files(inputs, SERIES_SUFFIXES if run.is_series else IMAGE_SUFFIXES)
    k = len(run.classes) if k is None else k
    con = console()
    if frame and not run.is_series and not reads_digits(run):  # allowed, but made for digits
        click.echo(f"(note: --frame centres and scales a drawing as MNIST's digits were; "
                   f"this run reads {run.config.dataset_title()}, not digits 0-9, so check "
                   "that it helps)", err=True)  # stderr: --json's lines stay parseable
    failed = 0
    if as_json:
        for p in predict_files(run, files, k, invert, batch_size, frame=frame):
            failed += p.error is not None
            click.echo(json.dumps(p.to_dict(), ensure_ascii=False))
        _fail_if_unreadable(failed, len(files))
        return
    table = Table(show_edge=False)
    table.add_column("file")
    for i in range(min(k, len(run.classes))):
        table.add_column(f"top {i + 1}" if i else "predicted")
    inverted = blank = 0
    with Progress(console=con, transient=True, disable=len(files) < 512 or not con.is_terminal) as bar:
        task = bar.add_task("predicting", total=len(files))
        for p in predict_files(run, files, k, invert, batch_size,
                               progress=lambda n: bar.advance(task, n), frame=frame):
            if p.error is not None:
                failed += 1
                table.add_row(p.file, Text.assemble(("unreadable:", "red"), f" {p.error}"))
                continue
            inverted += p.inverted
            blank += p.blank
            name = p.file + (" (inverted)" if p.inverted else "") + (" (blank)" if p.blank else "")
            table.add_row(name, *[f"{c} {percent(q)}" for c, q in zip(p.classes, p.probabilities,
                                                                      strict=True)])
    con.print(table)
    if inverted and invert == "yes":
        con.print(f"{inverted} image(s) were inverted, as --invert yes asks")
    elif inverted:
        con.print(f"{inverted} dark-on-light image(s) were inverted to match the training data "
                  "(light on dark); --invert no keeps them as they are")
    if blank:
        con.print(f"{blank} image(s) marked blank are almost one colour once resized, or hold "
                  "only a dot of ink: the model answers anyway, and that answer means little")
    _fail_if_unreadable(failed, len(files))


def _top_k(value: str) -> int | None:
    """``--top-k``: a whole number >= 1, or ``all`` (None)."""
    if value.strip().lower() == "all":
        return None
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise CnnlabError(f"--top-k must be a whole number >= 1 or 'all', got '{value}'")
    return k


def _fail_if_unreadable(failed: int, total: int) -> None:
    """After every readable file was classified: a non-zero exit when some were not."""
    if failed:
        rest = "; the others were classified" if failed < total else ""
        raise CnnlabError(f"{failed} of {total} file(s) could not be read (marked above){rest}")
