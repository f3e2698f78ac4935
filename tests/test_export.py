"""`cnnlab export`: every model round-trips through ONNX and TorchScript with a dynamic batch
axis, the sidecar says what was checked, and a bad export leaves nothing behind."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.data import load_split
from cnnlab.data.preprocess import Preprocess, SeriesPreprocess
from cnnlab.engine import export as ex
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, get_model_info, model_names
from cnnlab.run import load_run

ort = pytest.importorskip("onnxruntime")
BATCHES = (1, 2, 7)
WITH_PREPROCESS_ONNX = {"lenet5", "airbench-res", "mnist-resnet"}  # one of each kind, for time


def _model_and_preprocess(name: str, channels_last: bool = False):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    info = get_model_info(name)
    if info.series:  # float (N, C, L) series, z-normalised; no memory layout to choose
        return model, SeriesPreprocess(*info.input_shape)
    c, h, w = info.input_shape
    pre = Preprocess(c, (h, w), mean=(0.45,) * c, std=(0.22,) * c, channels_last=channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model, pre


def _images(pre: Preprocess | SeriesPreprocess, n: int, seed: int = 1) -> torch.Tensor:
    if pre.is_series:
        return ex.random_images(pre, n, seed)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *pre.input_shape), generator=g, dtype=torch.uint8)


def _load(fmt: str, path):
    """The exported file as a function of a tensor, loaded the way a client would."""
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[0] == "batch"  # symbolic, not frozen at 2
        return lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    with ex.quiet_exporters():  # torch.jit.load's DeprecationWarning (torch 2.13)
        loaded = torch.jit.load(str(path))
    return lambda x: loaded(x).detach()


def _round_trip(name: str, fmt: str, with_preprocess: bool, tmp_path) -> None:
    model, pre = _model_and_preprocess(name, channels_last=with_preprocess)
    out = tmp_path / f"{name}{ex.FORMATS[fmt][1]}"
    report = ex.export_model(model, pre, [str(i) for i in range(10)], fmt, out,
                             with_preprocess=with_preprocess, model_name=name)
    assert report.verified and [r.batch for r in report.verification] == list(BATCHES)
    assert report.input["dtype"] == ("uint8" if with_preprocess and not pre.is_series
                                     else "float32")
    run = _load(fmt, out)
    for n in BATCHES:  # fresh images, not the ones the export checked itself on
        images = _images(pre, n, seed=10 + n)
        with torch.no_grad():
            want = model(pre(images))
        got = run(images if with_preprocess else ex.model_input(pre, images))
        assert got.shape == (n, 10)
        assert float((got - want).abs().max()) <= ex.ATOL, (name, fmt, n)
        assert torch.equal(got.argmax(1), want.argmax(1)), (name, fmt, n)
    sidecar = json.loads(report.sidecar.read_text())
    assert sidecar["verified"] is True and sidecar["input"]["shape"][0] == "batch"


# d2l's full-size nets (ModelInfo.heavy: 0.8M-129M parameters at 224x224 or 96x96) are not
# round-tripped here: exporting and checking them at batches 1, 2 and 7, twice per format,
# would take minutes (VGG-11's ONNX file alone is 515 MB). Their -small variants are built
# from the same blocks and round-trip (test_heavy_models_are_made_of_exported_layers).
HEAVY = {n for n in model_names() if get_model_info(n).heavy}
EXPORTED = [pytest.param(n, marks=pytest.mark.skip(reason="heavy: its -small variant's blocks "
                                                   "round-trip")) if n in HEAVY else n
            for n in model_names()]


@pytest.mark.parametrize("name", EXPORTED)
def test_every_model_round_trips_through_onnx(name, tmp_path):
    _round_trip(name, "onnx", False, tmp_path)
    if name in WITH_PREPROCESS_ONNX:
        _round_trip(name, "onnx", True, tmp_path)


# A loaded TorchScript graph re-optimises itself for each new batch size, which costs
# seconds for graphs of many small layers. The preprocessing wrapper is the same for every
# net, so of d2l's -small variants only lenet-bn and resnet18-small also round-trip with it
# (saving ~25 s); the others' own layers round-trip plainly.
PLAIN_TORCHSCRIPT_ONLY = {"alexnet-small", "vgg11-small", "nin-small", "googlenet-small",
                          "densenet-small"}


@pytest.mark.parametrize("name", EXPORTED)
def test_every_model_round_trips_through_torchscript(name, tmp_path):
    _round_trip(name, "torchscript", False, tmp_path)
    if name not in PLAIN_TORCHSCRIPT_ONLY:
        _round_trip(name, "torchscript", True, tmp_path)


def _layer_types(name: str) -> set[type]:
    with torch.device("meta"):  # types only: no memory, no initialisation
        return {type(m) for m in create_model(name).modules()}


def test_heavy_models_are_made_of_exported_layers():
    """A heavy net and its -small variant, which round-trips above, are made of the same
    module classes (layers and blocks: Inception, Residual, DenseBlock ...); only sizes
    differ."""
    for name in sorted(HEAVY):
        small = name.removesuffix("-d2l") + "-small"
        assert small in model_names() and small not in HEAVY
        assert _layer_types(name) == _layer_types(small), name


def test_the_callers_model_is_left_as_it_was(tmp_path):
    model, pre = _model_and_preprocess("lenet5", channels_last=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex.export_model(model, pre, list("0123456789"), "torchscript", tmp_path / "m.pt")
    conv = next(p for p in model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CnnlabError, match="gives 10 outputs but 2 class names"):
        ex.export_model(model, pre, ["a", "b"], "torchscript", tmp_path / "two.pt")
    assert not (tmp_path / "two.pt").exists()


# ------------------------------------------------------------------------ the CLI on a run
@pytest.fixture
def run_copy(lenet_run, tmp_path):
    """A private copy of the shared lenet run, so exports never change it for other tests."""
    return shutil.copytree(lenet_run, tmp_path / "run")


def _invoke(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def _one_line_error(r, text: str) -> None:
    assert r.exit_code == 1, r.output
    assert text in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_cli_default_path_and_sidecar(run_copy, fmt):
    r = _invoke(run_copy, "--format", fmt)
    assert r.exit_code == 0, r.output
    assert "torchvision" not in r.output and "Warning" not in r.output  # exporter noise silenced
    assert "images of the digits test split" in r.output
    name = ex.FORMATS[fmt][0]
    assert (run_copy / name).is_file() and f"wrote {run_copy / name}" in r.output
    side = json.loads((run_copy / f"{name}.json").read_text())
    run = load_run(run_copy, device="cpu")
    assert side["format"] == fmt and side["file"] == name and side["model"] == "lenet5"
    assert side["classes"] == list(run.classes)
    assert side["input"] == {"name": "images", "dtype": "float32", "shape": ["batch", 1, 28, 28],
                             "with_preprocess": False, "range": side["input"]["range"]}
    expected = {k: v for k, v in run.preprocess.to_dict().items() if k != "channels_last"}
    assert {k: v for k, v in side["preprocess"].items() if k != "how"} == expected
    how = side["preprocess"]["how"]  # every rule cnnlab predict applies, for a client
    assert "invert (255 - x) when the mean of the resized image's border pixels" in how
    assert "EXIF orientation" in how and "stretched, not cropped" in how
    if fmt == "onnx":  # the same facts inside the file, for tools that never see the sidecar
        import onnxruntime as ort

        meta = ort.InferenceSession(str(run_copy / name)).get_modelmeta().custom_metadata_map
        assert json.loads(meta["cnnlab.classes"]) == list(run.classes)
        assert json.loads(meta["cnnlab.preprocess"])["mean"] == list(run.preprocess.mean)
    assert side["versions"]["torch"] == torch.__version__
    if fmt == "onnx":
        assert side["opset"] >= 17 and side["versions"]["onnxruntime"] == ort.__version__
    assert side["images"]["source"] == "test split" and side["images"]["dataset"] == "digits"
    assert [row["batch"] for row in side["verification"]] == list(BATCHES)
    for row in side["verification"]:
        assert row["max_abs_diff"] <= 1e-3 and row["top1_agreement"] == 1.0
        assert f"{row['max_abs_diff']:.2e}" in r.output
    assert side["verified"] is True


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_with_preprocess_takes_uint8_and_matches_loaded_run(run_copy, tmp_path, fmt):
    out = tmp_path / "deploy" / f"digits{ex.FORMATS[fmt][1]}"
    r = _invoke(run_copy, "--format", fmt, "--out", out, "--with-preprocess")
    assert r.exit_code == 0, r.output
    assert out.is_file() and not (run_copy / ex.FORMATS[fmt][0]).exists()
    side = json.loads((out.parent / f"{out.name}.json").read_text())
    assert side["input"]["dtype"] == "uint8" and side["input"]["with_preprocess"] is True
    run = load_run(run_copy, device="cpu")
    images = run.preprocess.adapt(load_split("digits", "test").images[20:33])  # 13 new images
    got = _load(fmt, out)(images)
    want = run.logits(images)
    assert np.allclose(got.numpy(), want.numpy(), atol=1e-4)
    assert torch.equal(got.argmax(1), want.argmax(1))
    if fmt == "torchscript":  # the file checks its input, as ONNX Runtime does
        model = torch.jit.load(str(out))
        for wrong, says in ((images.float(), "another dtype"),
                            (images[:, :, :20], "got the shape [13, 1, 20, 28]")):
            with pytest.raises(Exception, match=re.escape(says)):
                model(wrong)


def test_out_ending_in_a_slash_is_a_folder_to_make(run_copy, tmp_path):
    r = _invoke(run_copy, "--format", "torchscript", "--out", f"{tmp_path / 'deploy' / 'new'}/")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "deploy" / "new" / ex.FORMATS["torchscript"][0]).is_file()


def test_cli_errors_are_one_line_and_write_nothing(run_copy, tmp_path):
    before = sorted(p.name for p in run_copy.iterdir())
    _one_line_error(_invoke(run_copy, "--format", "torchscript", "--out", tmp_path / "m.onnx"),
                    "torchscript files end in .pt")
    _one_line_error(_invoke(run_copy, "--format", "onnx", "--out", tmp_path / "m.pt"),
                    "onnx files end in .onnx")
    _one_line_error(_invoke(run_copy, "--format", "tflite"), "unknown export format 'tflite'")
    _one_line_error(_invoke(tmp_path / "nowhere", "--format", "onnx"), "does not exist")
    assert sorted(p.name for p in run_copy.iterdir()) == before
    assert not list(tmp_path.glob("m.*"))


def test_a_failed_verification_leaves_no_file(run_copy, monkeypatch):
    real = ex._RUNNERS["onnx"]

    def broken(path):  # a graph that is off by 0.01: above the tolerance
        run = real(path)
        return lambda x: run(x) + 0.01

    monkeypatch.setitem(ex._RUNNERS, "onnx", broken)
    before = sorted(p.name for p in run_copy.iterdir())
    r = _invoke(run_copy, "--format", "onnx")
    _one_line_error(r, "does not match PyTorch")
    assert "nothing was written" in r.output
    assert sorted(p.name for p in run_copy.iterdir()) == before  # no file, no temporary file


def test_unloadable_test_split_falls_back_to_random_images_and_says_so(run_copy, monkeypatch):
    import cnnlab.engine.evaluate as evaluate
    from cnnlab.errors import CnnlabError

    def no_data(*_a, **_k):
        raise CnnlabError("data set 'digits' is not here")

    monkeypatch.setattr(evaluate, "run_split", no_data)
    r = _invoke(run_copy, "--format", "torchscript")
    assert r.exit_code == 0, r.output
    assert "could not be loaded" in r.output and "random uint8 images instead" in r.output
    side = json.loads((run_copy / "model.torchscript.pt.json").read_text())
    assert side["images"]["source"] == "random" and "not here" in side["images"]["reason"]
    assert side["verified"] is True


def test_onnx_without_the_extra_names_it(run_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    r = _invoke(run_copy, "--format", "onnx")
    _one_line_error(r, "cnnlab[export]")
    assert not (run_copy / "model.onnx").exists()


def test_import_cnnlab_does_not_import_onnx():
    code = ("import sys, cnnlab, cnnlab.cli; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_example_client_needs_only_the_sidecar_and_agrees_with_predict(run_copy, tmp_path):
    """examples/onnx_client.py (onnxruntime, Pillow, numpy; no cnnlab, no torch) follows the
    sidecar's preprocessing and gives cnnlab predict's answers on pictures of every mode."""
    from test_predict import _write_variants

    from cnnlab.data import load_split
    from cnnlab.engine.predict import predict

    pytest.importorskip("onnxruntime")
    r = _invoke(run_copy, "--format", "onnx")
    assert r.exit_code == 0, r.output
    files = []
    for i in range(4):  # four digits, each in six modes: grey, RGB JPEG, RGBA, palette, ...
        folder = tmp_path / "pictures" / str(i)
        folder.mkdir(parents=True)
        _write_variants(load_split("digits", "test").images[i, 0].numpy(), folder)
        files += sorted(str(f) for f in folder.iterdir() if f.suffix != ".txt")
    script = Path(__file__).parents[1] / "examples" / "onnx_client.py"
    out = subprocess.run([sys.executable, str(script), str(run_copy / "model.onnx"), *files],
                         capture_output=True, text=True, check=True).stdout
    client = [json.loads(line) for line in out.splitlines()]
    cnnlab = predict(run_copy, files, top_k=1, device="cpu")
    assert len(client) == len(cnnlab) == 24
    for c, p in zip(client, cnnlab, strict=True):
        assert c["class"] == p.classes[0], c["file"]
        assert c["probability"] == pytest.approx(p.probabilities[0], abs=0.03), c["file"]


def test_the_example_client_on_a_run_without_normalisation_and_without_its_sidecar(
        run_copy, tmp_path):
    """A run trained with normalize: false (d2l's recipes) takes x/255: the client fed 0..255
    and answered every picture with probability 1.0. Without the sidecar the client reads the
    file's own metadata; an unreadable file is one JSON error line and exit status 1."""
    from PIL import Image

    from cnnlab.engine.predict import predict

    pytest.importorskip("onnxruntime")
    pre = json.loads((run_copy / "preprocess.json").read_text())
    pre["mean"] = pre["std"] = None
    (run_copy / "preprocess.json").write_text(json.dumps(pre))
    r = _invoke(run_copy, "--format", "onnx")
    assert r.exit_code == 0, r.output
    side = json.loads((run_copy / "model.onnx.json").read_text())
    assert side["input"]["range"].startswith("x/255")
    from cnnlab.data import load_split

    files = []
    for i in range(3):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(load_split("digits", "test").images[i, 0].numpy()).save(files[-1])
    script = Path(__file__).parents[1] / "examples" / "onnx_client.py"
    model = str(run_copy / "model.onnx")
    want = predict(run_copy, files, top_k=1, device="cpu")

    def client(*extra):
        out = subprocess.run([sys.executable, script, model, *files, *extra],
                             capture_output=True, text=True)
        return out.returncode, [json.loads(line) for line in out.stdout.splitlines()]

    for sidecar in (True, False):
        if not sidecar:
            (run_copy / "model.onnx.json").unlink()
        code, rows = client()
        assert code == 0
        for c, p in zip(rows, want, strict=True):
            assert c["class"] == p.classes[0]
            assert c["probability"] == pytest.approx(p.probabilities[0], abs=0.03)
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    code, rows = client(str(tmp_path / "bad.png"))
    assert code == 1 and len(rows) == 4 and "cannot read it as an image" in rows[-1]["error"]
