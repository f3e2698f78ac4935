"""CIFAR-10 python batches (never unpickled unsafely) and image-folder trees/zips."""

import os
import pickle
import zipfile

import numpy as np
import pytest
from conftest import write_cifar_batches
from PIL import Image

from cnnlab.data.load import load_split
from cnnlab.data.sources.cifar import read_cifar_batch
from cnnlab.errors import CnnlabError


def test_cifar_batches_load(tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-py", n=7)
    train = load_split("cifar10", "train", tmp_path)
    test = load_split("cifar10", "test", tmp_path)
    assert train.images.shape == (35, 3, 32, 32) and test.images.shape == (7, 3, 32, 32)
    assert train.classes[0] == "airplane"


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(CnnlabError, match="not allowed"):
        read_cifar_batch(p)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_cifar_bad_shape_is_refused(tmp_path):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(CnnlabError, match="data_batch_1.*3072"):
        read_cifar_batch(p)


def _tree(root, size=(8, 8), classes=("cat", "dog"), n=3, fmt="png"):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.{fmt}")
    return root


def test_folder_dir_and_zip_give_the_same(tmp_path):
    root = _tree(tmp_path / "tree")
    zpath = tmp_path / "tree.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(root.rglob("*.png")):
            z.write(f, f"wrapped/{f.relative_to(root)}")
    a = load_split("folder", "train", root)
    b = load_split("folder", "train", zpath)
    assert a.images.shape == (6, 3, 8, 8) and a.classes == ("cat", "dog")
    assert a.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(a.images.numpy(), b.images.numpy())
    png = np.asarray(Image.open(root / "train" / "dog" / "0.png"))
    assert np.array_equal(a.images[3].permute(1, 2, 0).numpy(), png)


def test_folder_mixed_sizes_and_corrupt_images(tmp_path):
    root = _tree(tmp_path / "t")
    Image.new("RGB", (9, 9)).save(root / "train" / "cat" / "big.png")
    with pytest.raises(CnnlabError, match="different sizes"):
        load_split("folder", "train", root, use_cache=False)
    (root / "train" / "cat" / "big.png").write_bytes(b"not an image")
    with pytest.raises(CnnlabError, match="cannot decode image .*big.png"):
        load_split("folder", "train", root, use_cache=False)


def test_folder_errors(tmp_path):
    with pytest.raises(CnnlabError, match="needs --data-dir"):
        load_split("folder", "train")
    with pytest.raises(CnnlabError, match="does not exist"):
        load_split("folder", "train", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnlabError, match="no images found"):
        load_split("folder", "train", tmp_path / "empty")


def test_missing_jpeg_zip_names_a_file_path(tmp_path):
    from cnnlab.data.locate import not_found_error

    msg = str(not_found_error("cifar10-jpeg", tmp_path))
    assert "<root>/cifar10-jpeg/cifar10-jpeg.zip and pass --data-dir" in msg
    assert "<root>/mnist/ and" in str(not_found_error("mnist", tmp_path))
