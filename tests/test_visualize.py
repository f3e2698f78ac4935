"""`cnnlab visualize filters|activations`: the pictures hold the run's own numbers."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.engine.train import fit
from cnnlab.errors import CnnlabError
from cnnlab.run import load_run
from cnnlab.viz.inside import activations, capture, pick_examples

PNG = b"\x89PNG\r\n\x1a\n"


def test_activations_are_the_layer_outputs_and_hooks_are_removed(lenet_run):
    run = load_run(lenet_run, device="cpu")
    ex = pick_examples(run, indices=[0], class_names=["3"])
    images, labels = ex.images, ex.labels
    assert ex.true[1] == 3 and labels[0].startswith("#0 ") and labels[1].endswith(" 3") and len(images) == 2
    maps = activations(run, ["conv1", "pool2"], images)
    x = run.preprocess(images).float()
    conv1 = run.model[0](x)  # d2l's LeNet: conv1 is module "0"
    torch.testing.assert_close(maps["conv1"], conv1)
    assert maps["pool2"].shape == (2, 16, 5, 5)
    with capture(run.model, {"c": run.model[0]}) as out:  # hooks removed after success...
        run.model(x)
    torch.testing.assert_close(out["c"][0], conv1)
    assert not any(m._forward_hooks for m in run.model.modules())
    with pytest.raises(RuntimeError), capture(run.model, {"c": run.model[0]}):
        run.model(torch.zeros(1, 3, 28, 28))  # ... and after a failing forward pass
    assert not any(m._forward_hooks for m in run.model.modules())


def test_visualize_commands_write_pictures(lenet_run):
    res = CliRunner().invoke(cli, ["visualize", "filters", str(lenet_run), "--layer", "conv2"])
    assert res.exit_code == 0, res.output
    assert (lenet_run / "filters-conv2.png").read_bytes()[:8] == PNG
    res = CliRunner().invoke(cli, ["visualize", "activations", str(lenet_run), "--layer",
                                   "conv1,conv2", "--class", "0", "--index", "5"])
    assert res.exit_code == 0, res.output
    assert (lenet_run / "activations.png").read_bytes()[:8] == PNG


def test_layer_is_repeatable_like_index(lenet_run, tmp_path, monkeypatch):
    """`--layer conv1 --layer conv2` (as `--index` is given) draws both layers; it used to keep
    only the last one, silently."""
    from cnnlab.viz import inside

    seen = {}
    real = inside.plot_activations

    def spy(run, layers, *args, **kwargs):
        seen["layers"] = list(layers)
        return real(run, layers, *args, **kwargs)

    monkeypatch.setattr(inside, "plot_activations", spy)
    res = CliRunner().invoke(cli, ["visualize", "activations", str(lenet_run), "--layer", "conv1",
                                   "--layer", "pool1,conv2,conv1", "--index", "0",
                                   "--out", str(tmp_path / "a.png")])
    assert res.exit_code == 0, res.output
    assert seen["layers"] == ["conv1", "pool1", "conv2"]
    from cnnlab.explain import network

    real_rf = network.plot_receptive_field

    def spy_rf(net, name, image, path, layers, *args, **kwargs):
        seen["rf"] = list(layers)
        return real_rf(net, name, image, path, layers, *args, **kwargs)

    monkeypatch.setattr(network, "plot_receptive_field", spy_rf)
    res = CliRunner().invoke(cli, ["explain", "receptive-field", str(lenet_run), "--layer", "conv1",
                                   "--layer", "conv2", "--out", str(tmp_path / "rf.png")])
    assert res.exit_code == 0, res.output
    assert seen["rf"] == ["conv1", "conv2"]
    assert Image.open(tmp_path / "rf.png").size[0] > 400


@pytest.mark.parametrize("args,needle", [
    (["filters", "{run}", "--layer", "nope"], "has no layer 'nope'; choose one of: conv1"),
    (["filters", "{run}", "--layer", "fc1"], "is not a convolution (Linear); choose one of: "
                                             "conv1, conv2"),
    (["filters", "{run}", "--out", "{tmp}/f.svg"], "does not end in .png"),
    (["filters", "{run}", "--out", "{tmp}"], "is a directory"),
    (["activations", "{run}", "--layer", "conv1,,conv2", "--index", "0"], "empty name"),
    (["activations", "{run}", "--layer", "conv1", "--index", "-1"], "out of range"),
    (["activations", "{run}", "--layer", "conv1", "--class", "10"], "or a number 0..9"),
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


def test_tile_grid_places_each_tile_with_gaps():
    from cnnlab.viz.inside import _tile_grid

    tiles = torch.arange(5 * 2 * 3, dtype=torch.float32).reshape(5, 2, 3)
    grid = _tile_grid(tiles, cols=2)
    assert grid.shape == (3 * 3 - 1, 2 * 4 - 1)
    for i in range(5):
        r, c = divmod(i, 2)
        assert torch.equal(grid[r * 3:r * 3 + 2, c * 4:c * 4 + 3], tiles[i])
    assert grid[2].isnan().all() and grid[:, 3].isnan().all()  # the gaps
    assert grid[6:, 4:].isnan().all()  # the empty sixth cell


def test_pictures_are_drawn_not_blank(lenet_run):
    from PIL import Image

    from cnnlab.viz.inside import plot_activations, plot_filters

    run = load_run(lenet_run, device="cpu")
    small = Image.open(plot_filters(run, "conv1", lenet_run / "f1.png"))
    big = Image.open(plot_filters(run, "conv2", lenet_run / "f2.png"))
    assert big.size[1] > small.size[1]  # 16 rows of 6 kernels vs 6 kernels
    ex = pick_examples(run, class_names=["1", "7"])
    images, labels = ex.images, ex.labels
    pic = Image.open(plot_activations(run, ["conv1", "conv2"], images, labels,
                                      lenet_run / "a.png")).convert("RGB")
    colours = {tuple(p) for p in np.asarray(pic).reshape(-1, 3).tolist()}
    assert len(colours) > 200  # maps in colour, not an empty canvas


@pytest.mark.parametrize("rows", [1, 6])
def test_each_layer_has_one_colour_bar_as_wide_as_its_column(lenet_run, tmp_path, monkeypatch,
                                                             rows):
    """However many rows, a layer's colour bar lies under its column, as wide as the maps,
    and says which layer it measures (not a sliver beside a middle row)."""
    from cnnlab.viz import inside

    drawn = {}
    real = inside.save_png

    def spy(fig, path, **kw):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        images = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
        bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        drawn["bars"] = [(ax.get_xlabel(), ax.get_window_extent(r)) for ax in bars]
        drawn["columns"] = {}
        for ax in images:
            box = ax.get_window_extent(r)
            drawn["columns"].setdefault(round(box.x0), []).append(box)
        return real(fig, path, **kw)

    monkeypatch.setattr(inside, "save_png", spy)
    run = load_run(lenet_run, device="cpu")
    ex = pick_examples(run, indices=list(range(rows)))
    inside.plot_activations(run, ["conv1", "conv2"], ex.images, ex.labels, tmp_path / "a.png")
    assert [label.split()[0] for label, _ in drawn["bars"]] == ["conv1", "conv2"]
    columns = sorted(drawn["columns"].items())[1:]  # the input column has no bar
    for (label, bar), (_, boxes) in zip(drawn["bars"], columns, strict=True):
        assert len(boxes) == rows
        lowest = min(b.y0 for b in boxes)
        assert bar.y1 <= lowest  # below the last row
        assert bar.width == pytest.approx(boxes[0].width, rel=0.03), label


def test_a_module_used_twice_is_refused_by_name(tmp_path):
    """The tutorial's Net applies one `pooling` and one `relu` module after both convs: their
    "activations" would be ambiguous, so the error says so and names layers used once."""
    cfg = build_config(None, {"model": "mnist-net", "dataset": "digits", "resize": 28,
                              "limit_train": 128, "epochs": 1, "out": str(tmp_path / "r")})
    fit(cfg, log=lambda _m: None)
    run = load_run(tmp_path / "r", device="cpu")
    images = pick_examples(run, indices=[0]).images
    assert activations(run, ["conv2"], images)["conv2"].shape == (1, 20, 8, 8)
    with pytest.raises(CnnlabError, match="'pooling' runs 2 times .* e.g. conv1, conv2"):
        activations(run, ["pooling"], images)


def test_summary_names_the_layers_that_layer_options_take():
    res = CliRunner().invoke(cli, ["summary", "lenet5"])
    lines = res.output.splitlines()
    assert lines[1].startswith("Conv2d output shape") and lines[1].endswith("layer: conv1")
    assert lines[4].endswith("layer: conv2")  # d2l's Sequential index 3, by its alias


def test_every_conv_is_listed_and_filters_default_to_a_trained_one():
    """Every conv by its short name (airbench's group1.conv1 inside group1); the default
    filters are the first trained conv, not fastnet-white's fixed whitening."""
    from types import SimpleNamespace

    from cnnlab.models import create_model
    from cnnlab.viz.inside import _conv, conv_layer_names

    def run(model):
        return SimpleNamespace(config=SimpleNamespace(model=model),
                               model=create_model(model, num_classes=10))

    airbench = run("airbench-small")
    assert conv_layer_names(airbench)[:3] == ["whiten", "group1.conv1", "group1.conv2"]
    assert len(conv_layer_names(airbench)) == 7
    assert conv_layer_names(run("lenet5")) == ["conv1", "conv2"]
    assert _conv(run("fastnet-white"), None)[0] == "conv1"  # not "whiten", the fixed one
    assert _conv(airbench, None)[0] == "group1.conv1"
    assert _conv(run("lenet5"), None)[0] == "conv1"
