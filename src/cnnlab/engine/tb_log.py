"""TensorBoard scalars for ``cnnlab train --tensorboard``, kept out of the training loop.

``fit`` hands this logger what it already computes: each epoch's :class:`EpochMetrics` row
(the same numbers as metrics.jsonl) and, at each log point, the running train loss that
``log_point`` has already brought to the host. So TensorBoard adds no synchronisation with
the device and no work per step.

Epoch scalars use the epoch number (1, 2, ...) as their step; the log-point loss uses the
global training step, under its own ``step/`` group so the two x-axes are never mixed in
one chart. A resumed run appends a new event file to the same folder; its steps continue
where the checkpoint left off, and points a crashed run logged past that checkpoint are
purged (``purge_step``), so no chart shows the same steps twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.extras import require_extra

if TYPE_CHECKING:
    from cnnlab.engine.train import Progress
    from cnnlab.run import EpochMetrics

# metrics.jsonl column -> TensorBoard tag (every column but the epoch, which is the step)
EPOCH_TAGS = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "test_loss": "test/loss",
    "test_acc": "test/acc",
    "lr": "lr",
    "examples_per_sec": "examples_per_sec",
    "train_time": "train_time",
    "epoch_time": "epoch_time",
}
STEP_LOSS_TAG = "step/train_loss"


def summary_writer_class() -> type:
    """torch's ``SummaryWriter``; a one-line error naming the extra when tensorboard is
    missing. ``fit`` calls it first, so a missing extra fails before anything is built or
    written."""
    require_extra("tensorboard", extra="tensorboard", feature="--tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


class TensorboardLogger:
    """Scalars of one run, written to ``log_dir`` (RUN_DIR/tensorboard)."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        """``purge_step``: when resuming, the first global step the resumed run will log;
        TensorBoard hides anything an earlier, interrupted attempt logged from there on."""
        self.writer: Any = summary_writer_class()(str(log_dir), purge_step=purge_step)

    def log_step(self, step: int, loss: float) -> None:
        """The running train loss at a log point (mean of the steps since the last one)."""
        self.writer.add_scalar(STEP_LOSS_TAG, loss, step)

    def log_epoch(self, row: EpochMetrics) -> None:
        """One epoch's metrics, at step = epoch; test metrics only for evaluated epochs
        (``--eval-every``), then a flush so a running TensorBoard sees the epoch at once."""
        for name, tag in EPOCH_TAGS.items():
            value = getattr(row, name)
            if value is not None:
                self.writer.add_scalar(tag, value, row.epoch)
        self.writer.flush()

    def progress(self, first_step: int, then: Progress | None) -> Progress:
        """A progress callback for one epoch (whose first global step is ``first_step``) that
        logs the running loss, then calls ``then`` (the progress bar), if any."""

        def report(done: int, steps: int, loss: float) -> None:
            self.log_step(first_step + done, loss)
            if then is not None:
                then(done, steps, loss)

        return report

    def close(self) -> None:
        """Flush and close the event file (also on an error or Ctrl-C: see ``fit``)."""
        self.writer.close()
