"""A few runs on the real data sets in ../shared/data (skipped where it is absent)."""

import pytest

from cnnlab.config import build_config
from cnnlab.data.load import load_split
from cnnlab.engine.train import fit

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize("name,first_labels", [("mnist", [5, 0, 4, 1, 9]),
                                               ("fashion-mnist", [9, 0, 0, 3, 0])])
def test_idx_sets_decode_with_known_labels(shared_data, name, first_labels):
    train = load_split(name, "train", shared_data)
    test = load_split(name, "test", shared_data)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels[:5].tolist() == first_labels
    assert train.labels.bincount().min() > 5000
    mean = train.images.float().mean().item() / 255
    assert abs(mean - {"mnist": 0.1307, "fashion-mnist": 0.2860}[name]) < 0.001


@pytest.mark.parametrize("name,other", [("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")])
def test_another_sets_files_are_refused(shared_data, name, other):
    """Same file names, same headers: --data-dir pointed at the other set is caught by md5."""
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match=f"are {other}'s, not {name}'s .*--dataset {other}"):
        load_split(name, "test", shared_data / other, use_cache=False)


def test_cifar_jpeg_zip_test_split(shared_data):
    test = load_split("cifar10-jpeg", "test", shared_data)
    assert test.images.shape == (10000, 3, 32, 32)
    assert test.labels.bincount().tolist() == [1000] * 10
    assert test.classes[:2] == ("airplane", "automobile")


def test_seed_mnist_recipe_short_run(shared_data, tmp_path):
    cfg = build_config("seed-mnist", {"data_dir": str(shared_data), "limit_train": 12800,
                                      "epochs": 1, "out": str(tmp_path / "run")})
    result = fit(cfg, log=lambda _m: None)
    assert result.history[-1].test_acc > 0.85  # 200 steps of the seed's SGD


def test_a_folder_of_the_other_set_is_looked_past(shared_data, monkeypatch):
    """--data-dir at MNIST's files for fashion-mnist: that place is passed over, and the
    search goes on ($CNNLAB_DATA holds the real one); `datasets` says why, never fails."""
    from click.testing import CliRunner

    from cnnlab.cli import cli
    from cnnlab.data.locate import locate

    monkeypatch.setenv("CNNLAB_DATA", str(shared_data))
    assert locate("fashion-mnist", shared_data / "mnist") == shared_data / "fashion-mnist"
    monkeypatch.delenv("CNNLAB_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(shared_data / "nowhere"))
    r = CliRunner().invoke(cli, ["datasets", "--data-dir", str(shared_data / "mnist")])
    assert r.exit_code == 0 and "another data set's files" in r.output
