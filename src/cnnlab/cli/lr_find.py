"""`cnnlab lr-find`: the learning-rate range test of a model or a recipe, as a plot and
three suggested lrs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.text import Text

from cnnlab.cli import cli
from cnnlab.cli.console import console
from cnnlab.cli.options import config_options
from cnnlab.errors import CnnlabError, Interrupted

_OVERRIDES = ["dataset", "data_dir", "resize", "channels", "limit_train", "batch_size",
              "optimizer", "momentum", "nesterov", "weight_decay", "label_smoothing", "seed",
              "device", "precision", "threads", "init_from", "freeze", "freeze_until",
              "head_lr_scale"]


def resolve_target(name: str, overrides: dict[str, Any]) -> tuple[Any, list[str]]:
    """The config for ``name`` (a recipe, a .yaml path or a model) and the `cnnlab train`
    arguments that rebuild it; a one-line error naming both lists otherwise."""
    from cnnlab.api import check_typed_options, train_config
    from cnnlab.config import recipe_names
    from cnnlab.engine.build import model_config
    from cnnlab.models import model_names

    given = {k: v for k, v in overrides.items() if v is not None}
    if name in recipe_names() or (Path(name).suffix in (".yaml", ".yml") and Path(name).is_file()):
        return train_config(name, None, **given), ["--recipe", name, *_flags(given)]
    if name in model_names():
        cfg = model_config(name, given)
        check_typed_options(cfg, given)
        fitted = {k: getattr(cfg, k) for k in ("resize", "channels") if getattr(cfg, k) is not None}
        rest = {k: v for k, v in given.items() if k not in ("dataset", *fitted)}
        return cfg, ["--model", name, "--dataset", cfg.dataset, *_flags({**fitted, **rest})]
    raise CnnlabError(f"'{name}' is neither a model nor a recipe; models: "
                      f"{', '.join(model_names())}; recipes: {', '.join(recipe_names())} "
                      "(or a path to a .yaml file)")


def _flags(values: dict[str, Any]) -> list[str]:
    out = []
    for k, v in values.items():
        flag = "--" + k.replace("_", "-")
        out += [flag if v else f"--no-{flag[2:]}"] if isinstance(v, bool) else [flag, str(v)]
    return out


@cli.command("lr-find")
@click.argument("model_or_recipe")
@click.option("--start-lr", type=float, default=1e-7, show_default=True, help="first lr of the sweep")
@click.option("--end-lr", type=float, default=10.0, show_default=True, help="last lr of the sweep")
@click.option("--steps", type=int, default=100, show_default=True,
              help="training steps of the sweep (fewer if the loss diverges)")
@click.option("--out", type=click.Path(path_type=Path),
              help="PNG path [lr-find-MODEL-DATASET.png in the current directory]")
@config_options(_OVERRIDES)
def lr_find_cmd(model_or_recipe: str, start_lr: float, end_lr: float, steps: int,
                out: Path | None, **overrides: Any) -> None:
    """Find a learning rate: train with an lr growing exponentially from --start-lr to
    --end-lr, plot the smoothed loss, and suggest lrs (valley, steep, minimum/10).

    MODEL_OR_RECIPE is a model (`cnnlab models`; known data is resized to fit it) or a
    recipe (`cnnlab recipes`, or a .yaml path) whose data, model, optimizer and batch size
    are used; its lr and schedule are not. Nothing is saved but the plot.
    """
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Table

    from cnnlab.device import describe, resolve_device
    from cnnlab.engine.lr_find import check_sweep, lr_find_config, plot_lr_find
    from cnnlab.viz.plots import check_png_path

    check_sweep(start_lr, end_lr, steps)
    cfg, train_args = resolve_target(model_or_recipe, overrides)
    out = out or Path(f"lr-find-{cfg.model}-{cfg.dataset.replace(':', '-')}.png")  # ucr:NAME
    check_png_path(out)  # before the sweep, not after it
    con = console()
    con.print(Text.assemble("cnnlab lr-find: ", (cfg.model, "bold"), " on ",
                            (cfg.dataset_title(), "bold"),
                            f", batch {cfg.batch_size}, {cfg.optimizer}, lr {start_lr:g} -> "
                            f"{end_lr:g} over {steps} steps on "
                            f"{describe(resolve_device(cfg.device))}"))
    bar = Progress(TextColumn("sweep", markup=False), BarColumn(),
                   TextColumn("{task.fields[info]}", markup=False), console=con, transient=True,
                   disable=not con.is_terminal)
    task = bar.add_task("", total=steps, info="")

    def progress(step: int, total: int, lr: float, loss: float) -> None:
        bar.update(task, completed=step, info=f"lr {lr:.2e}  loss {loss:.4f}")

    try:
        with bar:
            result = lr_find_config(cfg, start_lr, end_lr, steps,
                                    log=lambda m: con.print(m, style="dim"), progress=progress)
    except KeyboardInterrupt:
        raise Interrupted("interrupted; nothing was written") from None
    if result.stopped_early:
        con.print(f"stopped early: {result.stop_reason}")
    reference = ("recipe lr", cfg.lr) if train_args[0] == "--recipe" else None
    path = plot_lr_find(result, out, title=f"lr range test: {cfg.model} on {cfg.dataset_title()} "
                        f"({cfg.optimizer}, batch {cfg.batch_size})", reference=reference)
    if result.suggestions and result.learned:  # else they only mark where guessing ended
        table = Table(show_edge=False)
        table.add_column("suggestion")
        table.add_column("lr", justify="right")
        for name, lr in result.suggestions.items():
            table.add_row(name, f"{lr:.2g}")
        con.print(table)
    if result.warning:
        con.print(Text.assemble(("warning:", "yellow"), f" {result.warning}"))
    con.print(f"wrote {path}")
    if result.suggestions and not result.warning:
        lr = f"{result.suggestions['valley']:.2g}"
        con.print("to train with the valley lr (fastai's default pick; with a schedule it is "
                  f"the peak):\n  cnnlab train {' '.join([*train_args, '--lr', lr])}")
    elif not result.learned:  # the curve holds no good lr: short real runs will tell
        con.print("compare a few lrs over a few epochs each, e.g.:\n  cnnlab train "
                  f"{' '.join([*train_args, '--epochs', '3', '--lr', 'LR'])}")
    elif result.suggestions:  # no number to hand out blindly: the user reads the plot
        con.print("pick an lr from the plot (where the loss still falls steeply), then:\n"
                  f"  cnnlab train {' '.join([*train_args, '--lr', 'LR'])}")
