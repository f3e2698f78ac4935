"""The curves d2l draws (train loss, train acc, test acc per epoch), as a PNG file."""

from __future__ import annotations

import os
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_path
from cnnlab.run import EpochMetrics


def plot_curves(history: list[EpochMetrics] | str | Path, path: str | Path,
                title: str = "") -> Path:
    """Draw the three d2l curves against epoch and write them atomically to ``path``;
    ``history`` is a run's metrics (``load_run(...).history``) or its run directory."""
    if isinstance(history, (str, os.PathLike)):
        from cnnlab.run import RunDir

        history = RunDir(history).require().read_metrics()
    if not history:
        raise CnnlabError("the run has no finished epoch yet: nothing to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    dots = "o" if len(history) <= 12 else None  # a line needs two points; a few need markers
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    ax.plot(epochs, [h.train_loss for h in history], "-", marker=dots, ms=3, label="train loss")
    ax.plot(epochs, [h.train_acc for h in history], "m--", marker=dots, ms=3, label="train acc")
    tested = [h for h in history if h.test_acc is not None]  # eval_every > 1 skips some
    ax.plot([h.epoch for h in tested], [h.test_acc for h in tested], "g-.",
            marker="o" if dots or len(tested) < len(history) else None, ms=3, label="test acc")
    epoch_axis(ax, epochs)
    ax.grid(True, alpha=0.3)
    ax.legend()
    last = tested[-1] if tested else None
    default = (f"test acc {last.test_acc:.3f} after {last.epoch} "
               f"epoch{'s' if last.epoch != 1 else ''}" if last
               else f"{history[-1].epoch} epochs, not yet evaluated")
    ax.set_title(title or default, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=120)


def epoch_axis(ax, epochs: list[int]) -> None:
    """An x axis of whole epochs: each one ticked when there are few (one epoch is not
    0.95..1.05), integer ticks otherwise."""
    import matplotlib.ticker

    ax.set_xlabel("epoch")
    if len(set(epochs)) <= 12:
        ax.set_xticks(sorted(set(epochs)))
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    lo, hi = min(epochs), max(epochs)
    ax.set_xlim(*((lo - 0.05, hi + 0.05) if hi > lo else (lo - 0.5, lo + 0.5)))


def percent(p: float) -> str:
    """A probability for a label: 0.998 reads 99.8%, not a rounded-up 100%, and 0.003 reads
    0.3%, not a rounded-down 0% (below 0.1%: "<0.1%")."""
    if p >= 0.99:
        return f"{min(p, 0.999):.1%}"
    if p >= 0.095:
        return f"{p:.0%}"
    return f"{p:.1%}" if p >= 0.001 else "<0.1%"


def check_png_path(path: str | Path) -> None:
    """Refuse an ``--out`` that cannot take a PNG, in one line; commands that compute for a
    while call it first, so that a typo does not cost the computation."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".png":
        what = "is a directory" if path.is_dir() else "does not end in .png"
        raise CnnlabError(f"--out {path} {what}; the picture is a PNG: give a file name ending "
                          "in .png")


def save_png(fig, path: str | Path, dpi: int | None = None, tight: bool = False) -> Path:
    """Write a matplotlib figure to ``path`` atomically (no half-written PNG if it fails)
    and close it. ``tight`` crops or grows the canvas to what is drawn (for figures whose
    fixed-aspect images push a label past the edge)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        check_png_path(path)
    except CnnlabError:
        plt.close(fig)
        raise
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi,
                        **({"bbox_inches": "tight", "pad_inches": 0.08} if tight else {}))
    finally:
        plt.close(fig)
    return path


def plot_run(run_dir: str | Path, out: Path | None = None) -> Path:
    """Plot a run directory's curves to ``out`` (default: the run's curves.png)."""
    from cnnlab.run import RunDir

    run = RunDir(run_dir).require()
    return plot_curves(run.read_metrics(), out or run.curves_path)
