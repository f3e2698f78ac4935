"""Receptive fields measured on the model equal the hand-computed ones; the shapes diagram
holds each layer's real output shape."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from cnnlab.cli import cli
from cnnlab.explain.network import stages
from cnnlab.inspect.receptive import Field, receptive_fields
from cnnlab.models import create_model


def _by_name(model, shape):
    out = {}
    for lf in receptive_fields(model, shape):
        out.setdefault(lf.name, []).append(lf)
    return out


def test_lenet_fields_by_hand():
    """d2l's LeNet: conv k5 p2 -> rf 5, jump 1, starting 2 px into the padding; avg-pool 2
    -> 6, jump 2; conv k5 -> 6 + 4*2 = 14; pool -> 14 + 1*2 = 16, jump 4."""
    f = _by_name(create_model("lenet5"), (1, 28, 28))
    assert f["0"][0].field == Field((5, 5), (1, 1), (-2, -2))
    assert f["2"][0].field == Field((6, 6), (2, 2), (-2, -2))
    assert f["3"][0].field == Field((14, 14), (2, 2), (-2, -2))
    assert f["5"][0].field == Field((16, 16), (4, 4), (-2, -2))
    assert f["6"][0].field.size is None  # the flatten sees everything
    # pool2's centre unit (2, 2): conv2 units 4-5 -> pool1 4-9 -> conv1 8-19 -> rows 6..21
    assert f["5"][0].field.region(f["5"][0].centre, (28, 28)) == ((6, 22), (6, 22))


def test_mnist_net_fields_by_hand_and_a_module_used_twice():
    f = _by_name(create_model("mnist-net"), (1, 28, 28))
    assert [lf.field for lf in f["pooling"]] == [Field((6, 6), (2, 2), (0, 0)),
                                                 Field((16, 16), (4, 4), (0, 0))]
    assert f["conv2"][0].field == Field((14, 14), (2, 2), (0, 0))


def test_dilation_stride_and_a_branch_are_measured_not_looked_up():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, dilation=2)  # effective kernel 5
            self.b = nn.Conv2d(1, 2, 3, stride=2, padding=1)
            self.c = nn.Conv2d(2, 2, 7, padding=3)  # a wide branch on b's output

        def forward(self, x):  # two branches from the input, joined at the end
            return self.a(x).mean((2, 3)) + self.c(self.b(x)).mean((2, 3))

    f = _by_name(Branchy(), (1, 32, 32))
    assert f["a"][0].field.size == (5, 5)
    assert f["b"][0].field == Field((3, 3), (2, 2), (-1, -1))
    assert f["c"][0].field.size == (3 + 6 * 2, 3 + 6 * 2)  # rf += (k - 1) * jump


def test_simple_cnn_stages_show_the_flatten_of_the_tutorial():
    s = stages(create_model("simple-cnn"), (3, 32, 32))
    flat = next(x for x in s if x.kind == "Flatten")
    assert flat.in_shape == (18, 16, 16) and flat.out_shape == (4608,)
    assert sum(x.params for x in s) == sum(p.numel() for p in create_model("simple-cnn").parameters())


def test_a_view_in_forward_still_shows_a_flatten_stage():
    class ViewNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 2)

        def forward(self, x):
            return self.fc(self.conv(x).view(len(x), -1))

    s = stages(ViewNet(), (1, 8, 8))
    assert [(x.name, x.in_shape, x.out_shape) for x in s] == [
        ("conv", (1, 8, 8), (4, 6, 6)), ("(view)", (4, 6, 6), (144,)), ("fc", (144,), (2,))]


def test_summary_receptive_field_and_explain_commands(tmp_path):
    r = CliRunner().invoke(cli, ["summary", "lenet5", "--receptive-field"])
    assert r.exit_code == 0, r.output
    assert "layer: pool2    rf  16  jump  4  unit (2, 2) sees rows 6..21, cols 6..21" in r.output
    out = tmp_path / "rf.png"
    r = CliRunner().invoke(cli, ["explain", "receptive-field", "mnist-net", "--index", "5",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    pic = np.asarray(Image.open(out).convert("RGB"))
    red = (pic[..., 0] > 200) & (pic[..., 1] < 80) & (pic[..., 2] < 100)  # conv1's square
    assert red.sum() > 100
    r = CliRunner().invoke(cli, ["explain", "shapes", "simple-cnn", "--out", str(tmp_path / "s.png")])
    assert r.exit_code == 0 and Image.open(tmp_path / "s.png").size[1] > 400
    # the input's square (the map's side to scale) is square on the page, not a rectangle
    pic = np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).astype(int)
    blue = abs(pic - np.array([0x9e, 0xc5, 0xfe])).sum(2) < 30
    lines = np.nonzero(blue.any(1))[0]
    first = lines[: int(np.argmax(np.diff(lines) > 1))]  # the rows of the first square
    cols = np.nonzero(blue[first].any(0))[0]
    height, width = len(first), cols.max() - cols.min() + 1
    assert height > 30 and abs(width - height) <= 2, (width, height)


@pytest.mark.parametrize("args,msg", [
    (["receptive-field", "nonet"], "unknown model"),
    (["receptive-field", "lenet5", "--layer", "conv9"], "no layer with feature maps called 'conv9'"),
    (["receptive-field", "lenet5", "--layer", "conv2,fc1"], "'fc1' (it comes after the flatten)"),
    (["receptive-field", "lenet5", "--index", "999"], "out of range"),
    (["receptive-field", "lenet5", "--out", "x.jpg"], "must end in .png"),
    (["shapes", "lenet5", "--input", "1,8,8"], "does not fit"),
    (["shapes", "nonet"], "unknown model"),
])
def test_bad_input_is_one_line(args, msg, tmp_path):
    r = CliRunner().invoke(cli, ["explain", *args])
    assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_receptive_field_of_a_block_is_its_last_layers(monkeypatch):
    """`--layer res3a` (a residual block, not a leaf) draws the field of the block's output:
    the same square as its last call, labelled as a block."""
    from cnnlab.explain.network import plot_receptive_field
    from cnnlab.models import create_model, get_model_info

    net = create_model("resnet18-small")
    aliases = {m: a for a, m in get_model_info("resnet18-small").aliases.items()}
    raw = {a: m for m, a in aliases.items()}["res3a"]
    last = [lf for lf in receptive_fields(net, (1, 28, 28)) if lf.name.startswith(raw + ".")][-1]
    seen = {}

    def spy(fig, path, **_kw):
        seen["text"] = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
        return path

    monkeypatch.setattr("cnnlab.explain.network.save_png", spy)
    plot_receptive_field(net, "resnet18-small", torch.zeros(1, 28, 28), "x.png",
                         ["res2a", "res3a"], aliases, "t")
    size = last.field.size[0]
    assert f"res3a: block (ends in {last.kind})" in seen["text"]
    assert f"field {size}x{size}" in seen["text"]
