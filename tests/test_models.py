"""Every registered model: output shape, finite output, gradients, summaries."""

import pytest
import torch
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.errors import CnnlabError
from cnnlab.inspect.summary import format_summary, layer_rows
from cnnlab.models import check_input_shape, create_model, get_model_info, model_names

EXPECTED_PARAMS = {  # counted by hand from the seeds' layer sizes
    "simple-cnn": (3 * 18 * 9 + 18) + (4608 * 64 + 64) + (64 * 10 + 10),
    "mnist-net": (10 * 25 + 10) + (20 * 10 * 25 + 20) + (320 * 10 + 10),
    "mlp": sum(a * b + b for a, b in [(784, 512), (512, 256), (256, 128), (128, 64), (64, 10)]),
    "lenet5": (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84)
    + (84 * 10 + 10),
}
EXPECTED_PARAMS["lenet5-relu"] = EXPECTED_PARAMS["lenet5"]


def _inception_params(c_in):  # 1x1 convs to 16, 16, 16, 24; 5x5 16->24; 3x3 16->24, 24->24
    return (c_in * (16 * 3 + 24) + (16 * 3 + 24) + (16 * 24 * 25 + 24) + (16 * 24 * 9 + 24)
            + (24 * 24 * 9 + 24))


EXPECTED_PARAMS["mnist-inception"] = ((10 * 25 + 10) + _inception_params(10) + (20 * 88 * 25 + 20)
                                      + _inception_params(20) + (1408 * 10 + 10))
EXPECTED_PARAMS["mnist-resnet"] = ((16 * 25 + 16) + 2 * (16 * 16 * 9 + 16) + (32 * 16 * 25 + 32)
                                   + 2 * (32 * 32 * 9 + 32) + (512 * 10 + 10))


def _fastnet_params(w, fc_in):
    convs = 9 * (1 * w[0] + w[0] * w[1] + w[1] * w[2])
    return convs + 2 * sum(w) + fc_in * 10 + 10


EXPECTED_PARAMS["fastnet"] = _fastnet_params((16, 32, 64), 64 * 9)
EXPECTED_PARAMS["fastnet-wide"] = _fastnet_params((24, 48, 96), 96 * 9)
# whitening 2x2 conv 4 -> 16 (frozen, still a parameter), conv 16->32, conv 32->64, BN, fc
EXPECTED_PARAMS["fastnet-white"] = 4 * 16 * 4 + 9 * (16 * 32 + 32 * 64) + 2 * (32 + 64) + 64 * 9 * 10 + 10
# whitening 3x3 conv 1 -> 16 (8 directions, both signs; frozen), conv 16->48, conv 48->96, BN, fc
EXPECTED_PARAMS["fastnet-white-wide"] = (16 * 9 + 9 * (16 * 48 + 48 * 96) + 2 * (48 + 96)
                                         + 96 * 9 * 10 + 10)


def _airbench_params(w):
    def group(a, b):
        return 9 * a * b + 2 * b + 9 * b * b + 2 * b  # two convs, two BN (scale + shift)

    return (24 * 3 * 4 + 24) + group(24, w[0]) + group(w[0], w[1]) + group(w[1], w[2]) + w[2] * 10


EXPECTED_PARAMS["airbench"] = _airbench_params((64, 256, 256))
EXPECTED_PARAMS["airbench-wide"] = _airbench_params((128, 384, 384))
EXPECTED_PARAMS["airbench-small"] = _airbench_params((32, 64, 128))


def _airbench_res_params(w):
    def group(a, b):  # conv a->b, then two convs b->b in the residual branch; 3 BN
        return 9 * a * b + 2 * 9 * b * b + 3 * 2 * b

    return (24 * 3 * 4 + 24) + group(24, w[0]) + group(w[0], w[1]) + group(w[1], w[2]) + w[2] * 10


EXPECTED_PARAMS["airbench-res"] = _airbench_res_params((128, 512, 512))



