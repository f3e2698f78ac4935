"""Time series: the ucr:NAME source (aeon's bundled UCR/UEA files), per-series
z-normalisation, the 1-D models and their class activation maps, and a series run through
train, resume, eval, summary, errors, report and export."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.data.preprocess import Preprocess, SeriesPreprocess, znormalise
from cnnlab.errors import CnnlabError
from cnnlab.models import check_input_shape, create_model

QUICK = {"model": "fcn", "dataset": "ucr:ItalyPowerDemand", "epochs": 5, "batch_size": 8,
         "drop_last": True, "optimizer": "adam", "lr": 0.003, "schedule": "onecycle",
         "eval_every": 5, "log_every": 100, "threads": 1}


def _one_line_error(r, *needles):
    """Exit 1 with one ``Error:`` line, the last (`cnnlab train` prints its header and
    progress notes before it)."""
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("Error: "), r.output
    assert not any(x.startswith(("Error", "Traceback")) for x in lines[:-1]), r.output
    for n in needles:
        assert n in lines[-1], r.output


# ----------------------------------------------------------------------------- the source
def test_bundled_sets_load_as_float_series_with_sorted_class_names():
    pytest.importorskip("aeon")
    from cnnlab.data import get_info, load_split

    train, test = load_split("ucr:gunpoint", "train"), load_split("ucr:GunPoint", "test")
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert tuple(train.images.shape) == (50, 1, 150) and tuple(test.images.shape) == (150, 1, 150)
    assert train.classes == test.classes == ("1", "2") and train.is_series
    assert set(train.labels.tolist()) == {0, 1}
    assert get_info("ucr:GUNPOINT").name == "ucr:GunPoint"  # any case, spelled as aeon does
    motions = load_split("ucr:BasicMotions", "train")  # multivariate: 6 channels
    assert tuple(motions.images.shape) == (40, 6, 100)
    # sorted, spelled as the file's header spells them (aeon's reader lower-cases them)
    assert motions.classes == ("Badminton", "Running", "Standing", "Walking")
    # the decode cache gives the same series back (no second import of aeon's reader)
    again = load_split("ucr:gunpoint", "train")
    assert torch.equal(again.images, train.images) and again.classes == train.classes


def test_numeric_labels_sort_as_numbers():
    from cnnlab.data.sources.ucr import _labels_in_order

    assert _labels_in_order({"10", "2", "1"}, []) == ["1", "2", "10"]
    assert _labels_in_order({"walking", "badminton"}, ["Walking", "Badminton"]) == \
        ["Badminton", "Walking"]


@pytest.mark.parametrize("name,needles", [
    ("ucr:NoSuchSet", ["unknown UCR/UEA data set 'NoSuchSet'", "GunPoint", "ItalyPowerDemand"]),
    ("ucr:Covid3Month", ["regression problem", "GunPoint"]),
    ("ucr:JapaneseVowels", ["unequal length", "ucr:JapaneseVowels_eq"]),
])
def test_unusable_names_are_one_line(name, needles, tmp_path):
    pytest.importorskip("aeon")
    r = CliRunner().invoke(cli, ["train", "--model", "fcn", "--dataset", name,
                                 "--out", str(tmp_path / "run")])
    _one_line_error(r, *needles)
    assert not (tmp_path / "run").exists()


def test_a_missing_series_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    from cnnlab.data import get_info

    monkeypatch.setitem(sys.modules, "aeon", None)  # `import aeon` now fails as if absent
    with pytest.raises(CnnlabError, match=re.escape("pip install 'cnnlab[series]'")):
        get_info("ucr:GunPoint")
    r = CliRunner().invoke(cli, ["train", "--model", "fcn", "--dataset", "ucr:GunPoint",
                                 "--out", str(tmp_path / "run")])
    _one_line_error(r, "--dataset ucr:NAME needs the series extra", "cnnlab[series]")
    listing = CliRunner().invoke(cli, ["datasets"])
    assert listing.exit_code == 0 and "needs the series extra" in listing.output


def test_import_cnnlab_never_imports_aeon():
    code = ("import sys, cnnlab, cnnlab.data, cnnlab.models, cnnlab.cli, cnnlab.data.registry; "
            "assert 'aeon' not in sys.modules, 'aeon imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_datasets_lists_the_bundled_sets():
    pytest.importorskip("aeon")
    r = CliRunner().invoke(cli, ["datasets"])
    assert r.exit_code == 0
    assert "ucr:NAME" in r.output and "GunPoint" in r.output and "BasicMotions" in r.output


# ---------------------------------------------------------------------- preprocessing
def test_znormalisation_per_series_and_channel():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 40) * torch.tensor([1.0, 50.0, 0.01])[:, None] + 7.0
    x[2, 1] = 123.456  # a flat series: centred to zeros, not amplified rounding noise
    z = znormalise(x)
    assert z.dtype == torch.float32
    ok = torch.ones(5, 3, dtype=torch.bool)
    ok[2, 1] = False
    torch.testing.assert_close(z.mean(-1)[ok], torch.zeros(14), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(-1, correction=0)[ok], torch.ones(14), atol=1e-5, rtol=0)
    assert torch.equal(z[2, 1], torch.zeros(40))
    by_hand = (x[0, 0] - x[0, 0].double().mean()) / x[0, 0].double().std(correction=0)
    torch.testing.assert_close(z[0, 0], by_hand.float())
    torch.testing.assert_close(znormalise(z), z, atol=1e-6, rtol=0)  # idempotent


def test_series_preprocess_round_trips_and_checks_shapes():
    pre = SeriesPreprocess(channels=2, length=30)
    back = Preprocess.from_json(pre.to_json())
    assert back == pre and back.is_series and back.input_shape == (2, 30)
    assert json.loads(pre.to_json())["kind"] == "series"
    x = torch.randn(4, 2, 30) * 5 + 1
    torch.testing.assert_close(pre(x), znormalise(x))
    assert torch.equal(SeriesPreprocess(2, 30, znorm=False)(x), x)
    with pytest.raises(CnnlabError, match="2 channel.*30 steps"):
        pre(torch.randn(4, 3, 30))
    # an image record (every run before series existed: no "kind") still loads as images
    old = ('{"channels": 1, "size": [28, 28], "mean": [0.1307], "std": [0.3081], '
           '"light_on_dark": true, "channels_last": false}')
    img = Preprocess.from_json(old)
    assert isinstance(img, Preprocess) and not img.is_series and img.input_shape == (1, 28, 28)
    assert "kind" not in img.to_dict()  # image records are written as before
    with pytest.raises(CnnlabError, match="unknown kind"):
        Preprocess.from_json('{"kind": "video"}')


# ------------------------------------------------------------------------------ models
@pytest.mark.parametrize("name", ["fcn", "resnet1d"])
@pytest.mark.parametrize("channels,length", [(1, 150), (3, 24), (6, 7), (2, 1)])
def test_series_models_take_any_channels_and_length(name, channels, length):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_channels=channels)
    out = model(torch.randn(4, channels, length))
    assert out.shape == (4, 5) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert float(model.fc.weight.grad.abs().sum()) > 0


def test_the_architectures_follow_wang_et_al():
    fcn = create_model("fcn", num_classes=2)
    convs = [m for m in fcn.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(128, 8), (256, 5), (128, 3)]
    res = create_model("resnet1d", num_classes=2)
    blocks = [res.features.block1, res.features.block2, res.features.block3]
    assert [b.conv1.conv.out_channels for b in blocks] == [64, 128, 128]
    assert [[b.conv1.conv.kernel_size[0], b.conv2.conv.kernel_size[0], b.conv3.conv.kernel_size[0]]
            for b in blocks] == [[8, 5, 3]] * 3
    # 1x1 conv + BN where the channel count changes, BN alone in the third block
    assert [hasattr(b.shortcut, "conv") for b in blocks] == [True, True, False]
    # 'same' padding keeps the length, as Keras pads (3 before, 4 after for k8): an impulse
    # at step 0 reaches outputs 0..3 of a k8 kernel of ones, and outputs 0..1 of a k3 one
    from cnnlab.models.series import SameConv1d

    x = torch.zeros(1, 1, 9)
    x[0, 0, 0] = 1.0
    for k, reached in ((8, 4), (5, 3), (3, 2)):
        conv = SameConv1d(1, 1, k)
        torch.nn.init.ones_(conv.weight)
        assert conv(x)[0, 0].tolist() == [1.0] * reached + [0.0] * (9 - reached), k


def test_model_kind_mismatches_are_one_line():
    msg = ("model 'lenet5' takes images (1x28x28) but data set 'ucr:GunPoint' gives 1-D series "
           "(1x150); pick a series model: fcn, resnet1d")
    with pytest.raises(CnnlabError) as e:
        check_input_shape("lenet5", (1, 150), "data set 'ucr:GunPoint'")
    assert str(e.value) == msg
    with pytest.raises(CnnlabError, match="model 'fcn' takes 1-D series .* gives images"):
        check_input_shape("fcn", (1, 28, 28), "data set 'mnist'")
    check_input_shape("fcn", (6, 3))  # any channels, any length


def test_model_kind_mismatches_in_the_cli(tmp_path):
    pytest.importorskip("aeon")
    r = CliRunner().invoke(cli, ["train", "--model", "lenet5", "--dataset", "ucr:GunPoint",
                                 "--out", str(tmp_path / "a")])
    _one_line_error(r, "model 'lenet5' takes images (1x28x28) but data set 'ucr:GunPoint' "
                       "gives 1-D series (1x150); pick a series model: fcn, resnet1d")
    r = CliRunner().invoke(cli, ["train", "--model", "fcn", "--dataset", "digits",
                                 "--out", str(tmp_path / "b")])
    _one_line_error(r, "model 'fcn' takes 1-D series", "gives images (1x8x8)")
    r = CliRunner().invoke(cli, ["train", "--model", "fcn", "--dataset", "ucr:GunPoint",
                                 "--flip", "--tta", "1", "--out", str(tmp_path / "c")])
    _one_line_error(r, "--flip, --tta are image options", "drop them")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_summary_prints_series_shapes():
    r = CliRunner().invoke(cli, ["summary", "fcn", "--input", "6,100"])
    assert r.exit_code == 0, r.output
    assert "Conv1d output shape: torch.Size([1, 128, 100])" in r.output
    assert "AdaptiveAvgPool1d output shape: torch.Size([1, 128, 1])" in r.output
    assert "Linear output shape: torch.Size([1, 10])" in r.output
    params = sum(p.numel() for p in create_model("fcn", in_channels=6).parameters())
    assert f"Total params: {params:,}" in r.output
    bad = CliRunner().invoke(cli, ["summary", "resnet1d", "--input", "1,28,28"])
    _one_line_error(bad, "--input must be 2 positive integers")


# ------------------------------------------------------------------ a trained series run
@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    pytest.importorskip("aeon")
    from cnnlab.engine.train import fit

    out = tmp_path_factory.mktemp("series") / "run"
    result = fit(build_config(None, {**QUICK, "dataset": "ucr:italypowerdemand",
                                     "out": str(out)}), log=lambda _m: None)
    return result


def test_a_short_run_learns(series_run):
    h = series_run.history
    assert h[-1].test_acc > 0.9, [m.test_acc for m in h]  # chance 0.5; published 0.961
    assert series_run.config.dataset == "ucr:ItalyPowerDemand"  # the resolved spelling
    saved = json.loads((series_run.run_dir / "preprocess.json").read_text())
    assert saved == {"kind": "series", "channels": 1, "length": 24, "znorm": True}


def test_resume_equals_uninterrupted(tmp_path):
    pytest.importorskip("aeon")
    from cnnlab.engine.train import fit

    class Stop(Exception):
        pass

    def cfg(name):
        return build_config(None, {**QUICK, "epochs": 3, "eval_every": 1,
                                   "out": str(tmp_path / name)})

    full = fit(cfg("a"), log=lambda _m: None)

    def stop_after_first(m):
        if m.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(cfg("b"), log=lambda _m: None, on_epoch_end=stop_after_first)
    resumed = fit(cfg("b"), resume=tmp_path / "b", log=lambda _m: None)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h.test_acc for h in full.history] == [h.test_acc for h in resumed.history]


def test_eval_summary_and_errors_of_the_run(series_run):
    run = series_run.run_dir
    r = CliRunner().invoke(cli, ["eval", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "eval-test.json").read_text())
    assert saved["accuracy"] == pytest.approx(series_run.history[-1].test_acc)
    assert sum(map(sum, saved["confusion"])) == 1029
    r = CliRunner().invoke(cli, ["summary", str(run)])
    assert r.exit_code == 0 and "Conv1d output shape: torch.Size([1, 128, 24])" in r.output
    assert "Linear output shape: torch.Size([1, 2])" in r.output
    r = CliRunner().invoke(cli, ["errors", str(run), "--top", "4", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (run / "errors-test.png").stat().st_size > 10_000


def test_image_commands_refuse_a_series_run_in_one_line(series_run, tmp_path):
    run = str(series_run.run_dir)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (8, 8)).save(image)
    for args in (["visualize", "gradcam", run, "--index", "0"],
                 ["visualize", "filters", run], ["explain", "shapes", run]):
        _one_line_error(CliRunner().invoke(cli, args), "takes images", "1-D series run",
                        "cnnlab visualize cam")


def test_predict_on_series_files_agrees_with_the_model(series_run, tmp_path):
    """.npy (no pickle), .csv and .txt: one series per row, FILE#i each; the answers are the
    model's on the test split; a wrong length, an image or a pickle is a clear line."""
    import json

    import numpy as np

    from cnnlab.data.load import load_split
    from cnnlab.engine.predict import predict
    from cnnlab.run import load_run

    run = load_run(series_run.run_dir, device="cpu")
    x = load_split("ucr:italypowerdemand", "test").images[:5]  # (5, 1, 24)
    want = [run.classes[i] for i in run.logits(x).argmax(1).tolist()]
    np.save(tmp_path / "five.npy", x[:, 0].numpy())
    np.savetxt(tmp_path / "five.csv", x[:, 0].numpy(), delimiter=",")
    np.savetxt(tmp_path / "one.txt", x[0, 0].numpy())
    got = predict(series_run.run_dir, [tmp_path / "five.npy", tmp_path / "five.csv",
                                       tmp_path / "one.txt"], top_k=1, device="cpu")
    assert [p.classes[0] for p in got] == want + want + want[:1]
    assert got[0].file.endswith("five.npy#0") and got[-1].file.endswith("one.txt")
    r = CliRunner().invoke(cli, ["predict", str(series_run.run_dir), str(tmp_path / "five.npy"),
                                 "--json", "--top-k", "all"])
    assert r.exit_code == 0 and len(json.loads(r.output.splitlines()[0])["top"]) == 2
    np.save(tmp_path / "short.npy", x[:, 0, :10].numpy())
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    gap = x[:2, 0].numpy().copy()
    gap[1, 3] = np.nan  # a NaN answered "<0.1%" everywhere and wrote NaN into --json
    np.save(tmp_path / "gap.npy", gap)
    (tmp_path / "empty.csv").write_text("")
    for name, says in (("short.npy", "24 steps, got 1x10; give series of that shape"),
                       ("x.png", "is an image"), ("obj.npy", "cannot read"),
                       ("gap.npy", "holds 1 missing (NaN) or infinite value(s)"),
                       ("empty.csv", "holds no numbers")):
        r = CliRunner().invoke(cli, ["predict", str(series_run.run_dir), str(tmp_path / name)])
        assert r.exit_code == 1 and says in r.output, r.output
        assert "Warning" not in r.output


