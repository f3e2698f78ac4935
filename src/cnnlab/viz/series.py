"""Pictures of time-series runs: class activation maps over time.

A network that ends in global average pooling and one linear layer (``fcn``, ``resnet1d``)
scores class c as the time average of ``CAM_c(t) = sum_k w[c, k] * A_k(t)``, where ``A``
(K x L) are its last feature maps and ``w`` the linear layer's weights (Zhou et al. 2016;
Wang et al. 2017 draw it over the series). So ``CAM_c(t)`` says how much the signal around
time t raised class c's score: drawn as the colour of the series line, it shows which part
of the signal decided the class. Multivariate series share one map over time (the maps
``A`` mix the channels), drawn on one line per channel.

The series are drawn as the model saw them (z-normalised), on an fp32 eval-mode copy of the
run's model on the CPU. Each map is min-max scaled per series for the colours (as Wang et al.
draw them); the raw values are in :class:`SeriesCAM` (``raw``). The channels of a
multivariate series are drawn one above the other, each scaled to its own band.
"""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.run import LoadedRun
from cnnlab.viz.inside import checked_indices, class_index
from cnnlab.viz.plots import percent, save_png

if TYPE_CHECKING:
    from cnnlab.engine.interpret import Interpretation

PER_CLASS = 2  # series per class drawn by default
LIMIT = 8  # at most this many series in one picture


@dataclass
class SeriesCAM:
    """Class activation maps of a few series: ``series`` (N, C, L) as the model saw them,
    ``raw`` (N, L) the map of the explained class (``targets``), ``maps`` the same scaled to
    0..1 per series (a flat map is all zeros), and what the model predicted."""

    series: torch.Tensor
    raw: torch.Tensor
    maps: torch.Tensor
    labels: list[str]  # "#12 true Point"
    true: list[int | None]
    targets: list[int]
    predicted: list[int]
    probability: list[float]  # of the predicted class
    split: str = "test"


