"""`cnnlab train --tensorboard`: the event file holds metrics.jsonl's numbers, resumes continue
it, and a missing extra is one line before anything is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cnnlab
from cnnlab.api import train_config
from cnnlab.cli import cli
from cnnlab.engine.tb_log import EPOCH_TAGS, STEP_LOSS_TAG, TensorboardLogger
from cnnlab.engine.train import fit
from cnnlab.errors import CnnlabError
from cnnlab.extras import require_extra

# 256 examples in batches of 64: 4 steps per epoch, a log point every 3 steps (3 and 4)
TINY = {"model": "mnist-net", "dataset": "digits", "resize": 28, "limit_train": 256,
        "limit_test": 64, "batch_size": 64, "log_every": 3, "tensorboard": True}
STEPS, LOG_POINTS = 4, (3, 4)


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in RUN_DIR/tensorboard (all event files, in order) as (step, value)."""
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea_mod.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={ea_mod.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _f32(x: float) -> float:
    """A metric as TensorBoard stores it (float32)."""
    return float(np.float32(x))


def test_event_file_holds_the_metrics_of_every_epoch(tmp_path):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra")
    # eval_every=2 over 3 epochs: epoch 1 is not evaluated, so test/* has epochs 2 and 3 only
    result = cnnlab.train(**TINY, epochs=3, eval_every=2, out=str(tmp_path / "run"))
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    scalars = _scalars(result.run_dir)

    assert set(scalars) == {*EPOCH_TAGS.values(), STEP_LOSS_TAG}
    for column, tag in EPOCH_TAGS.items():
        expect = [(r["epoch"], _f32(r[column])) for r in rows if r[column] is not None]
        assert scalars[tag] == expect, tag
    assert [step for step, _ in scalars["test/acc"]] == [2, 3]

    # the running loss at each log point, at the global step; weighted by the steps in each
    # window, its points average to the epoch's train loss
    steps = [step for step, _ in scalars[STEP_LOSS_TAG]]
    assert steps == [e * STEPS + p for e in range(3) for p in LOG_POINTS]
    windows = np.diff((0, *LOG_POINTS))
    for e, row in enumerate(rows):
        points = np.array([v for _, v in scalars[STEP_LOSS_TAG][2 * e:2 * e + 2]])
        assert float(points @ windows) / STEPS == pytest.approx(row["train_loss"], rel=1e-5)
    assert result.config.tensorboard is True
    assert "tensorboard: true" in (result.run_dir / "config.yaml").read_text()


def test_interrupted_run_is_closed_and_its_resume_repeats_no_step(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra")
    run = tmp_path / "run"
    closed: list[bool] = []
    real_close = TensorboardLogger.close

    def spy_close(self: TensorboardLogger) -> None:
        closed.append(True)
        real_close(self)

    monkeypatch.setattr(TensorboardLogger, "close", spy_close)

    calls: list[int] = []

    def interrupt_in_epoch_2(done: int, steps: int, loss: float) -> None:
        calls.append(done)
        if len(calls) == 3:  # epoch 2's first log point (global step 7)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(train_config(**TINY, epochs=2, out=str(run)), log=lambda _m: None,
            progress=interrupt_in_epoch_2)
    # closed on the way out: the point logged just before the interrupt is on disk
    assert closed == [True]
    assert [s for s, _ in _scalars(run)[STEP_LOSS_TAG]] == [3, 4, 7]

    cnnlab.train(resume=run)  # the saved config keeps --tensorboard on
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    scalars = _scalars(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert scalars["train/loss"] == [(r["epoch"], _f32(r["train_loss"])) for r in rows]
    assert [r["epoch"] for r in rows] == [1, 2]
    # epoch 2 ran again from its start: step 7 of the interrupted attempt was purged
    assert [s for s, _ in scalars[STEP_LOSS_TAG]] == [3, 4, 7, 8]


def test_missing_extra_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    """Runs without the extra too: an import of tensorboard is made to fail."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--epochs", "1", "--limit-train", "64",
                                   "--tensorboard", "--out", str(out)])
    assert res.exit_code == 1
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: --tensorboard needs the tensorboard extra: "
                      "pip install 'cnnlab[tensorboard]' (in a source checkout: "
                      "pip install -e '.[tensorboard]')"], res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_require_extra_tells_missing_from_broken(monkeypatch):
    """A missing package names the extra; a package that is there but fails to import says
    why, so a broken install is not mistaken for a missing one."""
    monkeypatch.setitem(sys.modules, "cnnlab_no_such_pkg", None)
    with pytest.raises(CnnlabError, match=r"^--x needs the x extra: pip install 'cnnlab\[x\]' "
                       r"\(in a source checkout: pip install -e '\.\[x\]'\)$"):
        require_extra("cnnlab_no_such_pkg.sub", "x", "--x")

    class Broken:  # a finder that fails the way a package with a bad dependency does
        def find_spec(self, name, path=None, target=None):
            if name == "cnnlab_broken_pkg":
                raise ImportError("No module named 'google.protobuf'", name="google.protobuf")
            return None

    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(CnnlabError, match=r"importing cnnlab_broken_pkg failed \(No module "
                       r"named 'google.protobuf'\); reinstall it"):
        require_extra("cnnlab_broken_pkg", "x", "--x")
