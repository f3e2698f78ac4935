"""`cnnlab train` and `cnnlab bench`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from cnnlab.cli import cli
from cnnlab.cli.console import console
from cnnlab.cli.options import config_options
from cnnlab.errors import CnnlabError, Interrupted, Terminated


@cli.command()
@click.option("--recipe", "-r", help="named recipe from `cnnlab recipes`, or a .yaml path")
@click.option("--resume", type=click.Path(path_type=Path),
              help="continue the run in this directory from its last checkpoint")
@click.option("--nproc", type=click.IntRange(1, 1024), default=None,
              help="train in N processes on this machine with DDP (torchrun's launcher; "
                   "--batch-size stays the global batch)")
@config_options()
def train(recipe: str | None, resume: Path | None, nproc: int | None, **overrides: Any) -> None:
    """Train a model; every option overrides the recipe (or the defaults).

    With no options: mnist-net on the embedded digits data (resized to 28x28), in seconds.
    Under torchrun (`torchrun --nproc-per-node N -m cnnlab train ...`) each process trains
    its share of every batch with DistributedDataParallel; rank 0 writes the run.
    """
    from cnnlab.api import refuse_existing_out, train_config
    from cnnlab.distributed import launch, launched_by_torchrun

    cfg = train_config(recipe, resume, **overrides)  # a bad option fails here, once
    if resume is None:
        refuse_existing_out(cfg)
    if nproc is not None and nproc > 1 and not launched_by_torchrun():
        if cfg.batch_size < nproc:
            raise CnnlabError(f"--batch-size {cfg.batch_size} is the global batch, shared by "
                              f"{nproc} processes; make it at least {nproc}")
        _check_devices(cfg, nproc)
        _note_oversubscribed(cfg, nproc)
        try:
            code = launch(nproc, _without_nproc(sys.argv[1:]))
        except KeyboardInterrupt:
            raise Interrupted(_interrupted(cfg, resume, f" --nproc {nproc}")) from None
        except SystemExit as e:  # a plain kill of the launcher: it stopped the ranks
            if e.code != 143:
                raise
            raise Terminated(_interrupted(cfg, resume, f" --nproc {nproc}",
                                          what="terminated (SIGTERM)")) from None
        except CnnlabError as e:  # a process was killed
            raise CnnlabError(f"{e}{_resume_hint(cfg, resume, nproc)}") from None
        if code:
            raise CnnlabError(f"a training process failed (exit {code}); its error is above"
                              f"{_resume_hint(cfg, resume, nproc)}")
        return
    _run_training(cfg, resume)


def _check_devices(cfg: Any, nproc: int) -> None:
    """What `--nproc` can check once, before it starts N processes that would each fail."""
    import torch

    from cnnlab.device import resolve_device
    from cnnlab.distributed import check_gpu_count, process_group_backend

    device = resolve_device(cfg.device)
    if device.type not in ("cpu", "cuda"):
        raise CnnlabError(f"--nproc runs on CPU (gloo) or CUDA GPUs (NCCL), not "
                          f"{device.type}; pass --device cpu")
    if cfg.sync_bn and device.type != "cuda":
        raise CnnlabError("--sync-bn needs CUDA GPUs: PyTorch's SyncBatchNorm has no "
                          "CPU kernels; drop --sync-bn")
    backend = process_group_backend(device, cfg.dist_backend)
    if device.type == "cuda":
        check_gpu_count(nproc, torch.cuda.device_count(), backend)


def _note_oversubscribed(cfg: Any, nproc: int = 1) -> None:
    """Say so when the CPU processes and threads asked for outnumber the cores: they then
    take turns, and the run is slower than with fewer."""
    from cnnlab.device import resolve_device

    cores = os.cpu_count() or 1
    if resolve_device(cfg.device).type != "cpu" or nproc * (cfg.threads or 1) <= cores:
        return
    asked = (f"--nproc {nproc}" if nproc > 1 else "") + \
        (" x " if nproc > 1 and cfg.threads else "") + \
        (f"--threads {cfg.threads}" if cfg.threads else "")
    console().print(f"(note: {asked} asks for {nproc * (cfg.threads or 1)} CPU threads on "
                    f"{cores} core{'s' * (cores != 1)}: they take turns, so this runs slower "
                    "than with fewer)", style="dim")


def _cpu_notes(cfg: Any, device: Any) -> None:
    """What a CPU run should know before it waits: bf16 without bf16 units, and the GPU-sized
    inputs of d2l's full nets."""
    from cnnlab.device import bf16_is_fast

    con = console()
    if cfg.precision == "bf16" and not bf16_is_fast(device):
        con.print("(note: this CPU has no bf16 units, so bf16 is emulated and slower than fp32 "
                  "here; --precision auto picks the faster one)", style="dim")
    if (cfg.resize or 0) >= 96 and not cfg.limit_train:
        con.print(f"(note: {cfg.resize}x{cfg.resize} inputs make this a GPU-sized job: on a "
                  "CPU an epoch can take tens of minutes to hours; --limit-train N for a "
                  "quick look, or a fashion-*-small recipe)", style="dim")


