"""A run directory and the one way back from it to a ready model.

:class:`RunDir` is the only code that knows the file names inside a run directory::

    config.yaml          the resolved configuration (re-runnable as a recipe)
    preprocess.json      channels, size, mean/std, light-on-dark, memory layout (a series
                         run: "kind": "series", channels, length, z-normalisation)
    classes.json         class names, in output order
    metrics.csv/.jsonl   one row per epoch
    model.safetensors    the latest weights
    checkpoints/         epoch-NNN.safetensors + epoch-NNN.json (weights, optimizer, history)
    eval-SPLIT.json      results of `cnnlab eval`
    curves.png           `cnnlab plot`
    tensorboard/         TensorBoard event files (`cnnlab train --tensorboard`)

Every file is written atomically (temporary name, then rename) with normal permissions.
:func:`load_run` turns a run directory back into an eval-mode model with its preprocessing,
class names, configuration and history, without the data set's files: everything after
training (eval, plot, visualising, predict, serve, export) starts there.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError
from cnnlab.fileio import missing_folders, remove_empty, write_atomic, write_json

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cnnlab.config import TrainConfig
    from cnnlab.data.preprocess import Preprocess, SeriesPreprocess


@dataclass
class EpochMetrics:
    """One row of metrics.csv / metrics.jsonl. The test fields are None (empty in the csv,
    null in the jsonl) for epochs not evaluated (``eval_every`` > 1); the last epoch always is."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float | None
    test_acc: float | None
    lr: float
    examples_per_sec: float
    train_time: float  # seconds in training steps only (what d2l's examples/sec divides by)
    epoch_time: float  # seconds for the whole epoch, evaluation included


