"""The tutorials' own classes, copied as the tutorials write them, load cnnlab's saved weights
with ``strict=True`` and give the same outputs; layers are named as the tutorials name them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.engine.train import fit
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, find_layer, layer_names, model_names
from cnnlab.run import load_run


# --- copied from the tutorials (PyTorch CNN chapter sections 9.1 and 9.5, SimpleCNN) ------
class Net(torch.nn.Module):  # section 9.5
    def __init__(self):
        super(Net, self).__init__()  # noqa: UP008 - as the tutorial writes it
        self.conv1 = torch.nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = torch.nn.Conv2d(10, 20, kernel_size=5)
        self.pooling = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(320, 10)

    def forward(self, x):
        # Flatten data from (n, 1, 28, 28) to (n, 784)
        batch_size = x.size(0)
        x = F.relu(self.pooling(self.conv1(x)))
        x = F.relu(self.pooling(self.conv2(x)))
        x = x.view(batch_size, -1)  # flatten
        x = self.fc(x)
        return x


class MLPNet(torch.nn.Module):  # section 9.1 (the tutorial calls it Net too)
    def __init__(self):
        super(MLPNet, self).__init__()  # noqa: UP008
        self.l1 = torch.nn.Linear(784, 512)
        self.l2 = torch.nn.Linear(512, 256)
        self.l3 = torch.nn.Linear(256, 128)
        self.l4 = torch.nn.Linear(128, 64)
        self.l5 = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(-1, 784)
        x = F.relu(self.l1(x))
        x = F.relu(self.l2(x))
        x = F.relu(self.l3(x))
        x = F.relu(self.l4(x))
        return self.l5(x)


class SimpleCNN(torch.nn.Module):
    def __init__(self):
        super(SimpleCNN, self).__init__()  # noqa: UP008
        # Input channels = 3, output channels = 18
        self.conv1 = torch.nn.Conv2d(3, 18, kernel_size=3, stride=1, padding=1)
        self.pool = torch.nn.MaxPool2d(kernel_size=2, stride=2, padding=0)
        # 4608 input features, 64 output features (see sizing flow below)
        self.fc1 = torch.nn.Linear(18 * 16 * 16, 64)
        # 64 input features, 10 output features for our 10 defined classes
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.pool(x)
        x = x.view(-1, 18 * 16 * 16)
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        return (x)


def d2l_lenet():  # d2l's LeNet chapter
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))


TUTORIAL = {"mnist-net": (Net, "mnist"), "mlp": (MLPNet, "mnist"),
            "simple-cnn": (SimpleCNN, "cifar"), "lenet5": (d2l_lenet, "mnist")}


@pytest.mark.parametrize("name", sorted(TUTORIAL))
def test_tutorial_class_loads_saved_weights_strictly(tmp_path, name):
    from safetensors.torch import load_file

    cls, kind = TUTORIAL[name]
    over = {"resize": 32, "channels": 3} if kind == "cifar" else {"resize": 28}
    result = fit(build_config(None, {"model": name, "dataset": "digits", "epochs": 1,
                                     "limit_train": 128, "batch_size": 32, "lr": 0.05,
                                     "out": str(tmp_path / "run"), **over}), log=lambda _m: None)
    ours = load_run(result.run_dir, device="cpu")
    theirs = cls()
    theirs.load_state_dict(load_file(str(result.run_dir / "model.safetensors")), strict=True)
    theirs.eval()
    x = torch.randn(6, *ours.preprocess.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours.model(x.contiguous(
            memory_format=torch.channels_last) if ours.preprocess.channels_last else x),
            rtol=1e-5, atol=1e-5)


def test_layer_names_follow_the_tutorials():
    assert {"conv1", "conv2", "pooling", "fc"} <= set(layer_names("mnist-net",
                                                                  create_model("mnist-net")))
    assert {"conv1", "pool", "fc1", "fc2"} <= set(layer_names("simple-cnn",
                                                              create_model("simple-cnn")))
    lenet = create_model("lenet5")
    name, module = find_layer("lenet5", lenet, "conv2")  # d2l's indices keep their aliases
    assert name == "3" and module is lenet[3]
    assert find_layer("lenet5", lenet, "3")[1] is lenet[3]
    with pytest.raises(CnnlabError, match="no layer 'conv9'.*conv1"):
        find_layer("lenet5", lenet, "conv9")
    for model in model_names():  # every alias names a real module
        net = create_model(model)
        for alias in layer_names(model, net):
            find_layer(model, net, alias)


def test_summary_shows_the_tutorial_steps():
    res = CliRunner().invoke(cli, ["summary", "simple-cnn"])
    kinds = [line.split()[0] for line in res.output.splitlines()[1:-1]]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]


def test_model_summary_takes_a_module_of_your_own():
    """As torchinfo's summary: any nn.Module with an input shape; without one, one line."""
    import pytest
    from torch import nn

    from cnnlab import model_summary
    from cnnlab.errors import CnnlabError

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    text = model_summary(net, (1, 8, 8))
    assert text.splitlines()[0].startswith("Sequential: your own module  (input 1x1x8x8)")
    assert "torch.Size([1, 4, 6, 6])" in text and "Total params: 1,490" in text
    with pytest.raises(CnnlabError, match=r"needs input_shape=\(C, H, W\)"):
        model_summary(net)


def test_create_model_names_a_bad_class_count():
    import pytest

    from cnnlab.errors import CnnlabError

    for bad in ("10", 1, 2.5):
        with pytest.raises(CnnlabError, match="num_classes must be a whole number of at least 2"):
            create_model("lenet5", num_classes=bad)