def class_activation_maps(model: nn.Module, x: torch.Tensor, name: str = "the model"
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, K), CAMs (N, K, L)) of a global-average-pooling net for a float batch; a
    one-line error for a model without ``class_activation_maps`` (no GAP before its head)."""
    cams = getattr(model, "class_activation_maps", None)
    if cams is None:
        raise CnnlabError(f"model '{name}' has no global average pooling right before its "
                          "classifier, which a class activation map needs; use fcn or resnet1d")
    with torch.no_grad():
        logits, maps = cams(x)
    return logits.float(), maps.float()


def pick_series(run: LoadedRun, split: str = "test", indices: Sequence[int] = (),
                class_names: Sequence[str] = (), per_class: int = PER_CLASS,
                limit: int = LIMIT, data_dir: str | None = None
                ) -> tuple[torch.Tensor, list[str], list[int]]:
    """(series (N, C, L) as stored, labels, true classes) of the run's data set: the series
    at ``indices``, the first ``per_class`` of each class in ``class_names``, or by default
    the first of every class, then the second, ... (``per_class`` each, at most ``limit``)."""
    from cnnlab.engine.evaluate import run_split

    if per_class < 1 or limit < 1:
        raise CnnlabError(f"--per-class and --limit must be at least 1, got {per_class} and "
                          f"{limit}")
    _, data = run_split(run, data_dir=data_dir, split=split)
    chosen = checked_indices(indices, len(data), split, run.config.dataset, "series")
    wanted = [class_index(data.classes, c, f" in {run.config.dataset}") for c in class_names]
    if not indices and not wanted:
        wanted = list(range(len(data.classes)))
    by_class = {k: (data.labels == k).nonzero()[:, 0].tolist() for k in wanted}
    for rank in range(per_class):  # round robin: every class gets its first before a second
        for k in wanted:
            if rank < len(by_class[k]) and (class_names or len(chosen) < limit):
                chosen.append(by_class[k][rank])
    true = [int(data.labels[i]) for i in chosen]
    labels = [f"#{i} true {data.classes[t]}" for i, t in zip(chosen, true, strict=True)]
    return data.images[chosen], labels, true


def series_cam(run: LoadedRun, series: torch.Tensor, labels: Sequence[str],
               true: Sequence[int | None], target: str | int | None = None,
               split: str = "test") -> SeriesCAM:
    """The class activation maps of ``series`` (float (N, C, L) as stored: the run's
    preprocessing z-normalises them) for class ``target`` (a name or number; default: each
    series' predicted class)."""
    if not run.is_series:
        raise CnnlabError(f"{run.run_dir} is an image run; class activation maps over time are "
                          f"for series runs (for images: `cnnlab visualize gradcam "
                          f"{run.run_dir}`)")
    model = copy.deepcopy(run.model).float().eval().cpu()
    x = run.preprocess(series.cpu()).float()
    logits, cams = class_activation_maps(model, x, run.config.model)
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    if target is None:
        targets = pred
    else:
        k = class_index(run.classes, str(target), f" in {run.config.dataset}")
        targets = torch.full_like(pred, k)
    raw = cams[torch.arange(len(x)), targets]  # (N, L)
    lo, hi = raw.amin(1, keepdim=True), raw.amax(1, keepdim=True)
    maps = torch.where(hi > lo, (raw - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(raw))
    return SeriesCAM(x, raw, maps, list(labels), list(true), targets.tolist(), pred.tolist(),
                     conf.tolist(), split)


def plot_cam(run: LoadedRun, cam: SeriesCAM, path: str | Path | None = None,
             title: str = "", cols: int = 2) -> Path:
    """One panel per series: its line (one per channel, stacked) coloured by the class
    activation map of the explained class, titled with the true class, the prediction and
    its probability (red when wrong); one colour bar for all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import LineCollection

    path = path or run.run_dir.path / "cam.png"
    n = len(cam.series)
    if n == 0:
        raise CnnlabError("no series to draw")
    channels, length = cam.series.shape[1:]
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    panel_h = 1.9 if channels == 1 else min(1.0 + 0.4 * channels, 5.0)
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(5.4 * cols + 0.9, panel_h * rows + 0.9), layout="constrained")
    # grey where the map is low, through orange to dark red where it is high: the eye goes to
    # what decided the class (a rainbow map makes low values as loud as high ones)
    cmap = matplotlib.colors.LinearSegmentedColormap.from_list(
        "cam", ["#c7c7c7", "#fdae61", "#e34a33", "#7f0000"])
    norm = matplotlib.colors.Normalize(0.0, 1.0)
    t = np.arange(length)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        heat = cam.maps[i].numpy()
        seg_heat = (heat[:-1] + heat[1:]) / 2 if length > 1 else heat  # a segment: its middle
        for c in range(channels):
            y = cam.series[i, c].numpy()
            if channels > 1:  # each channel in its own band (0.85 high, one per channel)
                span = float(y.max() - y.min())
                y = (y - y.min()) / (span if span > 0 else 1.0) * 0.85 - c
            if length > 1:
                points = np.stack([t, y], 1)
                width = (1.2 + 2.2 * seg_heat) if channels == 1 else (0.9 + 1.6 * seg_heat)
                lines = LineCollection(np.stack([points[:-1], points[1:]], 1), cmap=cmap,
                                       norm=norm, linewidths=width, capstyle="round")
                lines.set_array(seg_heat)
                ax.add_collection(lines)
            else:
                ax.scatter(t, y, c=heat, cmap=cmap, norm=norm, s=30)
        ax.set_xlim(-0.5, max(length - 0.5, 0.5))
        if channels > 1:
            ax.set_ylim(-(channels - 1) - 0.1, 0.95)
            ax.set_yticks([0.42 - c for c in range(channels)],
                          [f"ch {c}" for c in range(channels)], fontsize=7)
        else:
            low, high = float(cam.series[i, 0].min()), float(cam.series[i, 0].max())
            pad = 0.08 * max(high - low, 1e-3)
            ax.set_ylim(low - pad, high + pad)
            ax.tick_params(axis="y", labelsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(True, alpha=0.25)
        pred, tgt, true = cam.predicted[i], cam.targets[i], cam.true[i]
        wrong = true is not None and true != pred
        explains = "" if tgt == pred else f"; map of {run.classes[tgt]}"
        ax.set_title(f"{cam.labels[i]}: predicted {run.classes[pred]} "
                     f"({percent(cam.probability[i])}){explains}", fontsize=8.5,
                     color="crimson" if wrong else "black")
        if i // cols == rows - 1 or i + cols >= n:
            ax.set_xlabel("time step", fontsize=8)
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.9,
                       aspect=30, pad=0.01)
    bar.set_label("class activation (each series scaled 0..1)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    text = title or (f"{run.config.model} on {run.config.dataset} ({cam.split} split): "
                     "which part of each series decided its class (CAM)")
    # wrapped to the figure's width: one panel is narrower than the sentence
    fig.suptitle(textwrap.fill(text, width=int(fig.get_figwidth() * 14)), fontsize=10)
    return save_png(fig, path, dpi=110)


def plot_run_cam(run: LoadedRun, path: str | Path | None = None, split: str = "test",
                 indices: Sequence[int] = (), class_names: Sequence[str] = (),
                 per_class: int = PER_CLASS, limit: int = LIMIT, target: str | None = None,
                 data_dir: str | None = None, title: str = "") -> Path:
    """What `cnnlab visualize cam` draws: CAMs of a few series of the run's data set."""
    if not run.is_series:
        series_cam(run, torch.empty(0), [], [])  # the one-line error for an image run
    series, labels, true = pick_series(run, split, indices, class_names, per_class, limit,
                                       data_dir)
    return plot_cam(run, series_cam(run, series, labels, true, target, split), path, title)


def plot_mistakes_cam(run: LoadedRun, interp: Interpretation, path: str | Path,
                      which: str = "mistakes", limit: int = LIMIT, title: str = "") -> Path:
    """The most confident mistakes (``which="losses"``: the largest losses) of a series run,
    each coloured by the class activation map of the class it was taken for."""
    items = (interp.mistakes if which == "mistakes" else interp.top_losses)[:limit]
    label = "most confident mistakes" if which == "mistakes" else "largest losses"
    if not items:
        return _note_png(f"{run.config.model} on {interp.dataset} ({interp.split} split): "
                         f"no mistakes", path)
    series = torch.stack([interp.image(m) for m in items])
    labels = [f"#{m.index} true {interp.classes[m.true]}" for m in items]
    cam = series_cam(run, series, labels, [m.true for m in items], split=interp.split)
    return plot_cam(run, cam, path, title or f"{run.config.model} on {interp.dataset} "
                    f"({interp.split} split): {label}, coloured by the map of the predicted class")


def _note_png(text: str, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
    return save_png(fig, path, dpi=110)
