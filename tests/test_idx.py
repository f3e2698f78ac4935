"""IDX parsing: good files load, corrupt/truncated/mislabelled files are refused by name."""

import gzip

import numpy as np
import pytest
from conftest import idx_bytes, write_idx_dataset

from cnnlab.data.load import load_split
from cnnlab.data.sources.idx import read_idx_images, read_idx_labels, read_idx_pair
from cnnlab.errors import CnnlabError


def test_reads_gz_and_raw(tmp_path):
    write_idx_dataset(tmp_path / "gz", 10, 5, compress=True)
    write_idx_dataset(tmp_path / "raw", 10, 5, compress=False)
    a = read_idx_images(tmp_path / "gz" / "train-images-idx3-ubyte.gz")
    b = read_idx_images(tmp_path / "raw" / "train-images-idx3-ubyte")
    assert a.shape == (10, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert read_idx_labels(tmp_path / "gz" / "t10k-labels-idx1-ubyte.gz").shape == (5,)


def test_wrong_magic_names_the_file(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28)), 2049)))
    with pytest.raises(CnnlabError, match=r"x\.gz has IDX magic number 2049, expected 2051"):
        read_idx_images(p)


def test_truncated_data_is_refused(tmp_path):
    p = tmp_path / "imgs"
    p.write_bytes(idx_bytes(np.zeros((3, 28, 28)), 2051)[:-100])
    with pytest.raises(CnnlabError, match="imgs should hold .* truncated"):
        read_idx_images(p)


def test_truncated_gzip_is_refused(tmp_path):
    p = tmp_path / "imgs.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28)), 2051))[:-20])
    with pytest.raises(CnnlabError, match="imgs.gz is not a complete gzip file"):
        read_idx_images(p)


def test_label_count_mismatch_is_refused(tmp_path):
    (tmp_path / "i").write_bytes(idx_bytes(np.zeros((3, 28, 28)), 2051))
    (tmp_path / "l").write_bytes(idx_bytes(np.zeros(4), 2049))
    with pytest.raises(CnnlabError, match="3 images but .* 4 labels"):
        read_idx_pair(tmp_path / "i", tmp_path / "l")


def test_label_out_of_range_is_refused(tmp_path):
    (tmp_path / "l").write_bytes(idx_bytes(np.array([1, 2, 11]), 2049))
    with pytest.raises(CnnlabError, match="label 11"):
        read_idx_labels(tmp_path / "l")


def test_unreadable_file(tmp_path):
    with pytest.raises(CnnlabError, match="cannot read"):
        read_idx_images(tmp_path / "missing")


@pytest.mark.parametrize("layout", ["mnist", "MNIST/raw", "."])
def test_load_split_finds_layouts_and_caches(tmp_path, layout):
    root = tmp_path / "root"
    write_idx_dataset(root / layout, 12, 6)
    split = load_split("mnist", "train", root)
    assert split.images.shape == (12, 1, 28, 28) and split.labels.shape == (12,)
    assert split.classes == tuple(str(i) for i in range(10))
    # the second load comes from the cache; it must give identical tensors
    again = load_split("mnist", "train", root)
    assert np.array_equal(split.images.numpy(), again.images.numpy())


def test_recompressed_local_file_is_accepted_by_content(tmp_path):
    """A local .gz whose md5 differs from upstream (re-compressed) loads if its content is valid."""
    d = write_idx_dataset(tmp_path / "mnist", 8, 4)
    p = d / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), compresslevel=9))
    assert len(load_split("mnist", "train", tmp_path)) == 8


def test_lookup_order_data_dir_then_env(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "a" / "mnist", 5, 3)
    write_idx_dataset(tmp_path / "b" / "mnist", 7, 3)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "b"))
    assert len(load_split("mnist", "train")) == 7
    assert len(load_split("mnist", "train", tmp_path / "a")) == 5


def test_missing_dataset_error_says_what_to_do(tmp_path):
    with pytest.raises(CnnlabError, match="not found under .*cnnlab download mnist"):
        load_split("mnist", "train", tmp_path)
