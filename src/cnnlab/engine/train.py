"""The training loop: ``fit`` = epochs of ``train_one_epoch`` + ``evaluate``, with a run dir.

The hot loop is one flat function (forward, loss, ``zero_grad(set_to_none=True)``,
backward, step). Losses and correct counts accumulate on the device; the host syncs only
every ``log_every`` steps, to update the progress bar and to stop on a NaN/inf loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data.loader import DeviceLoader
from cnnlab.device import autocast
from cnnlab.distributed import SINGLE, Dist, backend_name, current, finish, teardown
from cnnlab.engine.build import build, stepped
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.ema import LookaheadEMA
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.graphed import GraphedSGDStep
from cnnlab.engine.optim import base_lr, lr_factor, set_lr
from cnnlab.errors import CnnlabError
from cnnlab.run import EpochMetrics, RunDir


class NonFiniteLoss(CnnlabError):
    """The loss became NaN or infinite; the run stops at once."""


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    examples: int
    seconds: float


@dataclass
class TrainResult:
    """What training returns (``cnnlab.train``): where the run was saved, its history, the
    trained model, and the resolved configuration it ran with."""

    run_dir: Path
    history: list[EpochMetrics]
    model: nn.Module
    config: TrainConfig | None = None


Progress = Callable[[int, int, float], None]  # (step, steps, running loss)


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                  x: torch.Tensor, y: torch.Tensor, precision: str, weight: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One eager step: forward, loss, zero_grad, backward, step; returns (loss, correct).

    ``weight`` scales the loss (under DDP: this rank's share of the global batch times the
    number of ranks, so that DDP's gradient average is the global batch's gradient)."""
    with autocast(x.device, precision):
        out = model(x)
        loss = criterion(out, y)
        if weight != 1.0:
            loss = loss * weight
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (out.argmax(1) == y).sum()


def train_one_epoch(model: nn.Module, loader: DeviceLoader, optimizer: torch.optim.Optimizer,
                    cfg: TrainConfig, epoch: int, global_step: int,
                    progress: Progress | None = None, ema: LookaheadEMA | None = None,
                    graphed: GraphedSGDStep | None = None, criterion: nn.Module | None = None
                    ) -> EpochResult:
    """One pass over the training split; returns mean loss, accuracy and timing (over all
    processes under DDP)."""
    device, dist = loader.device, loader.dist
    if criterion is None:
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    steps = len(loader)
    losses = torch.zeros(steps, device=device)  # per-step losses, checked every log_every
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, checked = 0, 0
    model.train()
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader.epoch(epoch)):
        set_lr(optimizer, cfg.lr * lr_factor(cfg, global_step + step, steps))
        if graphed is not None:
            loss, n_correct = graphed(x, y)
        elif dist.enabled:
            lo, hi = loader.batch_bounds(step)
            weight = len(y) * dist.world / (hi - lo)
            loss, n_correct = training_step(model, optimizer, criterion, x, y, cfg.precision,
                                            weight)
            loss = loss / dist.world  # summed over ranks at each log point: the batch's mean
        else:
            loss, n_correct = training_step(model, optimizer, criterion, x, y, cfg.precision)
        if ema is not None:
            ema.step(global_step + step + 1)
        losses[step] = loss.detach()
        correct += n_correct
        seen += len(y)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            dist.sum_(losses[checked:step + 1])  # every rank then sees the same losses
            log_point(losses, checked, step + 1, epoch, cfg.lr, progress)
            checked = step + 1
    if dist.enabled:
        counts = dist.sum_(torch.stack([correct, torch.tensor(seen, device=device)]))
        correct, seen = counts[0], int(counts[1])
    return epoch_result(losses, correct, seen, start)


def log_point(losses: torch.Tensor, checked: int, done: int, epoch: int, lr: float,
              progress: Progress | None) -> None:
    """Every ``log_every`` steps: stop on a NaN/inf loss among steps ``checked..done`` and
    report progress. The only place inside an epoch where the host waits for the device."""
    window = losses[checked:done]  # note: a CPU-GPU sync point
    if not bool(torch.isfinite(window).all()):
        bad = checked + int((~torch.isfinite(window)).nonzero()[0, 0])
        raise NonFiniteLoss(
            f"loss became {float(losses[bad])} at epoch {epoch + 1}, step {bad + 1} of "
            f"{len(losses)}; lower --lr (now {lr}) or check the data"
        )
    if progress is not None:
        progress(done, len(losses), float(window.mean()))


def epoch_result(losses: torch.Tensor, correct: torch.Tensor, seen: int, start: float
                 ) -> EpochResult:
    """Wait for the device (a sync point, at the epoch's end) and summarise the epoch."""
    if losses.device.type == "cuda":
        torch.cuda.synchronize(losses.device)
    seconds = time.perf_counter() - start
    return EpochResult(float(losses.mean()), int(correct) / max(seen, 1), seen, seconds)


