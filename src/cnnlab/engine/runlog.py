"""The run directory's metric files: metrics.csv and metrics.jsonl, one row per epoch.

Both are rewritten atomically from the whole history after every epoch (they are tiny),
so they are always complete, and a resumed run continues them without duplicate rows.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cnnlab.fileio import write_atomic


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    lr: float
    examples_per_sec: float
    train_time: float  # seconds in training steps only (what d2l's examples/sec divides by)
    epoch_time: float  # seconds for the whole epoch, evaluation included


def write_metrics(run_dir: Path, history: list[EpochMetrics]) -> None:
    names = [f.name for f in fields(EpochMetrics)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(asdict(row))
    write_atomic(run_dir / "metrics.csv", buf.getvalue())
    write_atomic(run_dir / "metrics.jsonl",
                 "".join(json.dumps(asdict(r)) + "\n" for r in history))


def read_metrics(run_dir: Path) -> list[EpochMetrics]:
    """Read metrics.jsonl of a run directory (empty list when absent)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [EpochMetrics(**json.loads(line)) for line in path.read_text().splitlines() if line]
