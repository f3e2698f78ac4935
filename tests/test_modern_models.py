"""d2l's modern CNNs (``models/modern.py``) against d2l's own printed output, and their recipes.

The shape lists below are d2l's output, not ours: what d2l's ``for layer in net: X =
layer(X); print(layer.__class__.__name__, 'output shape:\\t', X.shape)`` printed in the
notebooks of the d2l==0.17.5 build (d2l-ai/d2l-pytorch-colab, commit 32f0fdc,
chapter_convolutional-modern/{alexnet,vgg,nin,googlenet,resnet}.ipynb). The 1.0.3 build
(commit f854371, ``layer_summary``) prints the same lists for AlexNet, VGG-11, NiN and
GoogLeNet, and ``D2L_RESNET18_96`` for ResNet-18 at 96x96. d2l prints no list for its
batch-normalised LeNet or DenseNet; theirs below are worked out by hand and say so.
"""

import re

import pytest
import torch
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.config import build_config, recipe_names
from cnnlab.errors import CnnlabError
from cnnlab.inspect.summary import model_summary
from cnnlab.models import check_input_shape, create_model, get_model_info, model_names
from cnnlab.models.modern import DenseBlock, Residual, transition_block

D2L_ALEXNET = """Conv2d output shape:\t torch.Size([1, 96, 54, 54])
ReLU output shape:\t torch.Size([1, 96, 54, 54])
MaxPool2d output shape:\t torch.Size([1, 96, 26, 26])
Conv2d output shape:\t torch.Size([1, 256, 26, 26])
ReLU output shape:\t torch.Size([1, 256, 26, 26])
MaxPool2d output shape:\t torch.Size([1, 256, 12, 12])
Conv2d output shape:\t torch.Size([1, 384, 12, 12])
ReLU output shape:\t torch.Size([1, 384, 12, 12])
Conv2d output shape:\t torch.Size([1, 384, 12, 12])
ReLU output shape:\t torch.Size([1, 384, 12, 12])
Conv2d output shape:\t torch.Size([1, 256, 12, 12])
ReLU output shape:\t torch.Size([1, 256, 12, 12])
MaxPool2d output shape:\t torch.Size([1, 256, 5, 5])
Flatten output shape:\t torch.Size([1, 6400])
Linear output shape:\t torch.Size([1, 4096])
ReLU output shape:\t torch.Size([1, 4096])
Dropout output shape:\t torch.Size([1, 4096])
Linear output shape:\t torch.Size([1, 4096])
ReLU output shape:\t torch.Size([1, 4096])
Dropout output shape:\t torch.Size([1, 4096])
Linear output shape:\t torch.Size([1, 10])"""

D2L_VGG11 = """Sequential output shape:\t torch.Size([1, 64, 112, 112])
Sequential output shape:\t torch.Size([1, 128, 56, 56])
Sequential output shape:\t torch.Size([1, 256, 28, 28])
Sequential output shape:\t torch.Size([1, 512, 14, 14])
Sequential output shape:\t torch.Size([1, 512, 7, 7])
Flatten output shape:\t torch.Size([1, 25088])
Linear output shape:\t torch.Size([1, 4096])
ReLU output shape:\t torch.Size([1, 4096])
Dropout output shape:\t torch.Size([1, 4096])
Linear output shape:\t torch.Size([1, 4096])
ReLU output shape:\t torch.Size([1, 4096])
Dropout output shape:\t torch.Size([1, 4096])
Linear output shape:\t torch.Size([1, 10])"""

D2L_NIN = """Sequential output shape:\t torch.Size([1, 96, 54, 54])
MaxPool2d output shape:\t torch.Size([1, 96, 26, 26])
Sequential output shape:\t torch.Size([1, 256, 26, 26])
MaxPool2d output shape:\t torch.Size([1, 256, 12, 12])
Sequential output shape:\t torch.Size([1, 384, 12, 12])
MaxPool2d output shape:\t torch.Size([1, 384, 5, 5])
Dropout output shape:\t torch.Size([1, 384, 5, 5])
Sequential output shape:\t torch.Size([1, 10, 5, 5])
AdaptiveAvgPool2d output shape:\t torch.Size([1, 10, 1, 1])
Flatten output shape:\t torch.Size([1, 10])"""

D2L_GOOGLENET = """Sequential output shape:\t torch.Size([1, 64, 24, 24])
Sequential output shape:\t torch.Size([1, 192, 12, 12])
Sequential output shape:\t torch.Size([1, 480, 6, 6])
Sequential output shape:\t torch.Size([1, 832, 3, 3])
Sequential output shape:\t torch.Size([1, 1024])
Linear output shape:\t torch.Size([1, 10])"""

