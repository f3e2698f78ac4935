"""Pickle files are refused everywhere a run is expected, and never unpickled.

Each malicious file below would create a marker file the moment it is unpickled (the control
test proves the payload is live); every command must refuse it with one line and the marker
must never appear.
"""

import pathlib
import pickle
import shutil

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnnlab.cli import cli
from cnnlab.errors import CnnlabError
from cnnlab.run import load_run
from cnnlab.safety import has_pickle_content, looks_like_pickle


class Evil:
    """Unpickling this object touches ``marker``: the smallest stand-in for arbitrary code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "PWNED"


@pytest.fixture
def evil_files(tmp_path, marker, lenet_run):
    """name -> path of a malicious file, each in another disguise."""
    files = {}
    files["evil.pkl"] = tmp_path / "evil.pkl"
    files["evil.pkl"].write_bytes(pickle.dumps(Evil(marker), protocol=2))
    files["evil.pt"] = tmp_path / "evil.pt"
    torch.save(Evil(marker), files["evil.pt"])  # torch.save's zip with data.pkl inside
    files["weights.dat"] = tmp_path / "weights.dat"  # pickle content, innocent name
    files["weights.dat"].write_bytes(pickle.dumps(Evil(marker), protocol=5))
    files["zipped.dat"] = tmp_path / "zipped.dat"  # torch.save zip, innocent name
    torch.save(Evil(marker), files["zipped.dat"])
    for name, payload in (("run-pickle", "pkl"), ("run-torchsave", "pt")):
        run = shutil.copytree(lenet_run, tmp_path / name)  # a real run whose weights are evil
        shutil.copyfile(files[f"evil.{payload}"], run / "model.safetensors")
        files[name] = run
    assert not marker.exists()
    return files


def test_the_payload_is_live(tmp_path):
    """Control: unpickling these files really runs code, so the tests below mean something."""
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(control), protocol=2))
    assert control.exists()
    control.unlink()
    torch.save(Evil(control), tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()


def test_sniffing(evil_files, lenet_run, tmp_path):
    for name in ("evil.pkl", "evil.pt", "weights.dat", "zipped.dat"):
        assert looks_like_pickle(evil_files[name]) and has_pickle_content(evil_files[name]), name
    for path in lenet_run.rglob("*"):  # safetensors, JSON, YAML, CSV: none is a pickle
        assert not looks_like_pickle(path), path
    (tmp_path / "empty.bin").write_bytes(b"")
    assert looks_like_pickle(tmp_path / "empty.bin")  # by name
    assert not looks_like_pickle(tmp_path)  # a directory


def _expect_pickle_refusal(text: str, name: str) -> None:
    assert "is a pickle file" in text, text
    assert "never unpickles" in text and "arbitrary code" in text, text
    assert "safetensors.torch.save_file" in text, text
    assert name in text, text


@pytest.mark.parametrize("name", ["evil.pkl", "evil.pt", "weights.dat", "zipped.dat",
                                  "run-pickle", "run-torchsave"])
def test_load_run_refuses(evil_files, marker, name):
    with pytest.raises(CnnlabError) as e:
        load_run(evil_files[name], device="cpu")
    msg = str(e.value)
    assert "\n" not in msg
    _expect_pickle_refusal(msg, "model.safetensors" if name.startswith("run-") else name)
    if name.startswith("run-"):
        assert "not safetensors" in msg
    assert not marker.exists()


@pytest.mark.parametrize("name", ["evil.pkl", "evil.pt", "zipped.dat", "run-torchsave"])
def test_every_command_refuses(evil_files, marker, tmp_path, name):
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    target = str(evil_files[name])
    commands = [["predict", target, str(image)], ["eval", target],
                ["export", target, "--format", "onnx"],
                ["export", target, "--format", "torchscript"],
                ["serve", target, "--port", "0"],
                ["visualize", "filters", target]]
    if not name.startswith("run-"):  # resuming reads the checkpoint, not model.safetensors:
        commands.append(["train", "--resume", target, "--epochs", "2"])  # see the next test
    for args in commands:
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, (args, r.output)
        _expect_pickle_refusal(r.output, "model.safetensors" if name.startswith("run-") else name)
        assert not marker.exists(), args
    assert not marker.exists()


def test_resume_refuses_a_pickled_checkpoint(lenet_run, tmp_path, marker):
    run = shutil.copytree(lenet_run, tmp_path / "run")
    (checkpoint,) = (run / "checkpoints").glob("*.safetensors")
    torch.save(Evil(marker), checkpoint)
    r = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "2"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    _expect_pickle_refusal(r.output, checkpoint.name)
    assert not marker.exists()


def test_other_files_are_not_runs(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    for args in (["eval", str(notes)], ["export", str(notes), "--format", "torchscript"],
                 ["train", "--resume", str(notes)]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and "is a file, not a run directory" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1


def test_a_file_inside_a_run_points_to_its_run(lenet_run):
    weights = lenet_run / "model.safetensors"
    r = CliRunner().invoke(cli, ["eval", str(weights)])
    assert r.exit_code == 1
    assert f"is a file, not a run directory; give the run folder it belongs to, {lenet_run}" \
        in r.output.replace("\n", "")


def test_garbage_weights_name_the_file(lenet_run, tmp_path):
    run = shutil.copytree(lenet_run, tmp_path / "run")
    (run / "model.safetensors").write_bytes(b"not weights at all")
    with pytest.raises(CnnlabError, match="model.safetensors is not a readable safetensors file"
                       ) as e:
        load_run(run, device="cpu")
    assert "\n" not in str(e.value)


def test_an_exported_torchscript_file_is_named_as_such(lenet_run, tmp_path):
    """cnnlab's own export given where a run goes: not "convert it to safetensors" advice,
    which fits other people's weights, but what the file is and what to give instead."""
    run = shutil.copytree(lenet_run, tmp_path / "run")
    r = CliRunner().invoke(cli, ["export", str(run), "--format", "torchscript", "--out",
                                 str(tmp_path / "lenet.pt")])
    assert r.exit_code == 0, r.output
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    r = CliRunner().invoke(cli, ["predict", str(tmp_path / "lenet.pt"), str(tmp_path / "x.png")])
    assert r.exit_code == 1
    assert "is a TorchScript file (what `cnnlab export --format torchscript` writes" in r.output
    assert "safetensors" not in r.output
