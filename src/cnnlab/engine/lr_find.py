"""The learning-rate range test (Leslie Smith 2015, as fastai's ``lr_find`` runs it).

Train for up to ``steps`` steps while the lr grows exponentially from ``start_lr`` to
``end_lr``; record the loss and its exponential moving average (with bias correction), and
stop once that average exceeds ``diverge`` x the best one so far or stops being finite: past
that point the curve says nothing more.

The three suggestions, named as fastai names them, are read off a *centred* smoothing of the
raw losses (a Gaussian over neighbouring steps, applied once the sweep is over), not off the
moving average: an average of past steps lags the lr it is plotted against, by a factor of 3
to 10 in lr near the minimum on our sweeps, which pushed every suggestion too high.

- ``valley``: fastai's pick, the point halfway along the longest descending stretch of the
  curve (a longest decreasing subsequence). The stretch starts where the loss has fallen a
  tenth of the way from its starting level to its minimum: a net trained from scratch learns
  nothing at tiny lrs, and in fastai's version that long, faintly falling start won the
  longest descent and put the valley 30-300x too low on every sweep we tried;
- ``steep``: where the loss falls fastest per unit of log-lr, before the minimum;
- ``minimum/10``: the lr of the lowest loss, divided by 10 (at the minimum the lr is
  already about to be too large).

A sweep trains the model, so everything it changes is put back afterwards (in a
``finally``): the weights and buffers, the gradients, train/eval mode, the optimizer's state
and lr, the torch RNGs and the loader's own state where it has one. Training after
``lr_find`` is then the same as training without it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.engine.optim import set_lr
from cnnlab.engine.train import training_step
from cnnlab.errors import CnnlabError

SUGGESTIONS = ("valley", "steep", "minimum/10")
Progress = Callable[[int, int, float, float], None]  # (step, steps, lr, smoothed loss)


@dataclass
class LRFindResult:
    """One sweep: per step the lr, the raw and the smoothed loss; the suggested lrs."""

    lrs: list[float]
    losses: list[float]  # raw per-batch losses
    smoothed: list[float]  # bias-corrected exponential moving average (the stop rule's)
    steps: int  # steps asked for; ``len(lrs)`` is fewer when the sweep stopped early
    suggestions: dict[str, float] = field(default_factory=dict)  # name -> lr
    stopped_early: bool = False
    stop_reason: str | None = None
    warning: str | None = None  # the suggestions disagree, or there are too few points
    skip: tuple[int, int] = (0, 0)  # points left out of the suggestions at (start, end)
    config: TrainConfig | None = None  # the resolved config (lr_find_config only)
    learned: bool = True  # False: the loss never beat guessing (lr_find_config only)
    chance: float | None = None  # ln(classes): the loss of guessing (lr_find_config only)

    @property
    def curve(self) -> list[float]:
        """The centred smoothing of the raw losses that the suggestions are read from (up to
        the first non-finite loss)."""
        return centred(self.losses, self.steps).tolist()


def check_sweep(start_lr: float, end_lr: float, steps: int) -> None:
    """Refuse a sweep that cannot work, before any data is loaded."""
    if not (start_lr > 0 and end_lr > 0) or math.isinf(end_lr):
        raise CnnlabError(f"--start-lr and --end-lr must be positive numbers, got {start_lr} "
                          f"and {end_lr}")
    if start_lr >= end_lr:
        raise CnnlabError(f"--start-lr ({start_lr}) must be below --end-lr ({end_lr})")
    if steps < 5:
        raise CnnlabError(f"--steps must be at least 5, got {steps}")


def sweep_lrs(start_lr: float, end_lr: float, steps: int) -> list[float]:
    """The exponential schedule: ``start_lr`` at step 0, ``end_lr`` at the last step."""
    return [start_lr * (end_lr / start_lr) ** (i / (steps - 1)) for i in range(steps)]


def trim(steps: int) -> tuple[int, int]:
    """Points left out of the suggestions: fastai skips ``steps // 10`` at the start (the
    average is still warming up) and 5 at the end (the climb to divergence); short sweeps
    skip proportionally fewer at the end."""
    return steps // 10, min(5, steps // 10)


def centred(losses: list[float], steps: int) -> np.ndarray:
    """The raw losses up to the first non-finite one, capped at the starting level (the median
    of the first tenth: above it the net is no better than untrained, and a diverging loss of
    1e3 would otherwise bleed back into the minimum), then smoothed by a Gaussian over
    neighbouring steps (sigma ``steps / 33``: 3 steps of a 100-step sweep, a quarter of a
    decade of lr at the default range). Centred, so a fall is drawn at the lr that caused it."""
    from scipy.ndimage import gaussian_filter1d  # scipy comes with scikit-learn

    loss = np.asarray(losses, dtype=np.float64)
    bad = np.nonzero(~np.isfinite(loss))[0]
    loss = loss[:int(bad[0])] if len(bad) else loss
    if len(loss) == 0:
        return loss
    start = float(np.median(loss[:max(steps // 10, 3)]))
    return gaussian_filter1d(np.minimum(loss, start), max(steps / 33, 1.0), mode="nearest")


def _longest_descent(losses: np.ndarray) -> tuple[int, int]:
    """First and last index of the longest strictly decreasing subsequence (dynamic
    programming, O(n^2); the first of the longest on ties, as fastai)."""
    n = len(losses)
    length = np.ones(n, dtype=np.int64)
    first = np.arange(n)  # where the longest run ending at i starts
    for i in range(1, n):
        higher = np.nonzero(losses[:i] > losses[i])[0]
        if len(higher):
            j = higher[np.argmax(length[higher])]
            length[i], first[i] = length[j] + 1, first[j]
    end = int(np.argmax(length))
    return int(first[end]), end


def _usable(lrs: list[float], curve: list[float] | np.ndarray, skip_start: int,
            skip_end: int) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """The curve cut at its first non-finite value and trimmed, with the index where its fall
    begins (a tenth of the way down from its highest point before the minimum, trimmed ends
    included, to the minimum) and the minimum's index; None with fewer than 3 points."""
    whole = np.asarray(curve, dtype=np.float64)
    bad = np.nonzero(~np.isfinite(whole))[0]
    n = int(bad[0]) if len(bad) else len(whole)
    lr = np.asarray(lrs, dtype=np.float64)[skip_start:n - skip_end]
    loss = whole[skip_start:n - skip_end]
    if len(loss) < 3:
        return None
    low = int(np.argmin(loss))
    top = float(np.max(whole[:skip_start + low + 1]))
    falling = np.nonzero(loss[:low + 1] < top - 0.1 * (top - loss[low]))[0]
    return lr, loss, int(falling[0]) if len(falling) else 0, low