D2L_RESNET18_224 = """Sequential output shape:\t torch.Size([1, 64, 56, 56])
Sequential output shape:\t torch.Size([1, 64, 56, 56])
Sequential output shape:\t torch.Size([1, 128, 28, 28])
Sequential output shape:\t torch.Size([1, 256, 14, 14])
Sequential output shape:\t torch.Size([1, 512, 7, 7])
AdaptiveAvgPool2d output shape:\t torch.Size([1, 512, 1, 1])
Flatten output shape:\t torch.Size([1, 512])
Linear output shape:\t torch.Size([1, 10])"""

D2L_RESNET18_96 = """Sequential output shape:\t torch.Size([1, 64, 24, 24])
Sequential output shape:\t torch.Size([1, 64, 24, 24])
Sequential output shape:\t torch.Size([1, 128, 12, 12])
Sequential output shape:\t torch.Size([1, 256, 6, 6])
Sequential output shape:\t torch.Size([1, 512, 3, 3])
Sequential output shape:\t torch.Size([1, 10])"""

SHAPE = re.compile(r"^(\w+) output shape: (torch\.Size\(\[[\d, ]*\]\))")


def _d2l_lines(text: str) -> list[str]:
    """d2l's lines with its tab-and-space separator as one space, as cnnlab prints them."""
    return [" ".join(line.split()) for line in text.splitlines()]


def _summary_lines(*args: str) -> list[str]:
    """``Kind output shape: torch.Size([...])`` of each row `cnnlab summary ARGS` prints."""
    res = CliRunner().invoke(cli, ["summary", *args])
    assert res.exit_code == 0, res.output
    rows = [SHAPE.match(line) for line in res.output.splitlines()[1:-1]]
    assert all(rows), res.output
    return [f"{m[1]} output shape: {m[2]}" for m in rows]


@pytest.mark.parametrize("args,d2l", [
    (["alexnet"], D2L_ALEXNET),  # a flat nn.Sequential: its leaves are d2l's loop
    (["vgg11", "--depth", "1"], D2L_VGG11),
    (["nin", "--depth", "1"], D2L_NIN),
    (["googlenet", "--depth", "1"], D2L_GOOGLENET),
    # d2l 0.17.5 prints ResNet-18's list for a 224x224 input (and trains it at 96x96)
    (["resnet18", "--depth", "1", "--input", "1,224,224"], D2L_RESNET18_224),
], ids=["alexnet", "vgg11", "nin", "googlenet", "resnet18-224"])
def test_summary_prints_d2ls_shape_list(args, d2l):
    assert _summary_lines(*args) == _d2l_lines(d2l)


def test_resnet18_at_96_matches_d2l_1_0():
    """d2l 1.0 groups the pooling, flatten and linear layers into one ``last`` Sequential;
    its other lines, and the last shape, are ours at 96x96."""
    ours, d2l = _summary_lines("resnet18", "--depth", "1"), _d2l_lines(D2L_RESNET18_96)
    assert ours[:5] == d2l[:5]
    assert ours[-1].endswith("torch.Size([1, 10])") and d2l[-1].endswith("torch.Size([1, 10])")


def test_lenet_bn_shapes_worked_out_by_hand():
    """Not d2l output: d2l prints no list for this net. Conv 5x5 without padding: 28 -> 24,
    pool -> 12, conv -> 8, pool -> 4; 16 * 4 * 4 = 256 into fc1."""
    kinds = ["Conv2d", "BatchNorm2d", "Sigmoid", "AvgPool2d"]
    shapes = [[1, 6, 24, 24]] * 3 + [[1, 6, 12, 12]] + [[1, 16, 8, 8]] * 3 + [[1, 16, 4, 4]]
    want = [f"{k} output shape: torch.Size({s})" for k, s in zip(kinds * 2, shapes, strict=True)]
    want.append("Flatten output shape: torch.Size([1, 256])")
    for width in (120, 84):
        want += [f"{k} output shape: torch.Size([1, {width}])"
                 for k in ("Linear", "BatchNorm1d", "Sigmoid")]
    want.append("Linear output shape: torch.Size([1, 10])")
    assert _summary_lines("lenet-bn") == want