class RunDir:
    """A run directory: where each file lives, and reading and writing them."""

    CONFIG = "config.yaml"
    PREPROCESS = "preprocess.json"
    CLASSES = "classes.json"
    METRICS_CSV = "metrics.csv"
    METRICS_JSONL = "metrics.jsonl"
    WEIGHTS = "model.safetensors"
    CHECKPOINTS = "checkpoints"
    CURVES = "curves.png"
    TENSORBOARD = "tensorboard"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # rows already rendered by write_metrics, as (row, csv line, json line): a run of
        # hundreds of short epochs (a UCR set) would otherwise re-render its whole history
        # every epoch, which cost 30 s over 867 epochs
        self._rendered: list[tuple[EpochMetrics, str, str]] = []

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------- existence
    def is_run(self) -> bool:
        return (self.path / self.CONFIG).is_file()

    def require(self) -> RunDir:
        """Raise a clear error unless this is a run directory written by `cnnlab train`.

        A file is refused before anything reads it; a pickle (``.pt``, ``torch.save``) with the
        reason cnnlab never unpickles (:mod:`cnnlab.safety`)."""
        from cnnlab.safety import refuse_pickle

        if not self.path.exists():
            raise CnnlabError(f"{self.path} does not exist; give a run directory written by "
                              "`cnnlab train` (runs/MODEL-DATASET-TIME)")
        if not self.path.is_dir():  # a .pt checkpoint is the usual mistake: say why it is refused
            refuse_pickle(self.path)
            parent = RunDir(self.path.parent)
            hint = (f"it belongs to, {parent.path}" if parent.is_run() else
                    "that `cnnlab train` wrote")
            raise CnnlabError(f"{self.path} is a file, not a run directory; give the run "
                              f"folder {hint}")
        if not self.is_run():
            inside = sorted(d.name for d in self.path.iterdir()
                            if d.is_dir() and RunDir(d).is_run()) if self.path.is_dir() else []
            if inside:  # runs/ rather than runs/lenet
                shown = ", ".join(inside[:3]) + (", ..." if len(inside) > 3 else "")
                raise CnnlabError(f"{self.path} is not a run directory, but holds {len(inside)} "
                                  f"runs ({shown}); give one, e.g. {self.path / inside[0]}, "
                                  f"or several, e.g. {self.path}/* for `cnnlab report`")
            raise CnnlabError(f"{self.path} is not a cnnlab run directory (no {self.CONFIG}); "
                              "give the folder that `cnnlab train` wrote")
        return self

    def unfinished_guard(self) -> Callable[[], None]:
        """Call before a fresh run writes here; returns ``discard``, for when the run fails or
        is stopped before its first epoch ends. ``discard`` removes only what this run made
        (the run files that were not there before, the folders created for it, when empty):
        no half-run is left behind, and nothing of the user's or of an earlier run is touched.
        Once an epoch has finished (its metrics are written) everything is kept."""
        made = missing_folders(self.path)
        ours = (self.CONFIG, self.PREPROCESS, self.CLASSES, self.METRICS_CSV, self.METRICS_JSONL,
                self.WEIGHTS, self.TENSORBOARD, self.CHECKPOINTS)
        before = {name for name in ours if (self.path / name).exists()}

        def discard() -> None:
            import contextlib
            import shutil

            written = [n for n in ours if n not in before and (self.path / n).exists()]
            if not self.path.is_dir() or self.METRICS_CSV in written \
                    or self.CHECKPOINTS in written:
                return
            for name in written:
                target = self.path / name
                with contextlib.suppress(OSError):
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
            remove_empty(made)

        return discard

    def create(self) -> RunDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CnnlabError(f"cannot create the run directory {self.path} "
                              f"({e.strerror or e}); pick another --out") from None
        return self

    # ---------------------------------------------------------------------- config
    def write_config(self, cfg: TrainConfig) -> None:
        from cnnlab.config import dump_config

        write_atomic(self.path / self.CONFIG, dump_config(cfg))

    def read_config(self) -> dict[str, Any]:
        """The saved configuration as a dict (validated field names)."""
        from cnnlab.config import read_yaml_config

        self.require()
        return read_yaml_config(self.path / self.CONFIG)

    # ------------------------------------------------------ preprocessing and classes
    def write_meta(self, preprocess: Preprocess | SeriesPreprocess, classes: tuple[str, ...]
                   ) -> None:
        write_atomic(self.path / self.PREPROCESS, preprocess.to_json())
        write_json(self.path / self.CLASSES, {"classes": list(classes)})

    def read_classes(self) -> tuple[str, ...]:
        data = self._read_json(self.CLASSES)
        classes = data.get("classes") if isinstance(data, dict) else None
        if not isinstance(classes, list) or len(classes) < 2:
            raise CnnlabError(f"{self.path / self.CLASSES} has no list of class names; "
                              "the run directory is damaged")
        return tuple(str(c) for c in classes)

    def read_preprocess(self, config: dict[str, Any] | None = None
                        ) -> Preprocess | SeriesPreprocess:
        """preprocess.json; for runs from cnnlab 0.1 (no such file), the same facts from
        classes.json and config.yaml."""
        from cnnlab.data.preprocess import Preprocess

        path = self.path / self.PREPROCESS
        if path.is_file():
            try:
                return Preprocess.from_json(path.read_text(encoding="utf-8"))
            except CnnlabError as e:
                raise CnnlabError(f"{path}: {e}") from None
        old = self._read_json(self.CLASSES)
        config = config if config is not None else self.read_config()
        try:
            c, h, w = old["input_shape"]
            return Preprocess(channels=int(c), size=(int(h), int(w)),
                              mean=tuple(old["mean"]) if old.get("mean") else None,
                              std=tuple(old["std"]) if old.get("std") else None,
                              channels_last=bool(config.get("channels_last")))
        except (KeyError, TypeError, ValueError) as e:
            raise CnnlabError(f"{self.path} has no {self.PREPROCESS} and its {self.CLASSES} "
                              "lacks input_shape/mean/std; train the run again") from e

    def _read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CnnlabError(f"{path} is missing; the run directory is incomplete "
                              "(was training stopped before the first epoch?)") from None
        except (OSError, ValueError) as e:
            raise CnnlabError(f"{path} is unreadable ({e})") from None

    # --------------------------------------------------------------------- metrics
    def write_metrics(self, history: list[EpochMetrics]) -> None:
        """Rewrite metrics.csv and metrics.jsonl from the whole history, so they are always
        complete and a resumed run continues them without duplicate rows. Rows rendered by an
        earlier call are reused (the same objects), so each epoch renders only its own row."""
        names = [f.name for f in fields(EpochMetrics)]
        same = 0
        while (same < min(len(self._rendered), len(history))
               and self._rendered[same][0] is history[same]):
            same += 1
        del self._rendered[same:]
        for row in history[same:]:
            values = asdict(row)
            buf = io.StringIO()
            csv.DictWriter(buf, fieldnames=names, lineterminator="\n").writerow(values)
            self._rendered.append((row, buf.getvalue(), json.dumps(values) + "\n"))
        write_atomic(self.path / self.METRICS_CSV,
                     ",".join(names) + "\n" + "".join(c for _, c, _ in self._rendered))
        write_atomic(self.path / self.METRICS_JSONL, "".join(j for _, _, j in self._rendered))

    def read_metrics(self) -> list[EpochMetrics]:
        """The per-epoch history (empty when no epoch has finished)."""
        path = self.path / self.METRICS_JSONL
        if not path.is_file():
            return []
        try:
            return [EpochMetrics(**json.loads(line))
                    for line in path.read_text(encoding="utf-8").splitlines() if line]
        except (ValueError, TypeError) as e:
            raise CnnlabError(f"{path} is damaged ({e})") from None

    # ---------------------------------------------------------- weights, checkpoints
    @property
    def weights_path(self) -> Path:
        return self.path / self.WEIGHTS

    def save_weights(self, model: nn.Module) -> None:
        from cnnlab.engine.checkpoint import save_weights

        save_weights(self.weights_path, model)

    def load_weights(self, model: nn.Module) -> None:
        from cnnlab.engine.checkpoint import load_weights

        load_weights(self.weights_path, model)

    def checkpoint_stem(self, epoch: int) -> Path:
        return self.path / self.CHECKPOINTS / f"epoch-{epoch:03d}"

    def latest_checkpoint(self) -> Path | None:
        """Stem of the newest complete checkpoint (its JSON is written last), or None."""
        found = sorted((self.path / self.CHECKPOINTS).glob("epoch-*.json"))
        return found[-1].with_suffix("") if found else None

    def save_checkpoint(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                        ema: Any, meta: dict[str, Any], keep: int = 2) -> Path:
        """Checkpoint after ``epoch`` finished epochs, the final weights, and pruning to the
        newest ``keep`` checkpoints (0 keeps all)."""
        from cnnlab.engine.checkpoint import write_checkpoint

        stem = self.checkpoint_stem(epoch)
        write_checkpoint(stem, epoch, model, optimizer, ema, meta)
        self.save_weights(model)
        if keep:
            for old in sorted((self.path / self.CHECKPOINTS).glob("epoch-*.json"))[:-keep]:
                old.unlink()
                old.with_suffix(".safetensors").unlink(missing_ok=True)
        return stem

    # ----------------------------------------------------------- evaluation, plots
    def eval_path(self, split: str) -> Path:
        return self.path / f"eval-{split.replace(':', '-')}.json"  # ucr:NAME-test: no colon

    def write_eval(self, split: str, result: dict[str, Any]) -> Path:
        write_json(self.eval_path(split), result)
        return self.eval_path(split)

    @property
    def curves_path(self) -> Path:
        return self.path / self.CURVES

    @property
    def tensorboard_dir(self) -> Path:
        """Where ``--tensorboard`` writes its event files (``tensorboard --logdir`` on it, or
        on the folder of all runs)."""
        return self.path / self.TENSORBOARD


