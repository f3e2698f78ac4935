"""Run directories and the way back from them: load_run, Preprocess, permissions, the API."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from conftest import write_idx_dataset

import cnnlab
from cnnlab.config import build_config
from cnnlab.data import load_split
from cnnlab.data.preprocess import Preprocess
from cnnlab.engine.build import build
from cnnlab.engine.train import fit
from cnnlab.errors import CnnlabError
from cnnlab.run import RunDir, load_run

QUICK = {"limit_train": 256, "epochs": 2, "batch_size": 32, "lr": 0.05, "log_every": 4}


def _accuracy_by_hand(run, images: torch.Tensor, labels: torch.Tensor) -> float:
    """What a user does with a loaded run: preprocess the raw uint8 images, run the model."""
    logits = run.logits(images)
    return float((logits.argmax(1).cpu() == labels).double().mean())


@pytest.mark.parametrize("case", ["normalised", "resize-channels", "no-normalise"])
def test_load_run_reproduces_the_recorded_accuracy_without_the_data(tmp_path, case):
    data_root = tmp_path / "data"
    if case == "normalised":  # a data set on disk, deleted before loading the run
        write_idx_dataset(data_root / "mnist", n_train=256, n_test=100, seed=1)
        over = {"dataset": "mnist", "data_dir": str(data_root), "model": "fastnet"}
    elif case == "resize-channels":
        over = {"dataset": "digits", "model": "simple-cnn", "resize": 32, "channels": 3}
    else:
        over = {"dataset": "digits", "model": "mnist-net", "resize": 28, "normalize": False}
    result = fit(build_config(None, {**QUICK, **over, "out": str(tmp_path / "run")}),
                 log=lambda _m: None)
    test = load_split(over["dataset"], "test", over.get("data_dir"))
    if data_root.exists():
        shutil.rmtree(data_root)
        with pytest.raises(CnnlabError, match="does not exist"):
            load_split("mnist", "test", str(data_root), use_cache=False)

    run = load_run(result.run_dir, device="cpu")
    assert not run.model.training
    assert run.classes == test.classes and run.config.model == over["model"]
    assert [h.test_acc for h in run.history] == [h.test_acc for h in result.history]
    saved = Preprocess.from_json((result.run_dir / "preprocess.json").read_text())
    assert run.preprocess == saved
    if case == "resize-channels":
        assert saved.input_shape == (3, 32, 32) and test.images.shape[1:] == (1, 8, 8)
    if case == "no-normalise":
        assert saved.mean is None and saved.std is None
    else:
        assert saved.mean is not None and len(saved.mean) == saved.channels
    # the raw test split, preprocessed by the run's own Preprocess: the very same accuracy
    assert _accuracy_by_hand(run, test.images, test.labels) == result.history[-1].test_acc


def test_preprocess_round_trips_through_json_and_matches_the_loader():
    p = Preprocess(3, (32, 32), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), light_on_dark=False,
                   channels_last=True)
    assert Preprocess.from_json(p.to_json()) == p
    q = Preprocess(1, (28, 28), None, None, light_on_dark=True)
    assert Preprocess.from_json(q.to_json()) == q
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    x = p(images)  # grey 8x8 -> RGB 32x32, normalised, channels_last
    assert x.shape == (5, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    adapted = p.adapt(images).float() / 255
    expected = (adapted - torch.tensor(p.mean).view(1, 3, 1, 1)) / torch.tensor(p.std).view(
        1, 3, 1, 1)
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)
    for bad in ('{"channels": 2, "size": [4, 4]}', '{"size": [4, 4]}', "[1, 2]", "not json",
                '{"channels": 1, "size": [4, 4], "mean": [0.5], "std": [0]}'):
        with pytest.raises(CnnlabError):
            Preprocess.from_json(bad)


def test_preprocess_statistics_come_from_the_training_split():
    cfg = build_config(None, {"dataset": "digits", "resize": 28, "limit_train": 300})
    built = build(cfg)
    train = built.train.images
    x = train.double() / 255
    assert built.preprocess.mean[0] == pytest.approx(float(x.mean()), abs=1e-4)
    assert built.preprocess.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-4)
    assert built.preprocess.light_on_dark  # white digits on black, as MNIST
    mnist = Preprocess.from_train(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), True,
                                  ((0.1307,), (0.3081,)))
    assert (mnist.mean, mnist.std) == ((0.1307,), (0.3081,))  # published train statistics


def test_build_does_not_mutate_the_callers_config(tmp_path):
    cfg = build_config(None, {**QUICK, "dataset": "digits", "resize": 28, "epochs": 1,
                              "precision": "auto", "out": str(tmp_path / "run")})
    before = dataclasses.replace(cfg)
    assert cfg.channels_last is None and cfg.device == "auto"
    result = fit(cfg, log=lambda _m: None)
    assert cfg == before  # still "auto", still None
    assert result.config.precision in ("fp32", "bf16") and result.config.channels_last is True
    assert result.config.device == "cpu"
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "precision: auto" not in saved and "channels_last: true" in saved


def test_run_files_have_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    result = fit(build_config(None, {**QUICK, "dataset": "digits", "resize": 28, "epochs": 1,
                                     "out": str(tmp_path / "run")}), log=lambda _m: None)
    cnnlab.evaluate(result.run_dir, device="cpu")
    from cnnlab.viz.plots import plot_run

    plot_run(result.run_dir)
    files = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.yaml", "preprocess.json", "classes.json",
                                       "metrics.csv", "metrics.jsonl", "model.safetensors",
                                       "eval-test.json", "curves.png", "epoch-001.json"}
    for p in files:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == 0o666 & ~umask, (p.name, oct(mode))
        if umask == 0o022:
            assert mode == 0o644


def test_run_dir_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(CnnlabError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnlabError, match="not a cnnlab run directory"):
        load_run(tmp_path / "empty")
    result = fit(build_config(None, {**QUICK, "dataset": "digits", "resize": 28, "epochs": 1,
                                     "out": str(tmp_path / "run")}), log=lambda _m: None)
    good = (result.run_dir / "preprocess.json").read_text()
    (result.run_dir / "preprocess.json").write_text("{broken")
    with pytest.raises(CnnlabError, match="preprocess.json"):
        load_run(result.run_dir)
    (result.run_dir / "preprocess.json").unlink()
    with pytest.raises(CnnlabError, match="no preprocess.json and its classes.json lacks"):
        load_run(result.run_dir)
    (result.run_dir / "preprocess.json").write_text(good)
    with pytest.raises(CnnlabError, match=r"is not a run directory, but holds 1 runs \(run\); "
                                          r"give one, e.g. .*/run, or several"):
        load_run(tmp_path)  # the folder of runs, not a run
    (result.run_dir / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(CnnlabError, match="model.safetensors"):
        load_run(result.run_dir)


def test_runs_from_cnnlab_0_1_still_load(tmp_path):
    """Old runs: no preprocess.json (mean/std in classes.json), Sequential weight keys."""
    from safetensors.torch import load_file, save_file

    result = fit(build_config(None, {**QUICK, "dataset": "digits", "resize": 28, "epochs": 1,
                                     "out": str(tmp_path / "run")}), log=lambda _m: None)
    run = RunDir(result.run_dir)
    pre = run.read_preprocess()
    (run.path / "preprocess.json").unlink()
    (run.path / "classes.json").write_text(json.dumps({
        "classes": [str(i) for i in range(10)], "input_shape": [1, 28, 28],
        "mean": list(pre.mean), "std": list(pre.std)}))
    state = load_file(str(run.weights_path))
    old = {k.replace("conv1.", "0.").replace("conv2.", "3.").replace("fc.", "7."): v
           for k, v in state.items()}
    assert set(old) == {"0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"}
    save_file(old, str(run.weights_path))
    loaded = load_run(run.path)
    assert loaded.preprocess == dataclasses.replace(pre, light_on_dark=False)
    test = load_split("digits", "test")
    assert _accuracy_by_hand(loaded, test.images, test.labels) == result.history[-1].test_acc


def test_python_api_train_evaluate_load(tmp_path):
    result = cnnlab.train(epochs=1, limit_train=200, out=str(tmp_path / "run"))
    assert result.run_dir == tmp_path / "run" and len(result.history) == 1
    assert result.config.model == "mnist-net"  # the default recipe, shortened
    ev = cnnlab.evaluate(result.run_dir)
    assert ev.accuracy == result.history[-1].test_acc
    run = cnnlab.load_run(result.run_dir)
    assert isinstance(run, cnnlab.LoadedRun) and run.classes[0] == "0"
    with pytest.raises(CnnlabError, match="unknown recipe"):
        cnnlab.train(recipe="nope")
    with pytest.raises(CnnlabError, match="drop --recipe"):
        cnnlab.train(recipe="default", resume=result.run_dir)
    # a TrainConfig, with overrides on top; log hears each epoch, on_epoch_end gets its row.
    # A recipe's config with one setting changed is a base, not all typed: seed-mnist's
    # momentum stays with Adam, as `-r seed-mnist --optimizer adam` allows
    from cnnlab.api import train_config

    lines, rows = [], []
    cfg = train_config("seed-mnist", dataset="digits", resize=28, limit_train=100)
    cfg.optimizer, cfg.lr = "adam", 0.002
    again = cnnlab.train(cfg, epochs=2, out=str(tmp_path / "cfg"), log=lines.append,
                         on_epoch_end=rows.append)
    assert again.config.optimizer == "adam" and again.config.lr == 0.002
    assert again.config.limit_train == 100 and again.config.epochs == 2
    assert [r.epoch for r in rows] == [1, 2] and rows == again.history
    assert [line.split(":")[0] for line in lines if line.startswith("epoch")] == \
        ["epoch 1/2", "epoch 2/2"]


def test_import_cnnlab_is_light():
    """`import cnnlab` imports neither torch nor the CLI; the API is imported on first use."""
    code = ("import sys, cnnlab; print(sorted(m for m in ('torch', 'click', 'cnnlab.api') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_metrics_files_stay_complete_when_rows_are_reused_or_replaced(tmp_path):
    """write_metrics renders each epoch's row once (a run of hundreds of short epochs would
    otherwise re-render its whole history every epoch); the files must still equal the whole
    history, also when a resumed run hands over a history of new row objects."""
    from cnnlab.run import EpochMetrics

    def row(i: int, loss: float) -> EpochMetrics:
        tested = i % 2 == 0
        return EpochMetrics(epoch=i, train_loss=loss, train_acc=0.5, test_loss=0.4 if tested
                            else None, test_acc=0.9 if tested else None, lr=0.1,
                            examples_per_sec=10.0, train_time=1.0, epoch_time=1.5)

    run = RunDir(tmp_path / "run").create()
    history = [row(i, 1.0 / i) for i in range(1, 6)]
    for n in range(1, 6):
        run.write_metrics(history[:n])
    assert run.read_metrics() == history
    csv_lines = (run.path / RunDir.METRICS_CSV).read_text().splitlines()
    assert csv_lines[0].startswith("epoch,train_loss") and len(csv_lines) == 6
    assert csv_lines[1].split(",")[3] == ""  # epoch 1 was not tested: an empty cell
    resumed = [dataclasses.replace(r) for r in history[:3]] + [row(4, 7.0)]
    RunDir(run.path).write_metrics(resumed)  # a fresh RunDir, as `--resume` makes
    run.write_metrics(resumed)  # and the same one, handed new row objects
    assert run.read_metrics() == resumed
    assert (run.path / RunDir.METRICS_CSV).read_text().splitlines()[4].split(",")[1] == "7.0"


def test_a_loaded_run_takes_tensors_numpy_and_pillow_images(lenet_run):
    """What a Keras or Lightning user tries first; anything else is one line naming what is
    accepted."""
    from PIL import Image

    from cnnlab.data import load_split

    run = load_run(lenet_run, device="cpu")
    x = load_split("digits", "test").images[:5]  # uint8 (5, 1, 8, 8)
    want = run.logits(x)
    assert torch.equal(run.logits(x.numpy()), want)
    pictures = [Image.fromarray(a[0]) for a in x.numpy()]
    assert torch.allclose(run.logits(pictures), want, atol=1e-5)
    assert torch.allclose(run.logits(pictures[0]), want[:1], atol=1e-5)
    p = run.probabilities(x)
    assert p.shape == (5, 10) and torch.allclose(p.sum(1), torch.ones(5))
    with pytest.raises(CnnlabError, match="takes uint8 images .* got str"):
        run.logits("a.png")
    with pytest.raises(CnnlabError, match=r"\(x \* 255\)\.round\(\)\.byte\(\)"):
        run.logits(x.float() / 255)
    with pytest.raises(CnnlabError, match=r"a batch axis, x\[None\]"):
        run.logits(x[0])


def test_run_directory_refusals_come_before_the_data_is_loaded(lenet_run, monkeypatch):
    """An --out that holds a run, and a resume of a finished run, are refused by the config
    step, before a (possibly long) decode or the start of --nproc's processes."""
    from cnnlab.api import refuse_existing_out, train_config

    with pytest.raises(CnnlabError, match=f"{lenet_run} already holds a run; use --resume"):
        refuse_existing_out(train_config(dataset="digits", model="lenet5", resize=28,
                                         out=str(lenet_run)))
    with pytest.raises(CnnlabError, match="already finished 1 epoch; pass a larger --epochs"):
        train_config(resume=str(lenet_run))
    assert train_config(resume=str(lenet_run), epochs=2).epochs == 2


