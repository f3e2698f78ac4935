"""The registry describes each data set once; locating, downloading and the CLI read it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_cifar_batches, write_idx_dataset

import cnnlab
from cnnlab.cli import cli
from cnnlab.data import dataset_names, get_info
from cnnlab.data.download import downloadable
from cnnlab.data.locate import default_download_dir, describe_location, locate
from cnnlab.data.registry import DATASETS


def test_downloadable_sets_are_those_with_remote_files():
    assert downloadable() == [n for n in dataset_names() if DATASETS[n].remote_files]
    assert downloadable() == ["mnist", "fashion-mnist", "cifar10"]


@pytest.mark.parametrize("name", ["digits", "folder", "cifar10-jpeg"])
def test_cli_download_refuses_a_set_without_remote_files(name):
    res = CliRunner().invoke(cli, ["download", name])
    assert res.exit_code != 0
    assert f"data set '{name}' cannot be downloaded" in res.output
    assert "downloadable: mnist, fashion-mnist, cifar10" in res.output


def test_cli_download_unknown_name_lists_the_known_ones():
    res = CliRunner().invoke(cli, ["download", "nope"])
    assert res.exit_code != 0 and "unknown data set 'nope'" in res.output


def test_every_entry_has_a_decoder_and_consistent_fields():
    for name in dataset_names():
        info = get_info(name)
        assert info.name == name
        assert callable(info.decoder), name
        assert info.embedded or info.needs_data_dir or info.subdirs, name
        if info.remote_files:
            assert name in info.subdirs or any(s.startswith(f"{name}/") for s in info.subdirs)


def test_embedded_decoder_gives_the_published_shape():
    info = get_info("digits")
    images, labels, classes = info.decoder("test", None)
    assert images.shape == (info.sizes["test"], *info.shape) and images.dtype.name == "uint8"
    assert labels.dtype.name == "int64" and tuple(classes) == info.classes


def test_describe_location(tmp_path):
    assert describe_location("digits") == "embedded (scikit-learn)"
    assert describe_location("folder") == "--data-dir ROOT"
    assert describe_location("folder", tmp_path) == "--data-dir ROOT"
    assert describe_location("mnist", tmp_path) == "not found"
    found = write_idx_dataset(tmp_path / "MNIST" / "raw", 4, 2)
    assert describe_location("mnist", tmp_path) == str(found)


def test_cli_datasets_shows_found_and_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative path: the table truncates long ones
    write_idx_dataset(tmp_path / "d" / "mnist", 4, 2)
    res = CliRunner().invoke(cli, ["datasets", "--data-dir", "d"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.strip()}
    assert "d/mnist" in lines["mnist"]
    assert "not found" in lines["cifar10"] and "--data-dir ROOT" in lines["folder"]
    assert "embedded (scikit-learn)" in lines["digits"]


def test_a_mistyped_data_dir_is_an_error_not_a_fall_back_to_cnnlab_data(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "real" / "mnist", 4, 2)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "real"))
    assert locate("mnist") == tmp_path / "real" / "mnist"
    (tmp_path / "a-file").write_text("x")
    for bad, what in (("reel", "does not exist"), ("a-file", "is a file, not a folder")):
        res = CliRunner().invoke(cli, ["train", "--dataset", "mnist", "--data-dir",
                                       str(tmp_path / bad), "--out", str(tmp_path / "r")])
        assert res.exit_code == 1 and f"{bad} {what}; pass the folder that holds 'mnist'" \
            in res.output, res.output
        assert not (tmp_path / "r").exists()
    res = CliRunner().invoke(cli, ["datasets", "--data-dir", str(tmp_path / "reel")])
    assert res.exit_code == 1 and "holds the data sets" in res.output


def test_default_download_dir_is_where_locate_looks(tmp_path, monkeypatch):
    """What `cnnlab download NAME` unpacks into its default folder is found afterwards."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # this test's own user data dir
    for name in downloadable():
        assert default_download_dir(name) == tmp_path / "cnnlab" / "data" / name
        assert locate(name) is None
    write_idx_dataset(default_download_dir("mnist"), 4, 2)
    write_idx_dataset(default_download_dir("fashion-mnist"), 4, 2)
    # the CIFAR-10 tarball holds one folder, cifar-10-batches-py, unpacked inside the target
    write_cifar_batches(default_download_dir("cifar10") / "cifar-10-batches-py", n=2)
    assert locate("mnist") == default_download_dir("mnist")
    assert locate("fashion-mnist") == default_download_dir("fashion-mnist")
    assert locate("cifar10") == default_download_dir("cifar10") / "cifar-10-batches-py"


def test_data_layer_imports_neither_config_nor_models():
    """Data modules sit below config and models: importing one must not pull either in."""
    code = """
import importlib, json, pkgutil, sys
import cnnlab.data
names = sorted(m.name for m in pkgutil.walk_packages(cnnlab.data.__path__, "cnnlab.data."))
for n in names:
    importlib.import_module(n)
bad = sorted(m for m in sys.modules if m.split(".")[:2] in (["cnnlab", "config"],
                                                            ["cnnlab", "models"]))
print(json.dumps({"imported": names, "bad": bad}))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(cnnlab.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    result = json.loads(out.stdout)
    assert "cnnlab.data.registry" in result["imported"]
    assert "cnnlab.data.sources.folder" in result["imported"]
    assert result["bad"] == []


def test_unknown_names_suggest_the_near_miss(tmp_path, monkeypatch):
    from cnnlab.errors import CnnlabError, did_you_mean
    from cnnlab.models import get_model_info

    assert did_you_mean("LeNet5", ["lenet5", "alexnet"]) == "did you mean 'lenet5'? "
    assert did_you_mean("resnet19", ["resnet18", "vgg11"]) == "did you mean 'resnet18'? "
    assert did_you_mean("xyz", ["lenet5", "alexnet"]) == ""
    with pytest.raises(CnnlabError, match="unknown data set 'Fashion-MNIST'; did you mean "
                                          "'fashion-mnist'\\? choose one of"):
        get_info("Fashion-MNIST")
    with pytest.raises(CnnlabError, match="did you mean 'lenet5'"):
        get_model_info("LeNet5")
    # cifar10 asked for, only the JPEG copy present: the error says so
    (tmp_path / "cifar10-jpeg").mkdir()
    (tmp_path / "cifar10-jpeg" / "cifar10-jpeg.zip").write_bytes(b"PK")
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    res = CliRunner().invoke(cli, ["train", "--dataset", "cifar10", "--model", "simple-cnn",
                                   "--data-dir", str(tmp_path)])
    assert res.exit_code == 1 and "(cifar10-jpeg is there: --dataset cifar10-jpeg)" in res.output