@dataclass
class LoadedRun:
    """A trained run, ready to use: what :func:`load_run` returns."""

    run_dir: RunDir
    model: nn.Module  # in eval mode, on ``device``, in the trained memory format
    preprocess: Preprocess | SeriesPreprocess
    classes: tuple[str, ...]
    config: TrainConfig
    history: list[EpochMetrics]
    device: torch.device

    @property
    def precision(self) -> str:
        return self.config.precision

    @property
    def is_series(self) -> bool:
        """Trained on 1-D time series (N, C, L) rather than images."""
        return self.preprocess.is_series

    def require_images(self, what: str) -> None:
        """A one-line error when ``what`` (a command or picture made for images) is asked of
        a time-series run, saying what to use instead."""
        if self.is_series:
            c, length = self.preprocess.input_shape
            raise CnnlabError(
                f"{what} takes images, and {self.run_dir} is a 1-D series run "
                f"({self.config.dataset}, {c}x{length}); for series use `cnnlab eval`, "
                f"`cnnlab report` or `cnnlab visualize cam {self.run_dir}`")

    def logits(self, images: Any) -> torch.Tensor:
        """Logits for a uint8 (N, C, H, W) batch of any size or channel count: a tensor, a
        numpy array, or Pillow images (one or a list; read as :func:`cnnlab.predict` reads
        files, without its inversion). A series run takes a float (N, C, L) batch of its
        shape."""
        import torch

        from cnnlab.device import autocast

        x = self.preprocess(self.as_batch(images).to(self.device))
        with torch.no_grad(), autocast(self.device, self.precision):
            return self.model(x).float()

    def probabilities(self, images: Any) -> torch.Tensor:
        """Class probabilities (N, classes) of a batch, as :meth:`logits` takes it (Keras'
        ``model.predict``); ``[run.classes[i] for i in p.argmax(1).tolist()]`` names the
        answers."""
        return self.logits(images).softmax(1)

    def as_batch(self, images: Any) -> torch.Tensor:
        """A tensor, a numpy array or Pillow image(s) -> a tensor batch (Pillow images at the
        model's channels and size: :func:`~cnnlab.data.preprocess.as_uint8_batch`); a series
        run takes tensors and arrays only. A one-line error naming what is accepted."""
        import numpy as np
        import torch

        from cnnlab.data.preprocess import as_uint8_batch

        if self.is_series and not isinstance(images, (torch.Tensor, np.ndarray)):
            c, length = self.preprocess.input_shape
            raise CnnlabError(f"{self.run_dir} is a 1-D series run: it takes float series "
                              f"(N, {c}, {length}) as a tensor or numpy array, got "
                              f"{type(images).__name__}")
        return as_uint8_batch(images, self.preprocess)  # series: float arrays as they are