def test_the_python_api_takes_a_run_as_a_path_or_as_load_runs_result(lenet_run, tmp_path):
    """A notebook user passes whichever they hold; what is neither is one line. A single
    layer name or run path is not split into letters."""
    from PIL import Image

    run = load_run(lenet_run, device="cpu")
    x = load_split("digits", "test").images[:3]
    assert load_run(run).run_dir.path == run.run_dir.path
    feats = cnnlab.extract_features(str(lenet_run), limit=20)
    assert feats.features.shape[0] == 20
    by_path = cnnlab.activations(str(lenet_run), "conv1", x.numpy())
    assert list(by_path) == ["conv1"]
    assert torch.equal(by_path["conv1"], cnnlab.activations(run, ["conv1"], x)["conv1"])
    a = cnnlab.attribute(lenet_run, x.numpy(), method="saliency")
    assert a.maps.shape[0] == 3
    Image.fromarray(x[0, 0].numpy()).save(tmp_path / "d.png")
    assert cnnlab.predict(run, tmp_path / "d.png")[0].classes[0] == \
        cnnlab.predict(str(lenet_run), [str(tmp_path / "d.png")])[0].classes[0] == \
        cnnlab.predict(run, tmp_path.glob("*.png"))[0].classes[0]  # any iterable of paths
    # a loaded run is used as it is in memory, not loaded again from its folder
    zeroed = load_run(lenet_run, device="cpu")
    for p in zeroed.model.parameters():
        p.data.zero_()
    assert cnnlab.interpret(zeroed).accuracy < cnnlab.interpret(lenet_run).accuracy
    with pytest.raises(CnnlabError, match="predict takes file or folder paths, got Tensor; "
                                          r"for images in memory use .*probabilities"):
        cnnlab.predict(lenet_run, x)
    with pytest.raises(CnnlabError, match="a run is given as its directory .* got int"):
        cnnlab.evaluate(3)
    curves = cnnlab.plot_curves(str(lenet_run), tmp_path / "curves.png")
    assert curves.read_bytes()[:4] == b"\x89PNG"
    # Preprocess takes numpy arrays and Pillow images too, as LoadedRun.logits does
    want = run.preprocess(x)
    assert torch.equal(run.preprocess(x.numpy()), want)
    assert torch.allclose(run.preprocess([Image.fromarray(a[0]) for a in x.numpy()]), want)
    with pytest.raises(CnnlabError, match=r"floats in 0\.\.255 become pixels with x\.round"):
        run.preprocess(x.float())
    with pytest.raises(CnnlabError, match=r"RGBA drop the alpha channel, x\[:, :3\]"):
        run.preprocess(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))