def test_densenet_shapes_worked_out_by_hand():
    """Not d2l output: d2l prints no list for DenseNet. From d2l's code: the stem leaves
    64 x 24 x 24; each dense block adds 4 x 32 channels, each transition halves channels and
    size: 192 -> 96 (12x12), 224 -> 112 (6x6), 240 -> 120 (3x3), 248."""
    blocks = [("Sequential", [64, 24, 24]), ("DenseBlock", [192, 24, 24]),
              ("Sequential", [96, 12, 12]), ("DenseBlock", [224, 12, 12]),
              ("Sequential", [112, 6, 6]), ("DenseBlock", [240, 6, 6]),
              ("Sequential", [120, 3, 3]), ("DenseBlock", [248, 3, 3]),
              ("BatchNorm2d", [248, 3, 3]), ("ReLU", [248, 3, 3]),
              ("AdaptiveAvgPool2d", [248, 1, 1]), ("Flatten", [248]), ("Linear", [10])]
    want = [f"{k} output shape: torch.Size({[1, *s]})" for k, s in blocks]
    assert _summary_lines("densenet", "--depth", "1") == want


def test_blocks_match_d2ls_printed_shapes():
    """d2l prints these block shapes in its ResNet and DenseNet sections."""
    x = torch.rand(4, 3, 6, 6)
    assert Residual(3, 3)(x).shape == (4, 3, 6, 6)
    assert Residual(3, 6, use_1x1conv=True, strides=2)(x).shape == (4, 6, 3, 3)
    y = DenseBlock(2, 3, 10)(torch.randn(4, 3, 8, 8))
    assert y.shape == (4, 23, 8, 8)
    assert transition_block(23, 10)(y).shape == (4, 10, 4, 4)


def test_module_names_are_d2ls():
    """The nets keep d2l's nn.Sequential indices and attribute names, so a state_dict has
    d2l's keys; the parameter-free modules added for hooks (ReLUs, concatenations) add none."""
    alex = create_model("alexnet").state_dict()
    assert list(alex) == [f"{i}.{p}" for i in (0, 3, 6, 8, 10, 14, 17, 20) for p in ("weight", "bias")]
    with torch.device("meta"):
        vgg = create_model("vgg11").state_dict()
        goog = create_model("googlenet").state_dict()
        res = create_model("resnet18").state_dict()
        dense = create_model("densenet").state_dict()
    convs = [k for k in vgg if k.endswith("weight") and vgg[k].dim() == 4]
    assert convs == ["0.0.weight", "1.0.weight", "2.0.weight", "2.2.weight", "3.0.weight",
                     "3.2.weight", "4.0.weight", "4.2.weight"]
    assert [k for k in vgg if k not in convs and k.endswith("weight")] == ["6.weight", "9.weight",
                                                                          "12.weight"]
    inception = {k.split(".")[2] for k in goog if k.startswith("2.0.")}
    assert inception == {"p1_1", "p2_1", "p2_2", "p3_1", "p3_2", "p4_2"}
    assert "1.0.conv3.weight" not in res and "2.0.conv3.weight" in res  # the 1x1 skip
    assert {"0.1.running_mean", "1.0.bn2.weight", "7.weight"} <= set(res)
    assert {"1.net.0.0.weight", "1.net.3.2.weight", "2.2.weight", "12.weight"} <= set(dense)


@pytest.mark.parametrize("model", ["nin", "nin-small", "googlenet", "googlenet-small",
                                   "densenet", "densenet-small", "resnet18", "resnet18-small",
                                   "airbench", "airbench-small", "airbench-wide", "airbench-res",
                                   "fastnet", "fastnet-wide", "fastnet-white",
                                   "fastnet-white-wide", "fcn", "resnet1d"])
def test_every_summary_row_has_a_short_name_that_layer_options_take(model):
    """No mix of short names and module paths (0.1, 2.0.p1_1, 1.net.0.2, 1.0.conv1, 2.stem.0,
    features.block1.bn): every leaf has an alias, as AlexNet's and VGG's do, and each names
    its own module for --layer."""
    from cnnlab.inspect.summary import layer_rows
    from cnnlab.models import find_layer

    info = get_model_info(model)
    net = create_model(model)
    readable = {m: a for a, m in info.aliases.items()}
    rows = layer_rows(net, info.input_shape)
    assert [r.name for r in rows if r.name not in readable] == []
    for row in rows:
        assert find_layer(model, net, readable[row.name])[0] == row.name
    shown = [line.rsplit("layer: ", 1)[1] for line in model_summary(model).splitlines()[1:-1]]
    assert shown == [readable[r.name] for r in rows]
    assert len(shown) == len(set(shown))