def suggest(lrs: list[float], curve: list[float] | np.ndarray, skip_start: int = 0,
            skip_end: int = 0) -> dict[str, float]:
    """The three suggested lrs from a smoothed loss curve (``{}`` with fewer than 3 usable
    points). The curve is cut at its first non-finite value, then trimmed; the valley is
    looked for from where the loss has fallen a tenth of the way to its minimum."""
    usable = _usable(lrs, curve, skip_start, skip_end)
    if usable is None:
        return {}
    lr, loss, begin, low = usable
    slope = np.diff(loss) / np.diff(np.log(lr))
    steep = int(np.argmin(slope[:low])) if low > 0 else 0  # the fastest fall *to* the minimum
    first, last = _longest_descent(loss[begin:low + 1])
    third = (last - first) / 3  # fastai's point: a third plus a sixth of the way along
    valley = begin + first + int(third) + int(third / 2)
    return {"valley": float(lr[valley]), "steep": float(lr[steep]),
            "minimum/10": float(lr[low] / 10)}


def slow_fall(lrs: list[float], curve: list[float] | np.ndarray, skip_start: int = 0,
              skip_end: int = 0, decades: float = 3.0) -> str | None:
    """A warning when the loss falls over more than ``decades`` decades of lr instead of at a
    cliff (1-2.2 decades on every image sweep we measured; 3.2-3.9 on the 50-series GunPoint,
    which a 100-step sweep sees ~30 times, so its loss falls with the steps as much as with
    the lr). The valley then sits early on the slope: 20-45x below the recipe's 0.003 in the
    sweeps measured (0.00014 in the README's run)."""
    usable = _usable(lrs, curve, skip_start, skip_end)
    if usable is None:
        return None
    lr, _loss, begin, low = usable
    span = math.log10(lr[low] / lr[begin])
    if span <= decades:
        return None
    return (f"the loss falls slowly over {span:.1f} decades of lr ({lr[begin]:.2g} to "
            f"{lr[low]:.2g}) instead of at a cliff, so the valley sits early on the slope (a "
            "small data set, seen many times in one sweep, does this); compare lrs between "
            "the valley and the minimum in short runs")