def test_an_image_run_refuses_a_series_data_set_before_decoding(lenet_run, monkeypatch):
    """Features and probes of an image run on ucr:NAME failed deep inside torch's
    interpolate; now one line, before any data is read."""
    import cnnlab.data as data

    monkeypatch.setattr(data, "load_split", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(CnnlabError, match="holds 1-D series and .* was trained on images "
                                          r"\(digits\); give a data set of images"):
        cnnlab.extract_features(lenet_run, dataset="ucr:GunPoint")


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    """A sweep in a loop without --out: the second run of a second is -2, not refused."""
    from datetime import datetime

    from cnnlab.engine import train as train_module

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(train_module, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    cfg = build_config(None, {"model": "lenet5", "dataset": "digits"})
    first = train_module.default_run_dir(cfg)
    assert first.as_posix() == "runs/lenet5-digits-20260102-030405"
    first.mkdir(parents=True)
    second = train_module.default_run_dir(cfg)
    assert second.name == first.name + "-2"
    second.mkdir()
    assert train_module.default_run_dir(cfg).name == first.name + "-3"


def test_preprocess_takes_a_square_size_and_names_bad_arguments():
    assert Preprocess(1, 28).input_shape == (1, 28, 28)
    assert Preprocess(3, [32, 32]).size == (32, 32)
    with pytest.raises(CnnlabError, match=r"1 or 3 channels \(an int\), got '1'"):
        Preprocess("1", (28, 28))
    with pytest.raises(CnnlabError, match=r"size is \(height, width\) in pixels, got \(28,\)"):
        Preprocess(1, (28,))
    import numpy as np

    p = Preprocess(np.int64(1), (torch.tensor(28), np.int64(28)))  # stored as plain ints
    assert p.input_shape == (1, 28, 28) and json.loads(p.to_json())["size"] == [28, 28]
    for bad in (28.0, True):
        with pytest.raises(CnnlabError, match="size is"):
            Preprocess(1, bad)
