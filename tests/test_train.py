"""Training end to end on the embedded digits: files, resume, NaN stop, CLI errors."""

import csv
import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import write_idx_dataset

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.engine import build as build_mod
from cnnlab.engine.train import NonFiniteLoss, fit
from cnnlab.errors import CnnlabError
from cnnlab.run import RunDir

QUICK = {"dataset": "digits", "resize": 28, "limit_train": 320, "limit_test": 120,
         "epochs": 2, "batch_size": 32, "lr": 0.05, "log_every": 5}


def _cfg(tmp_path, **kw):
    return build_config(None, {**QUICK, "out": str(tmp_path / "run"), **kw})


def test_fit_writes_a_complete_run_dir(tmp_path):
    result = fit(_cfg(tmp_path), log=lambda _m: None)
    run = result.run_dir
    for name in ("config.yaml", "metrics.csv", "metrics.jsonl", "model.safetensors",
                 "classes.json", "checkpoints/epoch-002.safetensors", "checkpoints/epoch-002.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "test_acc", "examples_per_sec", "epoch_time"} <= set(rows[0])
    assert float(rows[-1]["train_acc"]) > 0.3  # chance is 0.1
    assert float(rows[-1]["examples_per_sec"]) > 0
    assert not list(run.rglob("*.tmp"))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("extra", [
    {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "schedule": "cosine",
     "crop_padding": 2, "flip": True},
    {"optimizer": "adamw", "lr": 0.002, "weight_decay": 0.01, "schedule": "onecycle"},
    {"model": "fastnet", "schedule": "triangle", "bias_lr_scale": 8.0, "ema_every": 2,
     "ema_start_epoch": 1, "tta": 2, "flip": True, "alternate_flip": True, "crop_padding": 2,
     "crop_pad_mode": "reflect", "drop_last": True, "nesterov": True, "cutout": 3},
])
def test_resume_equals_uninterrupted(tmp_path, extra):
    full = fit(_cfg(tmp_path / "a", epochs=3, **extra), log=lambda _m: None)

    def stop_after_first(m):
        if m.epoch == 1:
            raise _Stop

    cfg_b = _cfg(tmp_path / "b", epochs=3, **extra)
    with pytest.raises(_Stop):
        fit(cfg_b, log=lambda _m: None, on_epoch_end=stop_after_first)
    resumed = fit(_cfg(tmp_path / "b", epochs=3, **extra), resume=tmp_path / "b" / "run",
                  log=lambda _m: None)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h.test_acc for h in full.history] == [h.test_acc for h in resumed.history]
    assert [h.train_loss for h in full.history] == [h.train_loss for h in resumed.history]
    lines = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_checkpoint_every_writes_fewer_checkpoints_and_resumes_from_the_last(tmp_path):
    full = fit(_cfg(tmp_path / "a", epochs=3, checkpoint_every=2), log=lambda _m: None)
    names = sorted(p.name for p in (tmp_path / "a" / "run" / "checkpoints").glob("*.json"))
    assert names == ["epoch-002.json", "epoch-003.json"]  # every 2nd, and always the last

    def stop_after_third(m):
        if m.epoch == 3:
            raise _Stop

    with pytest.raises(_Stop):  # stopped after epoch 3 of 4: the newest checkpoint is epoch 2
        fit(_cfg(tmp_path / "b", epochs=4, checkpoint_every=2), log=lambda _m: None,
            on_epoch_end=stop_after_third)
    resumed = fit(_cfg(tmp_path / "b", epochs=4, checkpoint_every=2),
                  resume=tmp_path / "b" / "run", log=lambda _m: None)
    again = fit(_cfg(tmp_path / "c", epochs=4), log=lambda _m: None)
    assert [h.epoch for h in resumed.history] == [1, 2, 3, 4]
    a, b = again.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(full.history) == 3


