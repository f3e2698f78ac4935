"""Pictures of what a run gets wrong: the confusion matrix (counts and row-normalised, the
numbers in the cells) and a grid of its most confident mistakes or largest losses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from cnnlab.engine.interpret import Interpretation, Mistake
from cnnlab.viz.plots import percent, save_png

MAX_NUMBERED = 30  # above this many classes the cells are too small for numbers
MAX_TILES = 48  # images in one mistakes picture (the table and JSON keep all of --top)


def plot_confusion(confusion: torch.Tensor, classes: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Two panels side by side: the counts, and each row divided by its total (the share of
    each true class predicted as each class, so the diagonal is per-class recall). Every
    cell carries its number while there are at most 30 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    counts = confusion.double()
    rows = counts / counts.sum(1, keepdim=True).clamp_min(1)
    side = min(9.0, max(3.6, 0.42 * k + 1.6))
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 0.6, side + 0.5), layout="compressed")
    longest = max(len(c) for c in classes)
    fontsize = 8 if k <= 12 else 6
    for ax, values, what, fmt in ((axes[0], counts, "counts", "{:.0f}"),
                                  (axes[1], rows, "row-normalised (recall on the diagonal)",
                                   "{:.2f}")):
        im = ax.imshow(values.numpy(), cmap="Blues", vmin=0, interpolation="nearest")
        fig.colorbar(im, ax=ax, pad=0.02).ax.tick_params(labelsize=8)
        ax.set_title(what, fontsize=9)
        ax.set_xticks(range(k), classes, rotation=90 if longest > 3 else 0, fontsize=fontsize)
        ax.set_yticks(range(k), classes, fontsize=fontsize)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= MAX_NUMBERED:
            top = float(values.max()) or 1.0
            for i in range(k):
                for j in range(k):
                    v = float(values[i, j])
                    if what == "counts" or v >= 0.005:
                        ax.text(j, i, fmt.format(v).lstrip("0") if what != "counts" and v < 1
                                else fmt.format(v), ha="center", va="center",
                                fontsize=fontsize - (1 if k > 12 else 0),
                                color="white" if v > 0.55 * top else "black")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path, dpi=110, tight=True)


def plot_mistakes(interp: Interpretation, path: str | Path, which: str = "mistakes",
                  title: str = "") -> Path:
    """A grid of the kept images (``mistakes``: most confident wrong first; ``losses``: the
    largest losses), each titled like fastai's top losses: predicted / true / loss / p."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items: list[Mistake] = interp.mistakes if which == "mistakes" else interp.top_losses
    more = len(items) - MAX_TILES
    items = items[:MAX_TILES]
    n = max(len(items), 1)
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(max(4.5, 1.75 * cols + 0.3), 2.05 * rows + 0.5),
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, items, strict=False):
        img = interp.image(m).float() / 255
        if img.shape[0] == 3:
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        c = interp.classes
        ax.set_title(f"#{m.index}\n{c[m.predicted]} {percent(m.probability)}\ntrue {c[m.true]}",
                     fontsize=7.5, color="crimson" if m.predicted != m.true else "black")
    if not interp.mistakes and which == "mistakes":
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    label = "most confident mistakes" if which == "mistakes" else "largest losses"
    shown = f" (the first {MAX_TILES}; {more} more in the JSON)" if more > 0 else ""
    fig.suptitle(title or f"{label}{shown}: predicted (probability) / true class", fontsize=10)
    return save_png(fig, path, dpi=110)