def as_run(run: LoadedRun | str | Path, device: str = "auto") -> LoadedRun:
    """What the functions taking a trained run accept: a :class:`LoadedRun` as it is (its
    weights and device as they are in memory), or a run directory, loaded on ``device`` (so
    ``cnnlab.attribute("runs/a", x)`` works as ``cnnlab.attribute(load_run("runs/a"), x)``
    does)."""
    return run if isinstance(run, LoadedRun) else load_run(run, device)


def load_run(path: str | Path | LoadedRun, device: str = "auto") -> LoadedRun:
    """A run directory -> its model (eval mode, final weights) with preprocessing, class
    names, resolved config and metrics history. Needs no data set files.

    >>> run = load_run("runs/mnist-net-digits-20260101-120000")   # doctest: +SKIP
    >>> run.logits(uint8_images).argmax(1)                        # doctest: +SKIP
    """
    import torch

    from cnnlab.config import build_config
    from cnnlab.device import resolve_device
    from cnnlab.models import create_model

    if isinstance(path, LoadedRun):  # loaded already: load again (on ``device``)
        path = path.run_dir.path
    if not isinstance(path, (str, os.PathLike)):
        raise CnnlabError(f"a run is given as its directory (a str or Path) or as what "
                          f"load_run returns; got {type(path).__name__}")
    run = RunDir(path).require()
    saved = run.read_config()
    config = build_config(None, {}, base=saved)
    classes = run.read_classes()
    preprocess = run.read_preprocess(saved)
    dev = resolve_device(device)
    channels = {"in_channels": preprocess.channels} if preprocess.is_series else {}
    model = create_model(config.model, num_classes=len(classes), **channels)
    run.load_weights(model)
    model.to(dev)
    if preprocess.channels_last:
        model.to(memory_format=torch.channels_last)
    model.eval()
    return LoadedRun(run, model, preprocess, classes, config, run.read_metrics(), dev)