def test_resnet_block_names():
    """ResNet-18's residual blocks are res2a .. res5b (two per stage b2..b5), their layers
    res2a.conv1 .. res2a.relu2; conv3, the strided 1x1 skip, only where d2l has one; an
    unknown layer lists the blocks and one inner name."""
    from cnnlab.models import find_layer

    net = create_model("resnet18-small")
    assert find_layer("resnet18-small", net, "res3a")[0] == "2.0"
    name, skip = find_layer("resnet18-small", net, "res3a.conv3")
    assert name == "2.0.conv3" and skip.kernel_size == (1, 1) and skip.stride == (2, 2)
    assert find_layer("resnet18-small", net, "res5b.relu2")[0] == "4.1.relu2"
    assert "res2a.conv3" not in get_model_info("resnet18").aliases  # b2 keeps x as its skip
    with pytest.raises(CnnlabError, match=r"res2a, res2b, .*res5b, gap, flatten, fc \(or a "
                       r"layer inside a block, e\.g\. res2a\.conv1"):
        find_layer("resnet18-small", net, "res6a")


def test_summary_depth_shows_blocks():
    """--depth 2 on GoogLeNet lists its Inception blocks, channels c1 + c2 + c3 + c4 from
    d2l's arguments: 64 + 128 + 32 + 32 = 256 and 128 + 192 + 96 + 64 = 480 in b3."""
    lines = _summary_lines("googlenet", "--depth", "2")
    assert lines[8:11] == ["Inception output shape: torch.Size([1, 256, 12, 12])",
                           "Inception output shape: torch.Size([1, 480, 12, 12])",
                           "MaxPool2d output shape: torch.Size([1, 480, 6, 6])"]
    text = model_summary("googlenet", depth=1)
    assert "params: 2,809,168  layer: b4" in text  # a block's row counts its parameters
    with pytest.raises(CnnlabError, match="at least 1"):
        model_summary("googlenet", depth=0)
    with pytest.raises(CnnlabError, match="leave out --depth"):
        model_summary("lenet-bn", receptive=True, depth=1)


# --------------------------------------------------------------------------------- recipes
# d2l 0.17.5's settings per chapter: (model, lr, epochs, batch size, resize); all plain SGD
# (no momentum, no weight decay), constant lr, Xavier init, no normalisation
D2L_RECIPES = {
    "d2l-alexnet-fashion": ("alexnet", 0.01, 10, 128, 224),
    "d2l-vgg-fashion": ("vgg11-d2l", 0.05, 10, 128, 224),
    "d2l-nin-fashion": ("nin", 0.1, 10, 128, 224),
    "d2l-googlenet-fashion": ("googlenet", 0.1, 10, 128, 96),
    "d2l-lenet-bn-fashion": ("lenet-bn", 1.0, 10, 256, None),
    "d2l-resnet-fashion": ("resnet18", 0.05, 10, 256, 96),
    "d2l-densenet-fashion": ("densenet", 0.1, 10, 256, 96),
}
SMALL = ["alexnet-small", "vgg11-small", "nin-small", "googlenet-small", "resnet18-small",
         "densenet-small"]


@pytest.mark.parametrize("recipe", sorted(D2L_RECIPES))
def test_d2l_recipes_are_d2ls_settings(recipe):
    model, lr, epochs, batch, resize = D2L_RECIPES[recipe]
    cfg = build_config(recipe)
    assert (cfg.model, cfg.dataset, cfg.lr, cfg.epochs, cfg.batch_size, cfg.resize) == (
        model, "fashion-mnist", lr, epochs, batch, resize)
    assert (cfg.optimizer, cfg.momentum, cfg.weight_decay, cfg.schedule) == ("sgd", 0.0, 0.0,
                                                                             "constant")
    assert (cfg.init, cfg.normalize, cfg.flip, cfg.label_smoothing) == ("xavier", False, False,
                                                                        0.0)
    side = resize or 28
    check_input_shape(model, (1, side, side))


@pytest.mark.parametrize("model", SMALL)
def test_every_small_variant_has_a_recipe_for_fashion_mnist(model):
    recipe = f"fashion-{model}"
    assert recipe in recipe_names()
    cfg = build_config(recipe)
    assert (cfg.model, cfg.dataset) == (model, "fashion-mnist")
    side = cfg.resize or 28
    check_input_shape(model, (1, side, side))


def test_heavy_are_the_full_size_nets_each_with_a_small_variant():
    heavy = {n for n in model_names() if get_model_info(n).heavy}
    assert heavy == {"alexnet", "vgg11", "vgg11-d2l", "nin", "googlenet", "resnet18", "densenet"}
    for name in heavy:
        small = name.removesuffix("-d2l") + "-small"
        assert small in SMALL and not get_model_info(small).heavy
        assert get_model_info(small).input_shape[1] <= 32