def default_run_dir(cfg: TrainConfig, dist: Dist = SINGLE) -> Path:
    """``runs/MODEL-DATASET-YYYYmmdd-HHMMSS``, with ``-2``, ``-3``.. when a run started in the
    same second (a sweep in a loop) already took the name. Under DDP rank 0's choice is
    handed to every rank, so they all name the same folder."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.model}-{cfg.dataset.replace(':', '-')}-{stamp}"  # ucr:NAME
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    if dist.enabled:
        import torch.distributed

        chosen = [str(path)]
        torch.distributed.broadcast_object_list(chosen, src=0)  # among this run's own ranks
        path = Path(chosen[0])
    return path


def trainable(model: nn.Module) -> tuple[bool, ...]:
    """Which parameters take gradients now (a model may freeze some between epochs)."""
    return tuple(p.requires_grad for p in model.parameters())


def fit(cfg: TrainConfig, resume: Path | None = None, log: Callable[[str], None] = print,
        progress: Progress | None = None,
        on_epoch_end: Callable[[EpochMetrics], None] | None = None) -> TrainResult:
    """Train ``cfg`` (continuing ``resume``'s checkpoint when given); return the history.

    ``cfg`` itself is not changed: the run works on (and saves) a resolved copy. With
    ``cfg.tensorboard``, scalars also go to RUN_DIR/tensorboard (see :mod:`.tb_log`).
    Started by torchrun, every process trains its share of each batch under DDP and only
    rank 0 writes files or calls ``log``/``progress``/``on_epoch_end``
    (see :mod:`cnnlab.distributed`).
    """
    if cfg.tensorboard:  # a missing extra fails before the data is loaded or a file written
        from cnnlab.engine.tb_log import summary_writer_class

        summary_writer_class()
    main = current().is_main
    if not main:  # the other ranks are silent
        log, progress, on_epoch_end = (lambda _m: None), None, None
    discard: list[Callable[[], None]] = []  # set by _fit once it starts a fresh run folder
    try:
        result = _fit(cfg, resume, log, progress, on_epoch_end, discard)
        finish()  # every rank done (rank 0 has written its files) before any leaves the group
        return result
    except BaseException:  # an error, a NaN, Ctrl-C or SIGTERM before the first epoch ended
        for undo in discard:
            undo()
        raise
    finally:
        teardown()


def _fit(cfg: TrainConfig, resume: Path | None, log: Callable[[str], None],
         progress: Progress | None, on_epoch_end: Callable[[EpochMetrics], None] | None,
         discard: list[Callable[[], None]]) -> TrainResult:
    built = build(cfg, log, fresh=resume is None)  # raises before anything is written
    cfg, dist = built.cfg, built.dist
    model, optimizer = built.model, built.optimizer
    steps = len(built.train)
    ema = LookaheadEMA(model, cfg.ema_every, cfg.epochs * steps) if cfg.ema_every else None

    history: list[EpochMetrics] = []
    start_epoch = 0
    if resume is not None:
        run = RunDir(resume).require()  # a file (a .pt checkpoint) is refused, never read
        stem = run.latest_checkpoint()
        if stem is None:
            raise CnnlabError(f"{run} has no checkpoint to resume from; train it anew")
        trained_on = run.read_classes()
        if tuple(trained_on) != tuple(built.classes):  # another folder of images
            raise CnnlabError(f"the data now has classes {', '.join(built.classes)}, the run "
                              f"was trained on {', '.join(trained_on)}; resume with "
                              "the run's data (--data-dir), or start a new run")
        meta = load_checkpoint(stem, model, optimizer, ema)
        start_epoch = int(meta["epoch"])
        history = [EpochMetrics(**h) for h in meta["history"]]
        if start_epoch >= cfg.epochs:
            raise CnnlabError(f"{run} already finished {start_epoch} epoch"
                              f"{'s' * (start_epoch != 1)}; pass a larger --epochs to train "
                              "further")
        log(f"resuming {run} after epoch {start_epoch}")
        saved = run.read_config()
        before = saved.get("data_dir")
        if before and cfg.data_dir and Path(before) != Path(cfg.data_dir):
            log(f"the data is now read from {cfg.data_dir} (the run read {before} until now)")
        planned = saved.get("epochs")
        if planned and planned != cfg.epochs and cfg.schedule not in ("constant", "step"):
            log(f"(the {cfg.schedule} learning-rate schedule was laid out over {planned} "
                f"epochs and is now laid out over {cfg.epochs}: epoch {start_epoch + 1} starts "
                f"at its point on the new curve, not where epoch {start_epoch} left off)")
    else:
        run = RunDir(cfg.out if cfg.out else default_run_dir(cfg, dist))
        if run.latest_checkpoint() is not None:
            raise CnnlabError(f"{run} already holds a run; use --resume {run} "
                              "or pick another --out")
    cfg.out = str(run.path)
    failure = None
    if dist.is_main:  # one writer: rank 0
        if resume is None:
            discard.append(run.unfinished_guard())
        try:
            run.create()
            run.write_config(cfg)
            run.write_meta(built.preprocess, built.classes)
        except CnnlabError as e:
            failure = e
    dist.agree(failure)  # the other ranks stop too, instead of waiting in the first step
    if dist.enabled:
        log(f"DDP: {dist.world} processes ({backend_name()}),"
            f" global batch {cfg.batch_size}, {torch.get_num_threads()} CPU thread(s) each")

    graphed = None
    if cfg.cuda_graphs and (cfg.optimizer != "sgd" or cfg.compile):  # a recipe's, changed
        log(f"(cuda_graphs captures plain SGD steps without --compile: training eagerly with "
            f"{cfg.optimizer}{' and --compile' if cfg.compile else ''})")
    elif cfg.cuda_graphs and built.device.type == "cuda" and dist.enabled:
        log("(cuda_graphs is not used under DDP, whose gradient all-reduce runs outside a "
            "captured graph: training eagerly)")
    elif cfg.cuda_graphs and built.device.type == "cuda":
        graphed = GraphedSGDStep(
            model, optimizer, built.criterion, cfg.precision,
            (cfg.batch_size, *built.preprocess.input_shape), built.device,
            bool(cfg.channels_last))
    elif cfg.cuda_graphs:
        log(f"(cuda_graphs applies to CUDA devices only: training eagerly on {built.device})")
    if cfg.warmup_epochs and cfg.warmup_epochs >= cfg.epochs and cfg.schedule in ("cosine",
                                                                                   "step"):
        log(f"(the {cfg.warmup_epochs:g}-epoch warm-up fills all {cfg.epochs} epochs: the lr "
            f"only rises to its peak and never decays; train longer or lower --warmup-epochs)")
    if cfg.tta == 1 and not cfg.flip:
        log("(--tta 1 averages each test image with its mirror image, which a run trained "
            "without --flip does not use: the final evaluation sees one view; --tta 2 adds "
            "1-pixel shifts)")
    on_epoch_start = getattr(model, "on_epoch_start", None)
    hooked = trainable(model)  # the parameters DDP hooked when it wrapped the model
    tb = None
    if cfg.tensorboard and dist.is_main:
        from cnnlab.engine.tb_log import TensorboardLogger

        tb = TensorboardLogger(run.tensorboard_dir,
                               purge_step=start_epoch * steps + 1 if resume is not None else None)
    try:
        warned_test = False
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            if on_epoch_start is not None:
                on_epoch_start(epoch)  # e.g. airbench freezes its whitening bias after epoch 3
                if dist.enabled and trainable(model) != hooked:
                    # DDP waits for a gradient of every parameter it hooked: wrap anew, on
                    # every rank at the same epoch (its constructor is a collective)
                    built.step_model = stepped(model, cfg, dist, built.device)
                    hooked = trainable(model)
            use_ema = ema if ema is not None and epoch >= cfg.ema_start_epoch else None
            step_progress = progress if tb is None else tb.progress(epoch * steps, progress)
            tr = train_one_epoch(built.step_model, built.train, optimizer, cfg, epoch,
                                 epoch * steps, step_progress, use_ema, graphed, built.criterion)
            if use_ema is not None:
                use_ema.copy_to_model()
            last = epoch + 1 == cfg.epochs
            test_loss = test_acc = None
            if last or (epoch + 1) % cfg.eval_every == 0:
                # TTA costs up to 6 forward passes: only the final evaluation uses it (as
                # airbench reports)
                ev = evaluate(built.step_model, built.test, len(built.classes), cfg.precision,
                              cfg.tta if last else 0, mirror=cfg.flip)
                test_loss, test_acc = ev.loss, ev.accuracy
                # a cross-entropy of 1e4 needs logits of that size: overflow, not learning
                if not (math.isfinite(test_loss) and test_loss < 1e4) and not warned_test:
                    warned_test = True
                    log(f"(note: the test loss is {test_loss:.3g}: the model's outputs overflow on "
                        "the test images although training stayed finite; BatchNorm "
                        "statistics of near-constant images can do this. Test accuracy is not "
                        "meaningful; check the data, or try another model)")
            row = EpochMetrics(
                epoch=epoch + 1, train_loss=tr.loss, train_acc=tr.accuracy, test_loss=test_loss,
                test_acc=test_acc, lr=base_lr(optimizer),
                examples_per_sec=tr.examples / max(tr.seconds, 1e-9), train_time=tr.seconds,
                epoch_time=time.perf_counter() - t0,
            )
            history.append(row)
            if dist.is_main:
                if last or (epoch + 1) % cfg.checkpoint_every == 0:
                    run.save_checkpoint(epoch + 1, model, optimizer, ema,
                                        {"global_step": (epoch + 1) * steps,
                                         "history": [asdict(h) for h in history]},
                                        keep=cfg.keep_checkpoints)
                run.write_metrics(history)
            if tb is not None:  # after the checkpoint: TensorBoard shows what a resume keeps
                tb.log_epoch(row)
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:  # also on an error or Ctrl-C: what was logged reaches the event file
        if tb is not None:
            tb.close()
    return TrainResult(run.path, history, model, cfg)
