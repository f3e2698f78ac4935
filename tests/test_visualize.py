"""`cnnlab visualize filters|activations`: the pictures hold the run's own numbers."""

import pytest
import torch
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.engine.train import fit
from cnnlab.run import load_run
from cnnlab.viz.inside import activations, capture, pick_examples

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vis") / "run"
    cfg = build_config(None, {"model": "lenet5", "dataset": "digits", "resize": 28,
                              "limit_train": 256, "epochs": 1, "batch_size": 64, "out": str(out)})
    fit(cfg, log=lambda _m: None)
    return out


def test_activations_are_the_layer_outputs_and_hooks_are_removed(lenet_run):
    run = load_run(lenet_run, device="cpu")
    images, labels = pick_examples(run, indices=[0], class_names=["3"])
    assert labels[0].startswith("#0 ") and labels[1].endswith(" 3") and len(images) == 2
    maps = activations(run, ["conv1", "pool2"], images)
    x = run.preprocess(images).float()
    conv1 = run.model[0](x)  # d2l's LeNet: conv1 is module "0"
    torch.testing.assert_close(maps["conv1"], conv1)
    assert maps["pool2"].shape == (2, 16, 5, 5)
    assert not any(m._forward_hooks for m in run.model.modules())
    with pytest.raises(RuntimeError), capture(run.model, {"c": run.model[0]}):
        run.model(torch.zeros(1, 3, 28, 28))  # wrong channels: the forward pass fails
    assert not any(m._forward_hooks for m in run.model.modules())


def test_visualize_commands_write_pictures(lenet_run):
    res = CliRunner().invoke(cli, ["visualize", "filters", str(lenet_run), "--layer", "conv2"])
    assert res.exit_code == 0, res.output
    assert (lenet_run / "filters-conv2.png").read_bytes()[:8] == PNG
    res = CliRunner().invoke(cli, ["visualize", "activations", str(lenet_run), "--layer",
                                   "conv1,conv2", "--class", "0", "--index", "5"])
    assert res.exit_code == 0, res.output
    assert (lenet_run / "activations.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("args,needle", [
    (["filters", "{run}", "--layer", "nope"], "has no layer 'nope'; choose one of: conv1"),
    (["filters", "{run}", "--layer", "fc1"], "is a Linear, not a convolution; choose one of: "
                                             "conv1, conv2"),
    (["activations", "{run}", "--layer", "conv1", "--index", "99999"], "out of range"),
    (["activations", "{run}", "--layer", "conv1", "--class", "Sweater"], "no class 'Sweater'"),
    (["activations", "{run}", "--layer", "conv1"], "choose inputs with --index"),
    (["activations", "{run}", "--layer", "fc1", "--index", "0"], "not feature maps"),
    (["filters", "{tmp}"], "is not a cnnlab run directory"),
])
def test_visualize_bad_input_is_one_line_and_writes_nothing(lenet_run, tmp_path, args, needle):
    before = sorted(p.name for p in lenet_run.iterdir())
    argv = [a.format(run=lenet_run, tmp=tmp_path) for a in args]
    res = CliRunner().invoke(cli, ["visualize", *argv])
    assert res.exit_code == 1, res.output
    assert needle in res.output and res.output.count("\n") == 1, res.output
    assert sorted(p.name for p in lenet_run.iterdir()) == before
