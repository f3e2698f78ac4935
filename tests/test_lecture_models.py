"""Liu Er's lecture 11 (advanced CNN) nets: the lecture's own classes, copied as the lecture
writes them, load cnnlab's weights with ``strict=True`` and give the same outputs; the
per-layer shapes are the lecture's; the residual block's skip connection carries its input."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.config import build_config, recipe_names
from cnnlab.inspect.summary import layer_rows
from cnnlab.models import create_model, find_layer, get_model_info
from cnnlab.run import load_run


# --- copied from the lecture (PyTorch深度学习实践 11, 卷积神经网络(高级篇)) -------------------
class InceptionA(nn.Module):
    def __init__(self, in_channels):
        super(InceptionA, self).__init__()  # noqa: UP008 - as the lecture writes it
        self.branch1x1 = nn.Conv2d(in_channels, 16, kernel_size=1)

        self.branch5x5_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_2 = nn.Conv2d(16, 24, kernel_size=5, padding=2)

        self.branch3x3_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3_2 = nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3_3 = nn.Conv2d(24, 24, kernel_size=3, padding=1)

        self.branch_pool = nn.Conv2d(in_channels, 24, kernel_size=1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)

        branch5x5 = self.branch5x5_1(x)
        branch5x5 = self.branch5x5_2(branch5x5)

        branch3x3 = self.branch3x3_1(x)
        branch3x3 = self.branch3x3_2(branch3x3)
        branch3x3 = self.branch3x3_3(branch3x3)

        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        branch_pool = self.branch_pool(branch_pool)

        outputs = [branch1x1, branch5x5, branch3x3, branch_pool]
        return torch.cat(outputs, dim=1)


class InceptionNet(nn.Module):  # the lecture calls it Net
    def __init__(self):
        super(InceptionNet, self).__init__()  # noqa: UP008
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(88, 20, kernel_size=5)

        self.incep1 = InceptionA(in_channels=10)
        self.incep2 = InceptionA(in_channels=20)

        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(1408, 10)

    def forward(self, x):
        in_size = x.size(0)
        x = F.relu(self.mp(self.conv1(x)))
        x = self.incep1(x)
        x = F.relu(self.mp(self.conv2(x)))
        x = self.incep2(x)
        x = x.view(in_size, -1)
        x = self.fc(x)
        return x


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super(ResidualBlock, self).__init__()  # noqa: UP008
        self.channels = channels
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = self.conv2(y)
        return F.relu(x + y)


class ResidualNet(nn.Module):  # the lecture calls it Net
    def __init__(self):
        super(ResidualNet, self).__init__()  # noqa: UP008
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.mp = nn.MaxPool2d(2)

        self.rblock1 = ResidualBlock(16)
        self.rblock2 = ResidualBlock(32)

        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        in_size = x.size(0)
        x = self.mp(F.relu(self.conv1(x)))
        x = self.rblock1(x)
        x = self.mp(F.relu(self.conv2(x)))
        x = self.rblock2(x)
        x = x.view(in_size, -1)
        x = self.fc(x)
        return x


LECTURE = {"mnist-inception": InceptionNet, "mnist-resnet": ResidualNet}
RECIPES = {"mnist-inception": "seed-mnist-inception", "mnist-resnet": "seed-mnist-resnet"}


def _shapes(name: str, kind: str) -> list[list[int]]:
    rows = layer_rows(create_model(name), get_model_info(name).input_shape)
    return [list(r.output_shape) for r in rows if r.kind == kind]


def test_inception_shapes_follow_the_lecture():
    by_name = {r.name: list(r.output_shape)
               for r in layer_rows(create_model("mnist-inception"), (1, 28, 28))}
    assert by_name["conv1"] == [1, 10, 24, 24]
    assert by_name["relu1"] == [1, 10, 12, 12]
    assert by_name["incep1.cat"] == [1, 88, 12, 12]  # 16 + 24 * 3 channels, size kept
    for branch in ("branch5x5_2", "branch3x3_3", "branch_pool"):
        assert by_name[f"incep1.{branch}"] == [1, 24, 12, 12]
    assert by_name["incep1.branch1x1"] == [1, 16, 12, 12]
    assert by_name["conv2"] == [1, 20, 8, 8]
    assert by_name["relu2"] == [1, 20, 4, 4]
    assert by_name["incep2.cat"] == [1, 88, 4, 4]
    assert by_name["flatten"] == [1, 1408]
    assert by_name["fc"] == [1, 10]


def test_resnet_shapes_follow_the_lecture():
    by_name = {r.name: list(r.output_shape)
               for r in layer_rows(create_model("mnist-resnet"), (1, 28, 28))}
    assert by_name["conv1"] == [1, 16, 24, 24]
    assert by_name["pool1"] == by_name["rblock1.relu2"] == [1, 16, 12, 12]
    assert by_name["conv2"] == [1, 32, 8, 8]
    assert by_name["pool2"] == by_name["rblock2.relu2"] == [1, 32, 4, 4]
    assert _shapes("mnist-resnet", "Flatten") == [[1, 512]]
    assert by_name["fc"] == [1, 10]


def test_summary_command_shows_the_inception_shapes():
    res = CliRunner().invoke(cli, ["summary", "mnist-inception"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    cat = [line for line in lines if line.startswith("Concat")]
    assert len(cat) == 2
    assert "torch.Size([1, 88, 12, 12])" in cat[0] and "layer: incep1.cat" in cat[0]
    assert "torch.Size([1, 88, 4, 4])" in cat[1] and "layer: incep2.cat" in cat[1]
    assert any(line.startswith("Flatten output shape: torch.Size([1, 1408])") for line in lines)
    assert "Total params: 97,298" in res.output


@pytest.mark.parametrize("name", sorted(LECTURE))
def test_same_parameters_and_outputs_as_the_lecture(name):
    torch.manual_seed(0)
    ours, theirs = create_model(name).eval(), LECTURE[name]().eval()
    assert ({k: v.shape for k, v in ours.state_dict().items()}
            == {k: v.shape for k, v in theirs.state_dict().items()})  # same names, same sizes
    assert (sum(p.numel() for p in ours.parameters())
            == sum(p.numel() for p in theirs.parameters()))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_lecture_layer_names():
    for layer in ("conv1", "conv2", "incep1", "incep1.branch1x1", "incep1.branch5x5_1",
                  "incep1.branch5x5_2", "incep1.branch3x3_1", "incep1.branch3x3_2",
                  "incep1.branch3x3_3", "incep1.branch_pool", "incep2.branch_pool", "fc"):
        find_layer("mnist-inception", create_model("mnist-inception"), layer)
    for layer in ("conv1", "conv2", "rblock1.conv1", "rblock1.conv2", "rblock2.conv2", "fc"):
        find_layer("mnist-resnet", create_model("mnist-resnet"), layer)
    for name in LECTURE:  # one module per use: no parameter-free module is called twice
        net = create_model(name)
        calls = [n for n, _ in _calls(net)]
        assert len(calls) == len(set(calls)), name
        assert set(calls) == {n for n, m in net.named_modules() if n and not list(m.children())}


def _calls(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every leaf module call in one forward pass, in order."""
    order: list[tuple[str, nn.Module]] = []
    handles = [m.register_forward_hook(lambda mod, _i, _o, n=n: order.append((n, mod)))
               for n, m in net.named_modules() if n and not list(m.children())]
    with torch.no_grad():
        net(torch.randn(1, 1, 28, 28))
    for h in handles:
        h.remove()
    return order