def test_serving_a_series_run_is_refused_before_anything_starts(series_run):
    pytest.importorskip("fastapi")
    from cnnlab.run import load_run
    from cnnlab.serve.app import ServeConfig, create_app

    run = load_run(series_run.run_dir, device="cpu")
    with pytest.raises(CnnlabError, match="`cnnlab serve` takes images"):
        create_app(run, ServeConfig(str(series_run.run_dir)))


def test_cam_matches_a_hand_computation(series_run):
    from cnnlab.run import load_run
    from cnnlab.viz.series import pick_series, series_cam

    run = load_run(series_run.run_dir, device="cpu")
    series, labels, true = pick_series(run, per_class=2, limit=8)
    assert len(series) == 4 and true == [0, 1, 0, 1]  # round robin over the two classes
    cam = series_cam(run, series, labels, true)
    # by hand: the last block's output A (hooked), the linear layer's weights w
    seen = {}
    handle = run.model.features.block3.register_forward_hook(
        lambda _m, _i, out: seen.setdefault("A", out.detach()))
    with torch.no_grad():
        logits = run.model(znormalise(series))
    handle.remove()
    w, b = run.model.fc.weight.detach(), run.model.fc.bias.detach()
    pred = logits.argmax(1)
    by_hand = torch.stack([w[pred[n]] @ seen["A"][n] for n in range(len(series))])  # (N, L)
    torch.testing.assert_close(cam.raw, by_hand, atol=1e-5, rtol=1e-5)
    assert cam.predicted == pred.tolist()
    # the map's mean over time plus the bias is the logit: the CAM explains the whole score
    torch.testing.assert_close(cam.raw.mean(1) + b[pred], logits[torch.arange(4), pred],
                               atol=1e-4, rtol=1e-4)
    assert float(cam.maps.min()) == 0.0 and float(cam.maps.max()) == 1.0
    other = series_cam(run, series, labels, true, target="2")  # the map of a chosen class
    torch.testing.assert_close(other.raw[0], w[1] @ seen["A"][0], atol=1e-5, rtol=1e-5)