class _NaNAfter(torch.nn.Module):
    """Wraps a model and returns NaN logits from the ``after``-th training call on."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.after:
                return out * float("nan")
        return out


def _tta_levels_of_test_passes(monkeypatch) -> list[int]:
    """Record the TTA level of every test pass fit makes, in order."""
    from cnnlab.engine import train as train_mod

    levels = []
    real = train_mod.evaluate

    def spy(*args, **kwargs):
        levels.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate", spy)
    return levels


def test_tta_is_for_the_final_evaluation_only(tmp_path, monkeypatch):
    levels = _tta_levels_of_test_passes(monkeypatch)
    fit(_cfg(tmp_path, epochs=3, tta=2), log=lambda _m: None)
    assert levels == [0, 0, 2]


def test_eval_every_skips_test_passes_and_records_them_as_missing(tmp_path, monkeypatch):
    """--eval-every 2 over 5 epochs evaluates after epochs 2, 4 and 5 (the last always);
    the other rows say "not evaluated" (null / empty), not a made-up number, and the
    table, resume and plot all read them."""
    calls = _tta_levels_of_test_passes(monkeypatch)
    res = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--resize", "28",
                                   "--limit-train", "320", "--limit-test", "120", "--epochs",
                                   "5", "--batch-size", "32", "--eval-every", "2", "--tta", "1",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert calls == [0, 0, 1]  # epochs 2 and 4 plain, the last one with its TTA
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [r["test_acc"] is None for r in rows] == [True, False, True, False, False]
    assert all(0 < r["test_acc"] <= 1 for r in rows if r["test_acc"] is not None)
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [r["test_acc"] == "" for r in csv.DictReader(f)] == [True, False, True, False,
                                                                   False]
    assert "final test acc 0." in res.output and "test acc -  lr" in res.output
    res = CliRunner().invoke(cli, ["plot", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    # resuming keeps counting from the run's first epoch: 6 is evaluated, 7 not, 8 (last) is
    res = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "run"), "--epochs", "8"])
    assert res.exit_code == 0, res.output
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["test_acc"] is None for r in rows] == [True, False, True, False,
                                                                 False, False, True, False]
    assert calls == [0, 0, 1, 0, 1]
    # a resume may not change what is trained: one line naming each change, nothing written
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    res = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "run"), "--epochs", "9",
                                   "--dataset", "mnist", "--lr", "0.5", "--batch-size", "32"])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
    assert "cannot change --dataset mnist (the run has digits); --lr 0.5 (the run has" in res.output
    assert "batch-size" not in res.output  # the same value as the run's is no change
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    res = CliRunner().invoke(cli, ["train", "--eval-every", "0"])
    assert res.exit_code != 0 and "--eval-every must be at least 1" in res.output


def test_nan_loss_stops_naming_epoch_and_step(tmp_path, monkeypatch):
    real = build_mod.create_model
    monkeypatch.setattr(build_mod, "create_model",
                        lambda name, num_classes: _NaNAfter(real(name, num_classes), 10 + 5))
    cfg = _cfg(tmp_path)  # 320 / 32 = 10 steps per epoch: call 15 is epoch 2, step 5
    with pytest.raises(NonFiniteLoss, match="loss became nan at epoch 2, step 5 of 10"):
        fit(cfg, log=lambda _m: None)
    # epoch 1 finished and was checkpointed; epoch 2 was not
    assert (tmp_path / "run" / "checkpoints" / "epoch-001.json").is_file()
    assert not (tmp_path / "run" / "checkpoints" / "epoch-002.json").exists()


def test_default_train_command_learns_digits(tmp_path, monkeypatch):
    """`cnnlab train` with no options: the README's main job."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["train"])
    assert res.exit_code == 0, res.output
    assert "final test acc" in res.output
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    last = json.loads((runs[0] / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 10 and last["test_acc"] > 0.93


def test_short_default_job_keeps_the_default_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["train", "--epochs", "1", "--out", "r"])
    assert res.exit_code == 0, res.output
    assert "resize: 28" in (tmp_path / "r" / "config.yaml").read_text()


def test_eval_and_plot_read_the_run(tmp_path):
    quick = {k: v for k, v in QUICK.items() if k != "limit_test"}  # eval reads the whole split
    result = fit(build_config(None, {**quick, "out": str(tmp_path / "run")}), log=lambda _m: None)
    run = str(result.run_dir)
    res = CliRunner().invoke(cli, ["eval", run])
    assert res.exit_code == 0, res.output
    data = json.loads((result.run_dir / "eval-test.json").read_text())
    assert data["accuracy"] == pytest.approx(result.history[-1].test_acc)
    assert sum(map(sum, data["confusion"])) == 360
    assert len(data["per_class_accuracy"]) == 10 and "confusion matrix" in res.output
    # another data set with as many classes is adapted to the model's input (8x8 -> 28x28
    # here, as in training); one with other classes is refused in one line
    res = CliRunner().invoke(cli, ["plot", run])
    assert res.exit_code == 0, res.output
    assert (result.run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _rendered(table, width: int) -> list[str]:
    import io

    from rich.console import Console

    con = Console(width=width, record=True, file=io.StringIO())
    con.print(table)
    return con.export_text().splitlines()


def test_the_confusion_table_heads_columns_by_name_where_they_fit():
    from cnnlab.cli.runs import confusion_table

    fashion = ["T-shirt/top", "Trouser", "Pullover", "Coat"]
    cm = [[90, 3, 0, 7], [0, 100, 0, 0], [5, 0, 80, 15], [1, 0, 20, 79]]
    wide = _rendered(confusion_table(cm, fashion, 200), 200)
    assert "columns: predicted)" in wide[0] and "T-shirt/top ┃ Trouser" in wide[1]
    assert wide[3].split("│")[0].strip() == "0 T-shirt/top"
    assert [c.strip() for c in wide[5].split("│")] == ["2 Pullover", "5", "0", "80", "15"]
    narrow = _rendered(confusion_table(cm, fashion, 40), 40)
    assert "numbered as the rows" in " ".join(" ".join(narrow[:3]).split())
    head = next(line for line in narrow if "┃" in line)
    assert [c.strip() for c in head.split("┃")] == ["", "0", "1", "2", "3"]
    digits = _rendered(confusion_table([[3, 1], [0, 4]], ["0", "1"], 80), 80)
    assert [c.strip() for c in digits[-1].split("│")] == ["1", "0", "4"]  # not "1 1"


def test_recipe_then_overrides(tmp_path):
    cfg = build_config("seed-mnist", {"epochs": 3, "lr": 0.02})
    assert (cfg.model, cfg.dataset, cfg.batch_size, cfg.momentum) == ("mnist-net", "mnist", 64, 0.5)
    assert (cfg.epochs, cfg.lr) == (3, 0.02)
    d2l = build_config("d2l-lenet-fashion")
    assert (d2l.init, d2l.lr, d2l.batch_size, d2l.normalize) == ("xavier", 0.9, 256, False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: lenet5\nepochz: 3\n")
    with pytest.raises(CnnlabError, match="bad.yaml has unknown field.*epochz"):
        build_config(str(bad))
    bad.write_text("epochs: three\n")
    with pytest.raises(CnnlabError, match="'epochs' must be int"):
        build_config(str(bad))


@pytest.mark.parametrize("args,needle", [
    (["--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["--dataset", "mnist"], "data set 'mnist' not found"),
    (["--model", "simple-cnn"], "pass --channels 3 --resize 32"),
    (["--epochs", "-1"], "--epochs must be at least 1"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--optimizer", "rmsprop"], "'rmsprop' is not one of 'sgd', 'adam', 'adamw'"),
    (["--schedule", "linear"], "Invalid value for '--schedule'"),
    (["--precision", "fp16"], "'fp16' is not one of 'fp32', 'bf16', 'auto'"),
    (["--init", "he"], "Invalid value for '--init'"),
    (["--recipe", "nope"], "unknown recipe 'nope'"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
    (["--resume", "nowhere"], "nowhere does not exist"),
    (["--cutout", "40"], "--cutout 40 is larger than the 28-pixel images"),
    (["--cutout", "-2"], "--cutout must be 0 or more"),
    (["--crop-padding", "28", "--crop-pad-mode", "reflect"], "use at most 14"),
    (["--lr", "inf"], "--lr must be a positive number, got inf"),
    (["--optimizer", "adam", "--nesterov"], "--nesterov is SGD's momentum variant"),
    (["--optimizer", "adam", "--cuda-graphs"], "--cuda-graphs captures plain SGD steps"),
    (["--gamma", "0.5"], "--gamma and --step-size shape the step schedule, not cosine"),
    (["--triangle", "0.1,0.5,0.1"], "add --schedule triangle"),
    (["--schedule", "onecycle", "--warmup-epochs", "0.5"], "onecycle rises to its peak"),
    (["--ema-start-epoch", "2"], "add --ema-every N"),
    (["--crop-pad-mode", "reflect"], "add --crop-padding N"),
    (["-r", "mnist-fast", "--momentum", "0"], "--nesterov comes from the recipe 'mnist-fast'; "
                                              "give --no-nesterov to change it"),
])
def test_train_bad_input_errors_and_writes_nothing(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()  # a data root without the data set
    res = CliRunner().invoke(cli, ["train", "--resize", "28", "--limit-train", "64",
                                   "--data-dir", str(tmp_path / "empty"), *args])
    assert res.exit_code != 0
    assert needle in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()


def test_corrupt_data_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = write_idx_dataset(tmp_path / "data" / "mnist", 8, 4)
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    res = CliRunner().invoke(cli, ["train", "--dataset", "mnist", "--data-dir",
                                   str(tmp_path / "data")])
    assert res.exit_code != 0 and "train-images-idx3-ubyte.gz is not a complete gzip" in res.output
    assert not (tmp_path / "runs").exists()


def test_real_entry_point_exit_code(tmp_path):
    """The installed console entry point: one line on stderr, non-zero exit."""
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--epochs", "0"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "Error: --epochs must be at least 1, got 0"


def test_a_warm_up_as_long_as_the_run_is_pointed_out(tmp_path):
    logs: list[str] = []
    fit(build_config(None, {**QUICK, "epochs": 2, "warmup_epochs": 2,
                            "out": str(tmp_path / "r")}), log=logs.append)
    assert any("warm-up fills all 2 epochs" in m for m in logs), logs
    logs.clear()
    fit(build_config(None, {**QUICK, "epochs": 3, "warmup_epochs": 1,
                            "out": str(tmp_path / "r2")}), log=logs.append)
    assert not any("warm-up" in m for m in logs)


def test_a_run_stopped_in_its_first_epoch_leaves_nothing_of_its_own(tmp_path, monkeypatch):
    """Ctrl-C, SIGTERM (cnnlab's handler raises SystemExit) or an error in epoch 1: the files
    this run wrote, and the folders made for it, go; what was there before stays; once an
    epoch has finished (metrics written, even without a checkpoint) everything stays."""
    from cnnlab.engine import train as train_mod

    real = train_mod.train_one_epoch
    calls = {"n": 0}

    def stop_in(epoch_no: int, exc: BaseException):
        calls["n"] = 0

        def fake(*a, **k):
            calls["n"] += 1
            if calls["n"] == epoch_no:
                raise exc
            return real(*a, **k)
        monkeypatch.setattr(train_mod, "train_one_epoch", fake)

    def run(out, exc, **over):
        with pytest.raises(type(exc)):
            fit(build_config(None, {**QUICK, **over, "out": str(out)}), log=lambda _m: None)

    for exc in (KeyboardInterrupt(), SystemExit(143), RuntimeError("boom")):
        stop_in(1, exc)
        run(tmp_path / "new" / "run", exc)
        assert not (tmp_path / "new").exists(), type(exc)
    mine = tmp_path / "mine"  # an --out the user had: their files, an earlier run's files
    (mine / "tensorboard").mkdir(parents=True)
    (mine / "tensorboard" / "events").write_text("the user's own")
    (mine / "model.safetensors").write_text("an earlier run's weights")
    (mine / "notes.txt").write_text("x")
    stop_in(1, KeyboardInterrupt())
    run(mine, KeyboardInterrupt())
    assert sorted(p.name for p in mine.iterdir()) == ["model.safetensors", "notes.txt",
                                                      "tensorboard"]
    assert (mine / "model.safetensors").read_text() == "an earlier run's weights"
    stop_in(2, KeyboardInterrupt())  # epoch 1 finished, no checkpoint yet: all stays
    run(tmp_path / "half", KeyboardInterrupt(), epochs=3, checkpoint_every=3)
    assert (tmp_path / "half" / "metrics.csv").exists()
    assert (tmp_path / "half" / "config.yaml").exists()
    assert RunDir(tmp_path / "half").latest_checkpoint() is None


def test_out_naming_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        res = CliRunner().invoke(cli, ["train", "--epochs", "1", "--out", str(out)])
        assert res.exit_code == 1 and "pick another --out" in res.output, res.output
        assert "Traceback" not in res.output
    assert (tmp_path / "afile").read_text() == "x"


def test_a_relative_data_dir_is_saved_absolute(tmp_path, monkeypatch):
    """eval, resume and report of a run may run from another folder than training did."""
    from cnnlab.config import build_config

    monkeypatch.chdir(tmp_path)
    cfg = build_config(None, {"data_dir": "shapes"})
    assert cfg.data_dir == str(tmp_path / "shapes")


def test_saved_configs_from_before_the_new_run_checks_still_load():
    """Options that do nothing are refused for a new run, not when a saved run is read."""
    from cnnlab.api import train_config
    from cnnlab.config import build_config

    saved = {"flip": False, "alternate_flip": True, "head_lr_scale": 10.0}
    assert build_config(None, {}, base=saved).alternate_flip is True
    with pytest.raises(CnnlabError, match="add --flip"):
        train_config(None, alternate_flip=True)
    with pytest.raises(CnnlabError, match="recipe file my/mnist-fast.yaml does not exist"):
        build_config("my/mnist-fast.yaml")


def test_a_resume_refusal_names_switches_as_on_and_off():
    from cnnlab.api import _refuse_changed_training
    from cnnlab.config import build_config

    with pytest.raises(CnnlabError, match=r"--flip on \(the run has off\)"):
        _refuse_changed_training(build_config(None, {}), build_config(None, {"flip": True}))


def test_a_recipes_sgd_only_settings_give_way_to_another_optimizer(tmp_path):
    """mnist-fast sets Nesterov momentum and CUDA graphs: --optimizer adam (or --compile)
    is taken, those settings simply do not apply; lr-find takes it too."""
    from cnnlab.api import train_config
    from cnnlab.cli.lr_find import resolve_target

    for extra in ({"optimizer": "adam"}, {"optimizer": "adamw"}, {"compile": True}):
        cfg = train_config("mnist-fast", **extra)
        assert cfg.nesterov and cfg.cuda_graphs  # kept as the recipe says, unused
    cfg, _ = resolve_target("mnist-fast", {"optimizer": "adam"})
    assert cfg.optimizer == "adam"
    with pytest.raises(CnnlabError, match="--momentum is SGD's"):
        resolve_target("mnist-net", {"optimizer": "adam", "momentum": 0.9})


def test_resume_refuses_init_from(lenet_run):
    from cnnlab.api import train_config

    with pytest.raises(CnnlabError, match=r"cannot change --init-from .* \(the run has unset\)"):
        train_config(resume=str(lenet_run), epochs=2, init_from=str(lenet_run))


def test_typing_the_main_jobs_own_model_or_data_is_still_the_main_job():
    from cnnlab.api import train_config

    main = train_config()
    for typed in ({"model": "mnist-net"}, {"dataset": "digits"},
                  {"model": "mnist-net", "dataset": "digits"}):
        assert train_config(**typed) == main
    with pytest.raises(CnnlabError, match="finetune recipe continues from a trained run: add "
                                          "--init-from RUN"):
        train_config("finetune")
    assert train_config("finetune", model="mnist-net").model == "mnist-net"  # from scratch


def test_a_plain_kill_says_how_to_continue(tmp_path):
    """SIGTERM after a saved epoch: exit 143 and the same resume hint as Ctrl-C."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "--epochs", "200",
                             "--limit-train", "256", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "epoch-001.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    said = proc.communicate(timeout=60)[0]
    assert proc.returncode == 143, said
    assert f"terminated (SIGTERM); continue with `cnnlab train --resume {out}`" in said
    assert "Traceback" not in said