def test_residual_block_passes_its_input_through_when_its_second_conv_is_zero():
    from cnnlab.models.mnist_advanced import ResidualBlock as Ours

    torch.manual_seed(0)
    block = Ours(16)
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad():
        full = block(x)
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
        torch.testing.assert_close(block(x), F.relu(x))  # only the skip connection is left
        assert not torch.allclose(full, block(x))
        pos = x.clamp(min=0)  # a non-negative input (a ReLU's output, as in the net) unchanged
        torch.testing.assert_close(block(pos), pos)


def test_recipes_are_the_basic_lectures_training():
    for name, recipe in RECIPES.items():
        assert recipe in recipe_names()
        cfg = build_config(recipe)
        assert (cfg.model, cfg.dataset, cfg.batch_size, cfg.epochs) == (name, "mnist", 64, 10)
        assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.schedule) == ("sgd", 0.01, 0.5, "constant")
        assert cfg.normalize and cfg.precision == "fp32"
    res = CliRunner().invoke(cli, ["recipes"])
    assert "seed-mnist-inception" in res.output and "seed-mnist-resnet" in res.output


@pytest.mark.parametrize("name", sorted(LECTURE))
def test_one_epoch_on_digits_and_the_lecture_class_loads_the_run(tmp_path, name):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--recipe", RECIPES[name], "--dataset", "digits",
                                   "--resize", "28", "--epochs", "1", "--lr", "0.05",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["test_acc"]) > 0.3  # chance is 0.1
    run = load_run(out, device="cpu")
    theirs = LECTURE[name]()
    theirs.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    theirs.eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), run.model(x.contiguous(
            memory_format=torch.channels_last) if run.preprocess.channels_last else x),
            rtol=1e-5, atol=1e-5)