def test_visualize_cam_draws_a_picture(series_run, tmp_path):
    out = tmp_path / "cam.png"
    r = CliRunner().invoke(cli, ["visualize", "cam", str(series_run.run_dir), "--per-class", "1",
                                 "--index", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    from PIL import Image

    img = np.asarray(Image.open(out).convert("RGB")).astype(float)
    assert img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 20  # not blank
    # the line coloured by the map, left of the colour bar: grey where the activation is low,
    # dark red where it is high (each series' map is scaled to reach 1 somewhere)
    panels = img[:, : int(img.shape[1] * 0.8)]
    r, g, b = panels[..., 0], panels[..., 1], panels[..., 2]
    assert ((r > 110) & (g < 70) & (b < 70)).sum() > 150, "no high-activation segment"
    assert ((r - b > 60) & (g > 120)).sum() > 150, "no mid (orange) segment"
    bad = CliRunner().invoke(cli, ["visualize", "cam", str(series_run.run_dir), "--index", "5000"])
    _one_line_error(bad, "--index 5000 is out of range")


def test_report_of_a_series_run(series_run, tmp_path):
    out = tmp_path / "report.html"
    r = CliRunner().invoke(cli, ["report", str(series_run.run_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "Class activation maps over time" in page and "Most-confused classes" in page
    assert "Not available for this run" not in page
    assert "Grad-CAM" not in page and "filters" not in page  # no image sections
    assert page.count('<img class="fig"') == 4  # curves, confusion, CAMs, mistakes
    assert "1,029 series" in page


def test_export_of_a_series_run(series_run, tmp_path):
    for fmt, name in (("torchscript", "m.pt"), ("onnx", "m.onnx")):
        if fmt == "onnx":
            pytest.importorskip("onnxruntime")
        out = tmp_path / name
        r = CliRunner().invoke(cli, ["export", str(series_run.run_dir), "--format", fmt,
                                     "--with-preprocess", "--out", str(out)])
        assert r.exit_code == 0, r.output
        side = json.loads((tmp_path / f"{name}.json").read_text())
        assert side["verified"] and side["input"]["shape"] == ["batch", 1, 24]
        assert side["preprocess"]["kind"] == "series"


def test_cam_of_an_image_run_is_one_line(lenet_run):
    r = CliRunner().invoke(cli, ["visualize", "cam", str(lenet_run)])
    _one_line_error(r, "is an image run", "cnnlab visualize gradcam")


def test_fine_tuning_from_a_run_on_other_channel_counts_is_one_line(series_run, tmp_path):
    """Images follow the source's channels; series cannot, so both counts are named."""
    r = CliRunner().invoke(cli, ["train", "-r", "ucr-fcn", "--init-from",
                                 str(series_run.run_dir), "--dataset", "ucr:BasicMotions",
                                 "--epochs", "1", "--out", str(tmp_path / "bm")])
    _one_line_error(r, "was trained on 1-channel series but this data set's series have 6 "
                       "channels", "fine-tune from a run on 6-channel series")
    assert not (tmp_path / "bm").exists()


def test_resuming_with_more_epochs_says_the_schedule_is_laid_out_anew(series_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(series_run.run_dir, run)
    r = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "6"])
    assert r.exit_code == 0, r.output
    assert "the onecycle learning-rate schedule was laid out over 5 epochs and is now laid " \
           "out over 6" in " ".join(r.output.split()), r.output