# d2l's modern CNNs, from the layer sizes in d2l's code (conv: in*out*k*k + out; batch norm:
# a scale and a shift per channel)
def _conv(i, o, k):
    return i * o * k * k + o


def _fc(i, o):
    return i * o + o


def _alexnet_params(c, k1, hidden, flat):
    widths = (1, *c)
    convs = sum(_conv(widths[i], widths[i + 1], k) for i, k in enumerate((k1, 5, 3, 3, 3)))
    return convs + _fc(c[4] * flat, hidden) + _fc(hidden, hidden) + _fc(hidden, 10)


EXPECTED_PARAMS["alexnet"] = _alexnet_params((96, 256, 384, 384, 256), 11, 4096, 5 * 5)
EXPECTED_PARAMS["alexnet-small"] = _alexnet_params((16, 32, 48, 48, 32), 5, 256, 2 * 2)


def _vgg_params(channels, hidden, flat):  # one 3x3 conv per entry of channels
    widths = (1, *channels)
    convs = sum(_conv(widths[i], widths[i + 1], 3) for i in range(len(channels)))
    return convs + _fc(channels[-1] * flat, hidden) + _fc(hidden, hidden) + _fc(hidden, 10)


EXPECTED_PARAMS["vgg11"] = _vgg_params((64, 128, 256, 256, 512, 512, 512, 512), 4096, 7 * 7)
EXPECTED_PARAMS["vgg11-d2l"] = _vgg_params((16, 32, 64, 64, 128, 128, 128, 128), 4096, 7 * 7)
EXPECTED_PARAMS["vgg11-small"] = _vgg_params((8, 16, 32, 32, 64, 64, 64, 64), 256, 1)


def _nin_params(c, k1):
    def block(i, o, k):  # a k x k conv and two 1x1 convs
        return _conv(i, o, k) + 2 * _conv(o, o, 1)

    return block(1, c[0], k1) + block(c[0], c[1], 5) + block(c[1], c[2], 3) + block(c[2], 10, 3)


EXPECTED_PARAMS["nin"] = _nin_params((96, 256, 384), 11)
EXPECTED_PARAMS["nin-small"] = _nin_params((16, 32, 128), 5)

GOOGLENET_INCEPTIONS = [  # d2l's Inception(in_channels, c1, c2, c3, c4) arguments, 3a ... 5b
    (192, 64, (96, 128), (16, 32), 32), (256, 128, (128, 192), (32, 96), 64),
    (480, 192, (96, 208), (16, 48), 64), (512, 160, (112, 224), (24, 64), 64),
    (512, 128, (128, 256), (24, 64), 64), (512, 112, (144, 288), (32, 64), 64),
    (528, 256, (160, 320), (32, 128), 128), (832, 256, (160, 320), (32, 128), 128),
    (832, 384, (192, 384), (48, 128), 128),
]


