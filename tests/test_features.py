"""`cnnlab features` / `features map` / `probe`: the rows are the model's own features."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.data import load_split
from cnnlab.engine.features import Features, extract_split, probe
from cnnlab.engine.train import fit
from cnnlab.errors import CnnlabError
from cnnlab.run import load_run


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("feat") / "run"
    cfg = build_config(None, {"model": "lenet5", "dataset": "digits", "resize": 28,
                              "epochs": 3, "batch_size": 64, "out": str(out)})
    fit(cfg, log=lambda _m: None)
    return out


def test_one_row_per_image_with_its_label_and_the_heads_input(lenet_run, tmp_path):
    run = load_run(lenet_run, device="cpu")
    feats = extract_split(run)
    data = load_split("digits", "test")
    assert feats.features.shape == (len(data), 84)  # LeNet's last linear layer reads 84
    assert np.array_equal(feats.labels, data.labels.numpy())
    # the penultimate row really is what the classifier reads: the head reproduces the logits
    head = run.model[-1]
    logits = head(torch.from_numpy(feats.features[:5]))
    torch.testing.assert_close(logits, run.logits(data.images[:5]), atol=1e-4, rtol=1e-4)
    conv = extract_split(run, layer="conv2", limit=50)
    assert conv.features.shape == (50, 16)  # 16 maps, global-average-pooled
    path = feats.save(tmp_path / "f.npz")
    back = Features.load(path)
    assert np.array_equal(back.features, feats.features) and back.classes == feats.classes
    assert (back.layer, back.dataset, back.split) == ("penultimate", "digits", "test")


def test_pickled_or_foreign_files_are_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", features=np.array([object()], dtype=object))
    with pytest.raises(CnnlabError, match="not a features file"):
        Features.load(tmp_path / "evil.npz")
    with pytest.raises(CnnlabError, match="does not exist"):
        Features.load(tmp_path / "missing.npz")


def test_probe_beats_chance_by_a_wide_margin(lenet_run):
    res = probe(load_run(lenet_run, device="cpu"), "digits", pixels=True)
    assert res.chance < 0.13 and res.accuracy > 0.8  # 10 classes: chance is about 0.10
    assert res.pixel_accuracy is not None and res.pixel_accuracy > 0.8
    assert res.train_examples == 1437 and res.test_examples == 360


@pytest.mark.realdata
def test_probe_on_another_real_data_set(lenet_run, shared_data):
    """Digit features reused on Fashion-MNIST: far above chance."""
    res = probe(load_run(lenet_run, device="cpu"), "fashion-mnist", data_dir=str(shared_data),
                limit_train=2000, limit_test=2000)
    assert res.accuracy > 0.5 and res.chance < 0.15


def test_cli_extract_map_and_bad_input(lenet_run, tmp_path):
    npz = tmp_path / "f.npz"
    r = CliRunner().invoke(cli, ["features", str(lenet_run), "--out", str(npz)])
    assert r.exit_code == 0 and "360 rows of 84 features" in r.output, r.output
    r = CliRunner().invoke(cli, ["features", "map", str(npz)])
    assert r.exit_code == 0, r.output
    pic = np.asarray(Image.open(tmp_path / "f-pca.png").convert("RGB"))
    colours = {tuple(p) for p in pic.reshape(-1, 3)[::7].tolist()}
    assert len(colours) > 30  # ten class colours and their blends, not an empty plot
    r = CliRunner().invoke(cli, ["features", "map", str(npz), "--method", "tsne", "--limit",
                                 "20", "--out", str(tmp_path / "t.png")])  # fewer than 50 rows
    assert r.exit_code == 0, r.output
    pic = np.asarray(Image.open(tmp_path / "t.png").convert("RGB"))
    assert len({tuple(p) for p in pic.reshape(-1, 3)[::3].tolist()}) > 10  # coloured dots
    for args, msg in [(["features", str(lenet_run), "--out", str(tmp_path / "x.csv")], ".npz"),
                      (["features", "map", str(npz), "--method", "tsne", "--out",
                        str(tmp_path / "x.jpg")], "does not end in .png"),
                      (["features", str(lenet_run), "--out", str(tmp_path / "x.npz"),
                        "--layer", "nope"], "no layer 'nope'"),
                      (["features", str(tmp_path), "--out", str(tmp_path / "x.npz")],
                       "not a cnnlab run directory"),
                      (["features", "map", str(tmp_path / "nothing.npz")], "does not exist"),
                      (["probe", str(lenet_run), "--dataset", "nope"], "unknown data set")]:
        r = CliRunner().invoke(cli, args)
        assert r.exit_code != 0 and msg in r.output, (args, r.output)
        assert not (tmp_path / "x.npz").exists()