def disagreement(suggestions: dict[str, float], factor: float = 10.0) -> str | None:
    """A warning when the largest and smallest suggestion are more than ``factor`` apart: the
    curve then has no clear descent, and no single number should be trusted blindly."""
    if not suggestions:
        return None
    ratio = max(suggestions.values()) / min(suggestions.values())
    if ratio <= factor:
        return None
    values = ", ".join(f"{k} {v:.2g}" for k, v in suggestions.items())
    text = (f"the suggestions disagree by {ratio:.0f}x ({values}): the curve has no single "
            "clear descent")
    return text + "; sweep again with more --steps or a larger --batch-size"


def _batches(loader: Iterable) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, epoch after epoch, for as long as the sweep needs."""
    epoch = 0
    while True:
        batches = loader.epoch(epoch) if hasattr(loader, "epoch") else iter(loader)
        empty = True
        for batch in batches:
            empty = False
            if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise CnnlabError(f"the loader's batches must be (inputs, labels) pairs, got "
                                  f"{type(batch).__name__}; for dict batches wrap the loader: "
                                  "((b['image'], b['label']) for b in loader)")
            yield batch[0], batch[1]
        if empty:
            raise CnnlabError("the training loader gives no batches: nothing to sweep")
        epoch += 1


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state:
        torch.mps.set_rng_state(state["mps"])


def lr_find(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
            loader: Iterable, precision: str = "fp32", start_lr: float = 1e-7,
            end_lr: float = 10.0, steps: int = 100, smooth: float = 0.98, diverge: float = 4.0,
            progress: Progress | None = None, classes: int | None = None) -> LRFindResult:
    """Run the range test on any model, optimizer and loader of (inputs, labels) batches
    (a :class:`~cnnlab.data.loader.DeviceLoader` or a ``DataLoader``); leave them as found.

    Every param group's lr is set directly each step (times its ``lr_scale``, so the
    suggestions are base lrs, like ``--lr``): no schedule or warm-up applies during the sweep.
    ``classes``, for a cross-entropy over that many classes, sets the guessing level ln(classes)
    that the plot draws and that the loss must get below for the suggestions to count.
    """
    check_sweep(start_lr, end_lr, steps)
    if not 0 <= smooth < 1 or diverge <= 1:
        raise CnnlabError(f"smooth must be in [0, 1) and diverge above 1, got {smooth}, {diverge}")
    params = list(model.parameters())
    mine = {id(p) for p in params}
    if not any(id(p) in mine for g in optimizer.param_groups for p in g["params"]):
        raise CnnlabError("the optimizer holds none of the model's parameters, so the sweep "
                          "would train nothing; make it from this model: "
                          "torch.optim.SGD(model.parameters(), lr=...)")
    device = params[0].device if params else torch.device("cpu")
    saved_model = copy.deepcopy(model.state_dict())
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    saved_modes = {m: m.training for m in model.modules()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    saved_rng = _rng_state()
    saved_loader = copy.deepcopy(loader.state_dict()) if hasattr(loader, "state_dict") else None

    lrs, losses, smoothed = [], [], []
    avg, best, reason = 0.0, math.inf, None
    try:
        model.train()
        batches = _batches(loader)
        for i, lr in enumerate(sweep_lrs(start_lr, end_lr, steps)):
            x, y = next(batches)
            set_lr(optimizer, lr)
            loss, _ = training_step(model, optimizer, criterion, x.to(device), y.to(device),
                                    precision)
            raw = float(loss)  # a sync per step: the stop test needs the value now
            avg = smooth * avg + (1 - smooth) * raw
            value = avg / (1 - smooth ** (i + 1))
            lrs.append(lr)
            losses.append(raw)
            smoothed.append(value)
            if progress is not None:
                progress(i + 1, steps, lr, value)
            if not math.isfinite(value):
                reason = f"the loss became {value} at lr {lr:.3g} (step {i + 1} of {steps})"
                break
            if value > diverge * best:
                reason = (f"the loss's running average passed {diverge:g}x its best at lr {lr:.3g} "
                          f"(step {i + 1} of {steps})")
                break
            best = min(best, value)
    finally:
        model.load_state_dict(saved_model)
        for p, g in zip(params, saved_grads, strict=True):
            p.grad = g
        for m, mode in saved_modes.items():
            m.training = mode
        optimizer.load_state_dict(saved_optimizer)
        _set_rng_state(saved_rng)
        if saved_loader is not None:
            loader.load_state_dict(saved_loader)

    skip = trim(steps)
    curve = centred(losses, steps)
    suggestions = suggest(lrs, curve, *skip)
    warning = disagreement(suggestions) or slow_fall(lrs, curve, *skip)
    if not suggestions:
        warning = (f"only {len(lrs)} steps before the sweep stopped: too few points to suggest "
                   "an lr; lower --start-lr or raise --steps")
    early = reason is not None and len(lrs) < steps  # a climb at the very last step ends
    result = LRFindResult(lrs, losses, smoothed, steps, suggestions,  # the sweep anyway
                          stopped_early=early, stop_reason=reason if early else None,
                          warning=warning, skip=skip,
                          chance=math.log(classes) if classes and classes > 1 else None)
    note = guessing(result)
    if note is not None:
        result.warning, result.learned = note, False
    return result


def lr_find_config(cfg: TrainConfig, start_lr: float = 1e-7, end_lr: float = 10.0,
                   steps: int = 100, smooth: float = 0.98, diverge: float = 4.0,
                   log: Callable[[str], None] = lambda _m: None,
                   progress: Progress | None = None) -> LRFindResult:
    """The range test of a training config: built by the one build path (same data,
    augmentation, model, optimizer, loss and precision as ``cnnlab train``), swept from
    epoch 0 of the training loader on. ``cfg.lr`` and its schedule are not used; EMA, TTA
    and CUDA graphs do not apply (the steps are eager)."""
    from cnnlab.engine.build import build

    check_sweep(start_lr, end_lr, steps)
    built = build(cfg, log)
    on_epoch_start = getattr(built.model, "on_epoch_start", None)
    if on_epoch_start is not None:  # e.g. airbench: the whitening bias trains in epoch 0
        on_epoch_start(0)
    result = lr_find(built.step_model, built.optimizer, built.criterion, built.train,
                     built.cfg.precision, start_lr, end_lr, steps, smooth, diverge, progress,
                     classes=len(built.classes))
    result.config = built.cfg
    return result


def guessing(result: LRFindResult) -> str | None:
    """A warning when the loss never fell below ``result.chance`` = ln(classes), the
    cross-entropy of a net that gives every class the same probability (label smoothing or
    not): such a net learned nothing during the sweep, so the suggestions only mark where it
    stopped being worse than a guess. d2l's sigmoid LeNet is one: on Fashion-MNIST it learns
    only near lr 0.9."""
    head, tail = result.skip
    curve = np.asarray(result.curve)[head:len(result.lrs) - tail]
    if result.chance is None or len(curve) == 0 or curve.min() < result.chance:
        return None
    classes = round(math.exp(result.chance))
    return (f"the loss never fell below {result.chance:.2f} = ln({classes}), the loss of "
            "guessing every class equally: the net learned nothing in this sweep, so there is "
            "no lr to suggest (a net that sits on a plateau first, like a sigmoid LeNet, needs "
            "more steps than a sweep has); compare a few lrs over a few epochs each")


def plot_lr_find(result: LRFindResult, path: str | Path, title: str = "",
                 reference: tuple[str, float] | None = None) -> Path:
    """The centred smoothed loss against lr (log x) with the suggestions marked on it; write
    ``path`` as PNG.

    ``reference`` adds a labelled vertical line (the lr a recipe uses). The raw losses are
    drawn faintly behind (the noise the smoothing removes); the trimmed
    ends, which the suggestions ignore, are shaded. The y range follows the smoothed curve
    before the final climb, so a divergence does not flatten the part worth reading.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnlab.viz.plots import save_png

    lr = np.asarray(result.lrs, dtype=np.float64)
    raw = np.asarray(result.losses, dtype=np.float64)
    curve = np.asarray(result.curve, dtype=np.float64)
    sm = np.full(len(lr), np.nan)
    sm[:len(curve)] = curve
    ok = np.isfinite(sm)
    if not ok.any():
        raise CnnlabError("the sweep recorded no finite loss: nothing to plot; lower --start-lr")
    fig, ax = plt.subplots(figsize=(8.6, 4.4), dpi=120)
    ax.plot(lr[np.isfinite(raw)], raw[np.isfinite(raw)], "-", color="0.6", lw=0.8, alpha=0.5,
            label="loss per batch")
    ax.plot(lr[ok], sm[ok], "-", color="tab:blue", lw=2, label="smoothed loss (centred)")
    head, tail = result.skip
    n = len(lr)
    if head:
        ax.axvspan(lr[0], lr[min(head, n - 1)], color="0.92", zorder=0)
    if tail and n - tail - 1 > 0:
        ax.axvspan(lr[n - tail - 1], lr[-1], color="0.92", zorder=0,
                   label="not used for suggestions")
    styles = {"valley": ("o", "tab:red"), "steep": ("^", "tab:orange"),
              "minimum/10": ("s", "tab:green")}
    log_lr = np.log(lr[ok])
    for name, value in result.suggestions.items() if result.learned else ():
        marker, colour = styles.get(name, ("D", "tab:purple"))
        y = float(np.interp(math.log(value), log_lr, sm[ok]))
        ax.axvline(value, color=colour, ls=":", lw=1)
        ax.plot([value], [y], marker=marker, color=colour, ms=9, ls="none", mec="black",
                mew=0.6, zorder=5, label=f"{name}: {value:.2g}")
    if result.chance is not None:  # below this line the net does better than guessing
        ax.axhline(result.chance, color="0.45", ls="-.", lw=1,
                   label=f"guessing: ln({round(math.exp(result.chance))}) = {result.chance:.2f}")
    if reference is not None:  # e.g. ("recipe lr", 0.01): where the user stands now
        ax.axvline(reference[1], color="0.25", ls="--", lw=1.2,
                   label=f"{reference[0]}: {reference[1]:.2g}")
    # the curve is capped at the starting level, so its range is the part worth reading;
    # the raw losses of a divergence leave through the top
    lo, hi = float(sm[ok].min()), float(sm[ok].max())
    if result.chance is not None and result.chance < hi:
        lo = min(lo, result.chance)
    pad = 0.06 * max(hi - lo, 1e-3)
    ax.set_ylim(lo - pad, hi + 2 * pad)
    ax.set_xscale("log")
    ax.set_xlim(lr[0], lr[-1])
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    # beside the axes, not on them: the curve can run through any corner
    ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    import textwrap

    status = (f"stopped after {n} of {result.steps} steps: loss diverged"
              if result.stopped_early else f"{n} steps")
    # the warning goes on the picture too: a plot passed around without the console output
    # must not look like a clean result
    footer = [status, *textwrap.wrap(f"warning: {result.warning}", 150)] if result.warning \
        else [status]
    ax.set_title(title or "learning-rate range test", fontsize=11)
    fig.text(0.5, 0.005, "\n".join(footer), ha="center", va="bottom", fontsize=8,
             color="0.35" if not result.warning else "#8a5a00", linespacing=1.3)
    fig.tight_layout(rect=(0, 0.005 + 0.032 * len(footer), 1, 1))
    return save_png(fig, path, dpi=120)