def _googlenet_params(r, stem):  # widths / r, at least 8; stem: the b1 conv's parameters
    def w(c):
        return max(c // r, 8)

    total, c_in = stem + _conv(w(64), w(64), 1) + _conv(w(64), w(192), 3), w(192)  # b1, b2
    for _, c1, (a2, b2), (a3, b3), c4 in GOOGLENET_INCEPTIONS:
        total += (_conv(c_in, w(c1), 1) + _conv(c_in, w(a2), 1) + _conv(w(a2), w(b2), 3)
                  + _conv(c_in, w(a3), 1) + _conv(w(a3), w(b3), 5) + _conv(c_in, w(c4), 1))
        c_in = w(c1) + w(b2) + w(b3) + w(c4)  # the block's output: the next one's input
    return total + _fc(c_in, 10)


EXPECTED_PARAMS["googlenet"] = _googlenet_params(1, _conv(1, 64, 7))
EXPECTED_PARAMS["googlenet-small"] = _googlenet_params(8, _conv(1, 8, 3))
EXPECTED_PARAMS["lenet-bn"] = (_conv(1, 6, 5) + 2 * 6 + _conv(6, 16, 5) + 2 * 16 + _fc(256, 120)
                               + 2 * 120 + _fc(120, 84) + 2 * 84 + _fc(84, 10))


def _resnet18_params(stem, widths):
    def residual(i, o):  # two 3x3 convs with batch norm, a 1x1 conv skip when i != o
        return _conv(i, o, 3) + _conv(o, o, 3) + 2 * 2 * o + (_conv(i, o, 1) if i != o else 0)

    c, total = widths[0], stem
    for w in widths:
        total += residual(c, w) + residual(w, w)
        c = w
    return total + _fc(c, 10)


EXPECTED_PARAMS["resnet18"] = _resnet18_params(_conv(1, 64, 7) + 2 * 64, (64, 128, 256, 512))
EXPECTED_PARAMS["resnet18-small"] = _resnet18_params(_conv(1, 16, 3) + 2 * 16, (16, 32, 64, 128))


def _densenet_params(stem, c, growth):  # 4 dense blocks of 4 (BN, ReLU, 3x3 conv) units
    total = stem
    for block in range(4):
        for i in range(4):
            total += 2 * (c + i * growth) + _conv(c + i * growth, growth, 3)
        c += 4 * growth
        if block < 3:  # transition: BN, 1x1 conv halving the channels
            total += 2 * c + _conv(c, c // 2, 1)
            c //= 2
    return total + 2 * c + _fc(c, 10)


EXPECTED_PARAMS["densenet"] = _densenet_params(_conv(1, 64, 7) + 2 * 64, 64, 32)
EXPECTED_PARAMS["densenet-small"] = _densenet_params(_conv(1, 24, 3) + 2 * 24, 24, 12)

# 1-D nets at their default input (1 channel): convs without bias, BN scale + shift, fc
EXPECTED_PARAMS["fcn"] = (1 * 128 * 8 + 128 * 256 * 5 + 256 * 128 * 3 + 2 * (128 + 256 + 128)
                          + 128 * 10 + 10)


def _resnet1d_params(c_in, widths=(64, 128, 128)):
    total = 0
    for a, b in zip((c_in, *widths[:-1]), widths, strict=True):
        total += a * b * 8 + b * b * 5 + b * b * 3 + 3 * 2 * b  # k8, k5, k3 convs and their BN
        total += (a * b if a != b else 0) + 2 * b  # shortcut: 1x1 conv where widths change, BN
    return total + widths[-1] * 10 + 10


EXPECTED_PARAMS["resnet1d"] = _resnet1d_params(1)

D2L_LENET = """Conv2d output shape: torch.Size([1, 6, 28, 28])
Sigmoid output shape: torch.Size([1, 6, 28, 28])
AvgPool2d output shape: torch.Size([1, 6, 14, 14])
Conv2d output shape: torch.Size([1, 16, 10, 10])
Sigmoid output shape: torch.Size([1, 16, 10, 10])
AvgPool2d output shape: torch.Size([1, 16, 5, 5])
Flatten output shape: torch.Size([1, 400])
Linear output shape: torch.Size([1, 120])
Sigmoid output shape: torch.Size([1, 120])
Linear output shape: torch.Size([1, 84])
Sigmoid output shape: torch.Size([1, 84])
Linear output shape: torch.Size([1, 10])"""


def test_every_registered_model_has_a_hand_counted_size():
    """A new model gets its parameter count worked out by hand here, from its layer sizes."""
    assert set(model_names()) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", model_names())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    info = get_model_info(name)
    # d2l's full-size nets (heavy: 224x224 or 96x96 input, VGG-11's 129M parameters) run one
    # image, at a quarter of the cost; their batch norms still normalise over the pixels
    n = 1 if info.heavy else 4
    out = model(torch.randn(n, *info.input_shape))
    assert out.shape == (n, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:  # airbench freezes its whitening filters and BN scales
            assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", model_names())
def test_summary_every_model(name):
    res = CliRunner().invoke(cli, ["summary", name])
    assert res.exit_code == 0, res.output
    assert f"Total params: {EXPECTED_PARAMS[name]:,}" in res.output
    assert "output shape: torch.Size([1, 10])" in res.output.splitlines()[-2]
    if get_model_info(name).heavy:  # built once, by the command; its rows: test_modern_models
        return
    model = create_model(name)
    rows = layer_rows(model, get_model_info(name).input_shape)
    assert list(rows[-1].output_shape) == [1, 10]
    assert sum(r.params for r in rows) == EXPECTED_PARAMS[name]


def test_lenet_summary_matches_d2l_exactly():
    rows = layer_rows(create_model("lenet5"), (1, 28, 28))
    lines = [f"{r.kind} output shape: {r.output_shape}" for r in rows]
    assert "\n".join(lines) == D2L_LENET
    text = format_summary(rows, 61706)
    assert text.splitlines()[0].startswith("Conv2d output shape: torch.Size([1, 6, 28, 28])")


def test_named_intermediate_shapes():
    simple = layer_rows(create_model("simple-cnn"), (3, 32, 32))
    assert [list(r.output_shape) for r in simple if r.kind == "Flatten"] == [[1, 4608]]
    net = layer_rows(create_model("mnist-net"), (1, 28, 28))
    assert [list(r.output_shape) for r in net if r.kind == "Flatten"] == [[1, 320]]
    assert [list(r.output_shape) for r in net if r.kind == "Conv2d"] == [[1, 10, 24, 24],
                                                                        [1, 20, 8, 8]]


def test_mismatched_shape_is_explained():
    with pytest.raises(CnnlabError, match="--channels 3 --resize 32"):
        check_input_shape("simple-cnn", (1, 28, 28), "data set 'mnist'")
    with pytest.raises(CnnlabError, match="pass --resize 28 to adapt"):
        check_input_shape("lenet5", (1, 8, 8))
    check_input_shape("lenet5", (1, 28, 28))


@pytest.mark.parametrize("args,needle", [
    (["summary", "resnet9000"], "unknown model"),
    (["summary", "mnist-net", "--input", "3,32,32"], "does not fit"),
    (["summary", "mnist-net", "--input", "1,28"], "--input"),
])
def test_summary_bad_input(args, needle):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0 and needle in res.output


def test_airbench_whitening_init_whitens_patches():
    torch.manual_seed(0)
    net = create_model("airbench")
    mix = torch.tensor([[1.0, 0.5, 0.2], [0.0, 1.0, 0.4], [0.0, 0.0, 1.0]])
    images = torch.einsum("ij,njhw->nihw", mix, torch.randn(64, 3, 32, 32))  # correlated channels
    net.init_from_data(images)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, net[0].weight)  # the 24 whitened channels
    half = out[:, :12].permute(1, 0, 2, 3).reshape(12, -1)
    cov = half @ half.T / half.shape[1]
    torch.testing.assert_close(cov, torch.eye(12), atol=0.02, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])
    net.on_epoch_start(3)
    assert not net[0].bias.requires_grad


def test_models_command_lists_all():
    res = CliRunner().invoke(cli, ["models"])
    assert res.exit_code == 0
    for name in model_names():
        assert name in res.output


def test_residual_group_adds_its_branch():
    """With the branch's last conv zeroed the group is GELU(stem): the skip carries it."""
    from cnnlab.models.airbench import ResidualGroup

    torch.manual_seed(0)
    group = ResidualGroup(3, 8).eval()  # fresh BN statistics: mean 0, var 1, bias 0
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        stem = group.stem(x)
        with_branch = group(x)
        group.body[-2].weight.zero_()
        torch.testing.assert_close(group(x), torch.nn.functional.gelu(stem))
    assert not torch.allclose(with_branch, group(x))


def test_whitening_filters_do_not_depend_on_the_chunking():
    """The covariance is summed over chunks of images to bound memory; any chunk size gives
    the filters of the whole set at once."""
    from cnnlab.models.fastnet import _patches_3x3_padded, whitening_filters

    x = torch.randn(103, 1, 12, 12) * 0.7 + 0.2
    whole = whitening_filters(x, _patches_3x3_padded, 9, 5e-4, chunk=1000)
    for chunk in (1, 10, 50):
        got = whitening_filters(x, _patches_3x3_padded, 9, 5e-4, chunk=chunk)
        # eigenvectors are defined up to sign: compare |w| and w w^T
        torch.testing.assert_close(got.T @ got, whole.T @ whole, rtol=1e-9, atol=1e-9)
    half = whitening_filters(x[:51], _patches_3x3_padded, 9, 5e-4, chunk=1000)
    assert not torch.allclose(half.T @ half, whole.T @ whole, rtol=1e-3, atol=1e-3)


# (model, recipe, index of the whitening conv, index of the first trained conv, directions)
WHITENED = [("fastnet-white", "mnist-fast", 1, 2, 16),
            ("fastnet-white-wide", "fashion-fast", 0, 3, 8)]


@pytest.mark.parametrize("name,recipe,white,trained,directions", WHITENED)
def test_whitening_layer_whitens_the_data_and_never_trains(name, recipe, white, trained,
                                                           directions):
    """A whitened net's first conv, set from the training images, makes its outputs
    (one per whitening direction) uncorrelated with unit variance on those images; training
    leaves it as it was, and trains the rest."""
    from cnnlab.config import build_config
    from cnnlab.data import load_split

    torch.manual_seed(0)
    net = create_model(name)
    x = (load_split("digits", "train").images[:400].float() / 255 - 0.3) / 0.4
    net.init_from_data(x)
    out = x
    for i in range(white + 1):
        out = net[i](out)
    out = out[:, :directions]  # (fastnet-white-wide: the positive copies, before its ReLU)
    out = out.permute(1, 0, 2, 3).reshape(directions, -1).double()
    out = out - out.mean(1, keepdim=True)
    cov = out @ out.T / out.shape[1]
    # eps = 5e-4 in 1/sqrt(eigenvalue + eps) keeps the variance of the faintest direction
    # a little under 1; the covariance is otherwise the identity
    torch.testing.assert_close(cov, torch.diag(cov.diag()), atol=1e-6, rtol=0)
    assert float(cov.diag().min()) > 0.5 and float(cov.diag().max()) < 1.0001
    assert not net[white].weight.requires_grad
    # the kept directions are the strongest ones, strongest first: the unit filter of output
    # k captures the k-th largest variance of the raw patches
    from cnnlab.models import fastnet as fn

    patches = (fn._patches_2x2_of_folded if name == "fastnet-white" else fn._patches_3x3_padded)(x)
    raw = patches.double() - patches.double().mean(0)
    top = torch.linalg.eigvalsh(raw.T @ raw / len(raw)).flip(0)[:directions]
    units = net[white].weight.reshape(len(net[white].weight), -1)[:directions].double()
    units = units / units.norm(dim=1, keepdim=True)
    captured = ((raw @ units.T) ** 2).mean(0)
    torch.testing.assert_close(captured, top, rtol=1e-6, atol=1e-9)
    if name == "fastnet-white-wide":  # both signs, so the ReLU after it loses nothing
        assert torch.equal(net[white].weight[directions:], -net[white].weight[:directions])

    from cnnlab.engine.build import build
    from cnnlab.engine.train import train_one_epoch

    cfg = build_config(recipe, {"dataset": "digits", "resize": 28, "device": "cpu",
                                "limit_train": 512, "batch_size": 64})
    built = build(cfg, log=lambda _m: None, fresh=True)
    before = built.model[white].weight.detach().clone()
    assert before.abs().sum() > 0  # set from the training images by build
    first_conv = built.model[trained].weight.detach().clone()
    train_one_epoch(built.model, built.train, built.optimizer, built.cfg, 0, 0,
                    criterion=built.criterion)
    assert torch.equal(built.model[white].weight, before)
    assert not torch.equal(built.model[trained].weight, first_conv)  # the rest does train
