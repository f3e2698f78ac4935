"""Commands on a trained run directory: `cnnlab eval` and `cnnlab plot`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.text import Text

from cnnlab.cli import cli
from cnnlab.cli.console import console


@cli.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--dataset", help="evaluate on this data set instead of the run's own (the "
              "same class names in the same order; its images are adapted to the model's "
              "input)")
@click.option("--data-dir", help="data root for the data set")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--batch-size", type=int, default=1024, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
def eval_cmd(run_dir: Path, dataset: str | None, data_dir: str | None, split: str,
             batch_size: int, device: str) -> None:
    """Accuracy, per-class accuracy and confusion matrix of a trained run."""
    from rich.table import Table

    from cnnlab.engine.evaluate import evaluate_run
    from cnnlab.run import RunDir

    res, classes = evaluate_run(run_dir, dataset, data_dir, split, batch_size, device)
    con = console()
    con.print(f"accuracy {res.accuracy:.4f}  loss {res.loss:.4f}  "
              f"({int(res.confusion.sum())} examples, {split} split)")
    per = Table(title="per-class accuracy", show_edge=False)
    per.add_column("class")
    per.add_column("accuracy", justify="right")
    per.add_column("n", justify="right")
    for name, acc, n in zip(classes, res.per_class_accuracy(), res.confusion.sum(1).tolist(),
                            strict=True):
        per.add_row(name, "—" if acc is None else f"{acc:.4f}", str(n))
    con.print(per)
    con.print(confusion_table(res.confusion.tolist(), classes, con.width))
    run = RunDir(run_dir)
    own = dataset is None or dataset == run.read_config().get("dataset")
    con.print(f"wrote {run.eval_path(split if own else f'{dataset}-{split}')}")


def confusion_table(confusion: list[list[int]], classes: list[str], width: int) -> Any:
    """The confusion matrix as a terminal table: columns headed by the class names when they
    fit in ``width``, else by the rows' numbers; the diagonal bold, zeros dimmed so the
    mistakes stand out."""
    from rich.table import Table

    numbered = any(name != str(i) for i, name in enumerate(classes))
    labels = [f"{i} {name}" if numbered else name for i, name in enumerate(classes)]
    digits = len(str(max((v for row in confusion for v in row), default=0)))
    by_name = sum(max(len(n), digits) + 3 for n in classes) + max(map(len, labels)) + 3
    heads = list(classes) if by_name <= width else [str(i) for i in range(len(classes))]
    how = "" if heads == list(classes) or not numbered else ", numbered as the rows"
    table = Table(title=f"confusion matrix (rows: true class, columns: predicted{how})",
                  show_edge=False)
    table.add_column("")
    for head in heads:
        table.add_column(head, justify="right")
    for i, row in enumerate(confusion):
        table.add_row(labels[i], *[Text(str(v), style="bold" if j == i else "dim" if v == 0
                                        else "") for j, v in enumerate(row)])
    return table


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), help="PNG path [RUN_DIR/curves.png]")
def plot(run_dir: Path, out: Path | None) -> None:
    """Plot train loss, train acc and test acc per epoch (d2l's curves) to a PNG."""
    from cnnlab.viz.plots import plot_run

    click.echo(f"wrote {plot_run(run_dir, out)}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--top", type=int, default=12, show_default=True,
              help="how many mistakes and confused pairs to show")
@click.option("--dataset", help="look at this data set instead of the run's own (same classes)")
@click.option("--data-dir", help="data root for the data set")
@click.option("--batch-size", type=int, default=1024, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
def errors(run_dir: Path, split: str, top: int, dataset: str | None, data_dir: str | None,
           batch_size: int, device: str) -> None:
    """The most confidently wrong images and the most-confused class pairs, with pictures.

    Writes errors-SPLIT.png (the first 48 mistakes; a series run: the first 8, coloured by
    their class activation maps), confusion-SPLIT.png (counts and
    row-normalised) and errors-SPLIT.json into the run directory (with --dataset D:
    errors-D-SPLIT.png and so on).
    """
    from rich.table import Table

    from cnnlab.data import dataset_title
    from cnnlab.engine.interpret import interpret_run
    from cnnlab.fileio import write_json
    from cnnlab.run import load_run
    from cnnlab.viz.interpretation import plot_confusion, plot_mistakes

    run = load_run(run_dir, device)
    res = interpret_run(run, split, top, dataset, data_dir, batch_size)
    c = res.classes
    con = console()
    wrong = res.total - int(res.confusion.diag().sum())
    own_dir = run.config.data_dir if res.dataset == run.config.dataset else None
    shown = dataset_title(res.dataset, data_dir or own_dir)  # folder 'letters', not folder
    con.print(f"{shown} {split}: accuracy {res.accuracy:.4f}, {wrong} of {res.total} wrong")
    table = Table(title=f"most confident mistakes (top {top})", show_edge=False)
    for col in ("index", "true", "predicted", "p(predicted)", "p(true)"):
        table.add_column(col, justify="right" if col == "index" or col.startswith("p(") else "left")
    for m in res.mistakes:
        table.add_row(str(m.index), c[m.true], c[m.predicted], f"{m.probability:.3f}",
                      f"{m.true_probability:.3f}")
    con.print(table)
    pairs = Table(title="most confused (true -> predicted)", show_edge=False)
    for col in ("true", "predicted", "count"):
        pairs.add_column(col, justify="right" if col == "count" else "left")
    for true, predicted, n in res.most_confused()[:top]:
        pairs.add_row(true, predicted, str(n))
    con.print(pairs)
    where = Path(run_dir)
    # another data set never overwrites the run's own files; no colon in a name (ucr:NAME)
    tag = split if dataset is None else f"{res.dataset}-{split}".replace(":", "-")
    title = f"{shown} {split}: accuracy {res.accuracy:.4f}"
    if run.is_series:  # series: lines coloured by the class activation map, not image tiles
        from cnnlab.viz.series import plot_mistakes_cam

        mistakes = plot_mistakes_cam(run, res, where / f"errors-{tag}.png")
    else:
        mistakes = plot_mistakes(res, where / f"errors-{tag}.png")
    for path in (mistakes,
                 plot_confusion(res.confusion, c, where / f"confusion-{tag}.png", title)):
        con.print(f"wrote {path}")
    write_json(where / f"errors-{tag}.json", res.to_dict())
    con.print(f"wrote {where / f'errors-{tag}.json'}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path),
              help="HTML path [RUN/report.html for one run, ./report.html for several]")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--data-dir", help="data root for the runs' data sets")
def report(run_dirs: tuple[Path, ...], out: Path | None, split: str, data_dir: str | None) -> None:
    """One self-contained HTML report of a run, or a comparison of several.

    Config, curves, per-class accuracy, confusion matrix, most-confused pairs with examples,
    top losses with Grad-CAM, filters and activations; with several runs also their curves
    overlaid and the settings that differ. Every picture is inline: it opens offline.
    """
    from cnnlab.viz.report import build_report

    con = console()
    path = build_report(run_dirs, out, split, data_dir, log=lambda m: con.print(m, style="dim"))
    con.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