def _saved(cfg: Any, resume: Path | None) -> Path | str | None:
    """The run directory of this command that holds a checkpoint (one to resume), if any."""
    from cnnlab.run import RunDir

    return next((d for d in (resume, cfg.out) if d and RunDir(d).latest_checkpoint()), None)


def _interrupted(cfg: Any, resume: Path | None, extra: str = "",
                 command: str = "cnnlab train", what: str = "interrupted") -> str:
    """What to say after Ctrl-C (or a kill: ``what``): how to continue, when there is
    something to continue."""
    saved = _saved(cfg, resume)
    if saved:
        return f"{what}; continue with `{command} --resume {saved}{extra}`"
    if not (cfg.out or resume):  # the run directory's name was chosen inside fit
        return (f"{what}; if an epoch finished, continue with `{command} --resume "
                f"runs/<the run>{extra}`")
    return (f"{what} before the first epoch finished; nothing was saved (continue later "
            "with `cnnlab train --resume RUN_DIR` once a run has a checkpoint)")


def _resume_hint(cfg: Any, resume: Path | None, nproc: int) -> str:
    """After a failed `--nproc` job: how to continue it, when an epoch was saved."""
    saved = _saved(cfg, resume)
    return (f"; continue from its last epoch with `cnnlab train --resume {saved} --nproc "
            f"{nproc}`" if saved else "")


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus ``--nproc N`` / ``--nproc=N``: what each process runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _run_training(cfg: Any, resume: Path | None) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from cnnlab.device import describe, resolve_device, resolve_precision, set_threads
    from cnnlab.distributed import LAUNCHER_ENV, current, peer_lost, watch_launcher
    from cnnlab.engine.train import fit

    watch_launcher()  # under --nproc: stop with the launcher, even during a long decode
    con = console()
    if not current().is_main:  # under torchrun only rank 0 prints
        con.quiet = True
    device = resolve_device(cfg.device)
    set_threads(cfg.threads)  # before the header, which says how many threads
    con.print(Text.assemble("cnnlab train: ", (cfg.model, "bold"), " on ",
                            (cfg.dataset_title(), "bold"),
                            f", {_epochs(cfg.epochs)}, batch {cfg.batch_size}, {cfg.optimizer} "
                            f"lr {cfg.lr}, {cfg.schedule}, "
                            f"{resolve_precision(cfg.precision, device)} on {describe(device)}"))
    if not current().enabled:
        _note_oversubscribed(cfg)
    if device.type == "cpu":
        _cpu_notes(cfg, device)
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                   TextColumn("{task.fields[info]}", markup=False), TimeRemainingColumn(),
                   console=con, transient=True, disable=not con.is_terminal)
    task = bar.add_task("", total=1, info="")
    epoch_no = [0]

    def progress(step: int, steps: int, loss: float) -> None:
        bar.update(task, total=steps, completed=step,
                   description=f"epoch {epoch_no[0] + 1}/{cfg.epochs}", info=f"loss {loss:.4f}")

    def on_epoch_end(m: Any) -> None:
        epoch_no[0] = m.epoch
        con.print(f"epoch {m.epoch:>3}/{cfg.epochs}  loss {m.train_loss:.4f}  train acc "
                  f"{m.train_acc:.4f}  test acc {_acc(m.test_acc)}  lr {m.lr:.4g}  "
                  f"{m.examples_per_sec:,.0f} ex/s  {m.epoch_time:.1f} s")

    try:
        with bar:
            result = fit(cfg, resume, log=lambda m: con.print(m, style="dim"),
                         progress=progress, on_epoch_end=on_epoch_end)
    except KeyboardInterrupt:
        if not current().is_main or os.environ.get(LAUNCHER_ENV):  # said once, by the
            raise SystemExit(130) from None                        # launcher or rank 0
        by_hand = "torchrun [the same options] -m cnnlab train" if current().enabled else None
        raise Interrupted(_interrupted(cfg, resume, command=by_hand or "cnnlab train")) \
            from None
    except SystemExit as e:  # a plain kill (SIGTERM): the same hint as Ctrl-C
        if e.code != 143 or current().enabled or os.environ.get(LAUNCHER_ENV):
            raise
        raise Terminated(_interrupted(cfg, resume, what="terminated (SIGTERM)")) from None
    except Exception as e:
        if not (current().enabled and peer_lost(e)):
            raise
        if not current().is_main:  # said once, by rank 0 (and the launcher says why)
            raise SystemExit(1) from None
        first = next((line for line in str(e).splitlines() if line.strip()), "")
        raise CnnlabError(f"another training process stopped (its error, a kill, or out of "
                          f"memory), so this one stops too ({first.strip()[:160]})") from None
    h = result.history
    table = Table(title=f"{cfg.model} on {cfg.dataset_title()}", show_edge=False)
    for col in ("epoch", "train loss", "train acc", "test acc", "examples/s", "time (s)"):
        table.add_column(col, justify="right")
    for m in h:
        table.add_row(str(m.epoch), f"{m.train_loss:.4f}", f"{m.train_acc:.4f}",
                      _acc(m.test_acc), f"{m.examples_per_sec:,.0f}", f"{m.epoch_time:.1f}")
    con.print(table)
    total = sum(m.epoch_time for m in h)
    con.print(f"final test acc {_acc(h[-1].test_acc)}; {total:.1f} s over {_epochs(len(h))}; "
              f"run saved in {result.run_dir}")


def _acc(value: float | None) -> str:
    """An accuracy for the tables; "-" for an epoch that was not evaluated."""
    return "-" if value is None else f"{value:.4f}"


@cli.command("bench")
@click.argument("model")
@config_options(["dataset", "data_dir", "batch_size", "device", "precision", "channels_last",
                 "compile", "threads", "resize", "channels"])
@click.option("--steps", type=int, default=50, show_default=True, help="timed steps")
@click.option("--warmup", type=int, default=10, show_default=True)
def bench_cmd(model: str, steps: int, warmup: int, **overrides: Any) -> None:
    """Time forward+backward+step: steps/sec, examples/sec, ms/step and peak memory."""
    from cnnlab.engine.bench import bench

    r = bench(model, overrides, steps, warmup)
    click.echo(f"{model} on {r.title or r.dataset}, batch {r.batch_size}, {r.precision}, "
               f"{'channels_last' if r.channels_last else 'contiguous'}"
               f"{', compiled' if r.compiled else ''}, {r.device}")
    click.echo(f"{r.steps_per_sec:,.1f} steps/s  {r.examples_per_sec:,.0f} examples/s  "
               f"{r.ms_per_step:.2f} ms/step  peak memory {r.peak_memory_mb:,.0f} MB")


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"
