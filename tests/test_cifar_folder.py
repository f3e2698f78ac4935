"""CIFAR-10 python batches (never unpickled unsafely) and image-folder trees/zips."""

import os
import pickle
import zipfile
from pathlib import Path

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
    with pytest.raises(CnnlabError, match=r"1 of 7 files .*big.png \(9x9 pixels where the first "
                                          r"image has 8x8 \(pass --resize SIZE\)\)"):
        load_split("folder", "train", root, use_cache=False)
    resized = load_split("folder", "train", root, use_cache=False, resize=6)  # all 6x6
    assert resized.images.shape == (7, 3, 6, 6)
    (root / "train" / "cat" / "big.png").write_bytes(b"not an image")
    (root / "train" / "dog" / "cut.png").write_bytes(
        (root / "train" / "dog" / "1.png").read_bytes()[:40])
    with pytest.raises(CnnlabError, match="2 of 8 files .*big.png .*cut.png.*--bad-files skip"):
        load_split("folder", "train", root, use_cache=False)
    notes: list[str] = []
    kept = load_split("folder", "train", root, use_cache=False, bad_files="skip",
                      log=notes.append)
    assert len(kept) == 6 and kept.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert any("skipped 2 of 8 train files" in n for n in notes)


def test_every_folder_problem_is_named_in_one_message(tmp_path):
    """Mostly other sizes plus unreadable files: one message names --resize and the
    unreadable files, so one rerun with both options is enough."""
    root = _tree(tmp_path / "t", n=1)
    for c in ("cat", "dog"):
        for i in range(3):
            Image.new("RGB", (9, 9)).save(root / "train" / c / f"big{i}.png")
        (root / "train" / c / "junk.png").write_bytes(b"not an image")
    with pytest.raises(CnnlabError, match=r"different sizes \(6 of 10 .*--resize SIZE.*; 2 "
                                          r"file\(s\) cannot be read either .*junk.png.*"
                                          r"--bad-files skip"):
        load_split("folder", "train", root, use_cache=False)
    assert len(load_split("folder", "train", root, use_cache=False, resize=8,
                          bad_files="skip")) == 8


def test_parallel_decode_with_resize_equals_one_process(tmp_path):
    """Hundreds of JPEGs of mixed sizes: worker processes give exactly what one process
    gives, in file order, resized at decode time."""
    from cnnlab.data.sources.folder import read_image_folder

    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(200):
            size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "train" / c / f"{i:03d}.jpg", quality=80)
    one = read_image_folder(tmp_path, "train", resize=16, workers=1)
    many = read_image_folder(tmp_path, "train", resize=16, workers=2)
    assert one[0].shape == (600, 3, 16, 16) and np.array_equal(one[0], many[0])
    assert np.array_equal(one[1], many[1]) and one[2] == many[2] == ["a", "b", "c"]


def test_folder_errors(tmp_path):
    with pytest.raises(CnnlabError, match="needs --data-dir"):
        load_split("folder", "train")
    with pytest.raises(CnnlabError, match="does not exist"):
        load_split("folder", "train", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnlabError, match="no images found"):
        load_split("folder", "train", tmp_path / "empty")


def test_folders_that_cannot_make_a_classifier_say_why(tmp_path):
    """One class, images with no class folders, or a flat folder of one image per class:
    each named as what it is (they said "num_classes must be at least 2" or "no images found
    under test/<class>/"), on a cache hit too; a file that is no zip is not "a bad zip"."""
    one = _tree(tmp_path / "one", classes=("zero",))
    loose = tmp_path / "loose" / "zero"
    loose.mkdir(parents=True)
    single = tmp_path / "single"
    for c in ("a", "b"):
        (single / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(single / c / "0.png")
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(loose / f"{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    load_split("folder", "test", one)  # the test split alone loads, and may be cached
    for root, says in ((one, r"has one class \('zero'\); a classifier needs at least 2"),
                       (tmp_path / "loose", r"holds one folder, 'zero', with 3 image\(s\) "
                                            "directly in it: that is one class"),
                       (loose, r"holds 3 image\(s\) but no class folders"),
                       (single, "every class in .* has a single image, so none is left"),
                       (tmp_path / "x.png", "is a file, not an image folder or a .zip")):
        for _ in range(2):  # the second time, whatever was cached
            with pytest.raises(CnnlabError, match=says):
                load_split("folder", "train", root)


def test_layouts_people_make(tmp_path):
    """Subfolders of a class folder belong to it (as in torchvision's ImageFolder); an empty
    class folder is left out and said; a tree with train/ but no test/ is refused before any
    decoding, saying how to arrange the files."""
    from cnnlab.data.sources.folder import read_image_folder

    root = _tree(tmp_path / "tree", n=2)
    deep = root / "train" / "cat" / "2024" / "june"
    deep.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(deep / "x.png")
    (root / "train" / "bird").mkdir()
    said = []
    images, labels, classes = read_image_folder(root, "train", log=said.append, workers=1)
    assert classes == ["cat", "dog"] and len(labels) == 5 and list(labels).count(0) == 3
    assert any("left out class folder(s) with no images in train/: bird" in m for m in said)
    lonely = tmp_path / "lonely"
    for c in ("cat", "dog"):
        (lonely / "train" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(lonely / "train" / c / "a.png")
    with pytest.raises(CnnlabError, match="has a train split but no images under 'test/<class>/'"):
        load_split("folder", "train", lonely)


def test_a_flat_folder_is_split_the_same_way_every_time(tmp_path):
    """ROOT/<class>/*.png: --test-fraction of each class (at least one image) is the test
    split, chosen by name hash: the splits are disjoint, cover every file, and do not change
    with the listing order or between runs; another fraction is another cache entry."""
    from cnnlab.data.sources.folder import held_out, read_image_folder

    flat = tmp_path / "flat"
    counts = {"cat": 10, "dog": 7, "owl": 2}
    for c, n in counts.items():
        (flat / c).mkdir(parents=True)
        for i in range(n):
            value = 40 * list(counts).index(c) + i
            Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(flat / c / f"{i}.png")
    said = []
    train = load_split("folder", "train", flat, log=said.append, use_cache=False)
    test = load_split("folder", "test", flat, use_cache=False)
    assert train.classes == test.classes == ("cat", "dog", "owl")
    assert test.labels.bincount().tolist() == [2, 1, 1]  # round(10 * 0.2), round(1.4), at least 1
    assert len(train) + len(test) == sum(counts.values())
    seen = {int(x) for x in train.images[:, 0, 0, 0]} | {int(x) for x in test.images[:, 0, 0, 0]}
    assert len(seen) == sum(counts.values())  # disjoint and complete
    assert any("20% of each class is the test split" in m for m in said)
    entries = [(c, Path(f"{c}/{i}.png")) for c, n in counts.items() for i in range(n)]
    assert held_out(entries, 0.2) == held_out(entries[::-1], 0.2)  # order does not matter
    half = load_split("folder", "test", flat, test_fraction=0.5)
    cached = load_split("folder", "test", flat)
    assert len(half) == 5 + 4 + 1 and len(cached) == len(test)
    _, labels, _ = read_image_folder(flat, "test", workers=1, test_fraction=0.5)
    assert len(labels) == len(half)


def test_missing_jpeg_zip_names_a_file_path(tmp_path):
    from cnnlab.data.locate import not_found_error

    msg = str(not_found_error("cifar10-jpeg", tmp_path))
    assert "<root>/cifar10-jpeg/cifar10-jpeg.zip and pass --data-dir" in msg
    assert "<root>/mnist/ and" in str(not_found_error("mnist", tmp_path))


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_an_interrupted_decode_leaves_no_cache(tmp_path, how):
    """Ctrl-C while worker processes decode a folder: one line (no worker's traceback), no
    cache file, no temporary file, no run directory, no worker left behind. Killed with
    SIGKILL, the parent can clean nothing up, but its workers still end at once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    rng = np.random.default_rng(1)
    for split, n in (("train", 4000), ("test", 20)):
        for c in ("a", "b"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            for i in range(n // 2):
                arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / "tree" / split / c / f"{i}.jpg")
    cache = tmp_path / "cache"
    env = {**os.environ, "CNNLAB_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "--dataset", "folder",
                             "--data-dir", str(tmp_path / "tree"), "--model", "simple-cnn",
                             "--resize", "32", "--out", str(tmp_path / "run")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not psutil.Process(proc.pid).children(recursive=True):  # the decode workers
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.01)
    workers = psutil.Process(proc.pid).children(recursive=True)
    time.sleep(0.3)
    proc.send_signal(getattr(signal, how))
    out = proc.communicate(timeout=60)[0]
    if how == "SIGINT":
        assert proc.returncode == 130 and "interrupted before the first epoch" in out, out
        assert "Traceback" not in out
        assert not cache.exists() or not any(cache.iterdir())
    assert not (tmp_path / "run").exists()
    psutil.wait_procs(workers, timeout=10)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_one_grey_file_does_not_make_a_colour_folder_grey(tmp_path):
    root = _tree(tmp_path / "t")
    Image.new("L", (8, 8), 77).save(root / "train" / "cat" / "0.png")  # first file, grey
    colour = load_split("folder", "train", root, use_cache=False)
    assert colour.images.shape[1] == 3
    assert (colour.images[0] == 77).all()  # the grey one, as RGB
    grey_root = _tree(tmp_path / "g")
    for f in grey_root.rglob("*.png"):
        Image.open(f).convert("L").save(f)
    assert load_split("folder", "train", grey_root, use_cache=False).images.shape[1] == 1


def test_eval_of_a_resized_folder_run_decodes_as_training_did(tmp_path, monkeypatch):
    """Mixed sizes, one unreadable file, --resize and --bad-files skip: eval of
    the run works without repeating those options."""
    from click.testing import CliRunner

    from cnnlab.cli import cli

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = _tree(tmp_path / "t", size=(20, 20), n=6)
    Image.new("RGB", (31, 17)).save(root / "test" / "cat" / "odd.png")
    (root / "test" / "dog" / "bad.png").write_bytes(b"no")
    args = ["--dataset", "folder", "--data-dir", str(root), "--model", "simple-cnn",
            "--resize", "32", "--epochs", "1", "--bad-files", "skip", "--out", str(tmp_path / "r")]
    r = CliRunner().invoke(cli, ["train", *args])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "r")])
    assert r.exit_code == 0 and "accuracy" in r.output.lower(), r.output


def test_a_read_only_cache_does_not_stop_training(tmp_path, monkeypatch):
    from cnnlab.config import build_config
    from cnnlab.engine.train import fit

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CNNLAB_CACHE", str(blocker / "cache"))  # cannot be created
    notes: list[str] = []
    cfg = build_config(None, {"model": "lenet5", "dataset": "digits", "resize": 28,
                              "epochs": 1, "limit_train": 128, "out": str(tmp_path / "r")})
    assert fit(cfg, log=notes.append).history
    assert any("could not write the cache (cannot write" in n and "choose another" not in n
               for n in notes)


def test_a_folder_is_decoded_through_a_scratch_file_into_a_mapped_cache(tmp_path, monkeypatch):
    """The decoded split never has to fit in memory: it is decoded into a memory-mapped
    scratch file, the cache is written from it in chunks, and training maps the cache."""
    from cnnlab.data.sources.folder import read_image_folder

    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE", str(cache))
    root = _tree(tmp_path / "t", size=(10, 12), n=5)
    (root / "train" / "dog" / "bad.png").write_bytes(b"broken")
    mapped = load_split("folder", "train", root, mmap=True, bad_files="skip")
    (cache_file,) = cache.glob("*.safetensors")
    assert [p.name for p in cache.iterdir()] == [cache_file.name]  # no scratch file left
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(cache_file) in maps.read_text()
    plain = read_image_folder(root, "train", bad_files="skip")
    assert np.array_equal(mapped.images.numpy(), plain[0])
    assert mapped.labels.tolist() == plain[1].tolist() == [0] * 5 + [1] * 5


def test_photos_turned_by_exif_need_no_resize(tmp_path):
    """Each picture is decoded upright, so the size every image must share is the upright one."""
    from cnnlab.data.sources.folder import read_image_folder

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide, 30 high; shown 30 wide, 40 high
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(
                tmp_path / split / c / "x.jpg", exif=exif)
    images, labels, classes = read_image_folder(tmp_path, "train", workers=1)
    assert images.shape[2:] == (40, 30) and len(labels) == 2


def test_a_changed_folder_leaves_one_cache_file_per_way_of_reading_it(tmp_path, monkeypatch):
    """An image added: the old cache file of that split goes (nothing reads it again); the
    same folder read another way (--resize) keeps its own file."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE", str(cache))
    root = _tree(tmp_path / "tree", n=2)

    def files(split):
        return sorted(p.name for p in cache.glob(f"folder-{split}-*.safetensors"))

    load_split("folder", "train", root)
    load_split("folder", "train", root, resize=4)
    first = files("train")
    assert len(first) == 2
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "cat" / "new.png")
    said = []
    assert len(load_split("folder", "train", root, log=said.append)) == 5
    now = files("train")
    assert len(now) == 2 and len(set(now) & set(first)) == 1  # the resized one stays
    assert any("removed 1 outdated cache file" in m for m in said)


def test_a_flat_folder_splits_alike_zipped_or_wrapped_and_says_what_it_leaves_out(tmp_path):
    """The split hashes the path below the class folder's parent, so the folder, a zip of it
    and the same tree inside a wrapper folder give the same test files; a class with only
    nested images is still a class; a one-image class and an empty folder are said."""
    flat = tmp_path / "wrap" / "shapes"
    for c, n in (("cat", 6), ("dog", 5), ("owl", 1)):
        (flat / c / "2024").mkdir(parents=True)
        for i in range(n):
            where = flat / c / ("2024" if c == "dog" else "")  # dog: only nested images
            Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(where / f"{c}{i}.png")
    (flat / "empty").mkdir()
    zipped = tmp_path / "shapes.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in flat.rglob("*.png"):
            z.write(f, f"shapes/{f.relative_to(flat)}")
    runs = [load_split("folder", "test", root, use_cache=False)
            for root in (flat, zipped, tmp_path / "wrap")]
    for split in runs:
        assert split.classes == ("cat", "dog", "owl")
        assert split.labels.tolist() == runs[0].labels.tolist()
        assert np.array_equal(split.images.numpy(), runs[0].images.numpy())
    assert runs[0].labels.tolist() == [0, 1]  # one cat, one dog; the single owl trains
    notes = []
    load_split("folder", "train", flat, log=notes.append, use_cache=False)
    assert any("single image, kept for training, so not tested: owl" in m for m in notes)
    assert any("left out class folder(s) with no images" in m and "empty" in m for m in notes)


def test_test_fraction_is_said_or_refused_where_it_does_nothing(tmp_path):
    """--test-fraction splits only a flat folder: refused for a data set with its own test
    split, and said for a folder that has train/ and test/."""
    from cnnlab.api import train_config

    with pytest.raises(CnnlabError, match="mnist has its own test split: drop --test-fraction"):
        train_config(dataset="mnist", model="lenet5", test_fraction=0.3)
    assert train_config(dataset="folder", model="lenet5", data_dir=str(tmp_path),
                        test_fraction=0.3).test_fraction == 0.3
    root = _tree(tmp_path / "t")
    for _ in range(2):  # the decode, then the cache: said both times
        said = []
        load_split("folder", "train", root, log=said.append, test_fraction=0.3)
        assert any("own train/ and test/ folders: --test-fraction 0.3 is not used" in m
                   for m in said), said


def test_the_folder_cache_is_kept_unless_the_split_changes(tmp_path, monkeypatch):
    """A split is decoded again only when its own files or the classes change: not for
    another --bad-files, a --test-fraction a train/test tree does not use, or an edit of the
    other split. A split cached with skipped files is refused by --bad-files fail without
    decoding, as its decode would be, and a scratch file of a killed decode is removed."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE", str(cache))
    root = _tree(tmp_path / "tree", n=2)

    def decoded(**options):
        said = []
        load_split("folder", "train", root, log=said.append, **options)
        return any(m.startswith("decoding folder train") for m in said)

    assert decoded()
    assert not decoded(bad_files="skip") and not decoded(test_fraction=0.4)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "test" / "cat" / "9.png")
    assert not decoded()
    (root / "train" / "cat" / "junk.png").write_bytes(b"not an image")
    with pytest.raises(CnnlabError, match="1 of 5 files .*junk.png"):
        decoded()
    assert decoded(bad_files="skip")
    with pytest.raises(CnnlabError, match=r"1 of 5 files .*cat/junk.png \(not an image"):
        decoded()  # from the cache's record, not a decode
    said = []
    assert len(load_split("folder", "train", root, bad_files="skip", log=said.append)) == 4
    assert any("skipped 1 of 5 train files" in m for m in said)
    assert not any(m.startswith("decoding") for m in said)
    flat = tmp_path / "flat"  # a flat folder: each --test-fraction keeps its own cache
    for c in ("cat", "dog"):
        (flat / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), 9 * i, np.uint8)).save(flat / c / f"{i}.png")
    said = []
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "flat-cache"))  # its own files
    for fraction in (0.2, 0.5, 0.2, 0.5):
        load_split("folder", "train", flat, log=said.append, test_fraction=fraction)
    assert sum(m.startswith("decoding folder train") for m in said) == 2, said
    monkeypatch.setenv("CNNLAB_CACHE", str(cache))
    test_said: list[str] = []
    load_split("folder", "test", root, log=test_said.append)
    (root / "train" / "owl").mkdir()  # a new class: the test split's labels index it too
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "owl" / "0.png")
    load_split("folder", "test", root, log=test_said.append)
    assert sum(m.startswith("decoding folder test") for m in test_said) == 2
    leftover = next(cache.glob("folder-train-*.safetensors"))
    from cnnlab.data.cache import _host

    dead = leftover.with_name(f"{leftover.name}.decode.tmp.{_host()}-999999999")
    elsewhere = leftover.with_name(f"{leftover.name}.decode.tmp.otherhost-999999999")
    dead.write_bytes(b"x")
    elsewhere.write_bytes(b"x")  # another machine's decode may still be writing it
    assert decoded(bad_files="skip") and not dead.exists() and elsewhere.exists()


def test_a_test_split_of_another_size_is_named(tmp_path, monkeypatch):
    from cnnlab.config import build_config
    from cnnlab.engine.build import load_train_test

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = _tree(tmp_path / "t", size=(32, 32))
    for f in (root / "test").rglob("*.png"):
        Image.fromarray(np.zeros((10, 12, 3), np.uint8) + 9).save(f)
    cfg = build_config(None, {"model": "simple-cnn", "dataset": "folder", "data_dir": str(root)})
    with pytest.raises(CnnlabError, match="the test split's images are 3x10x12 but the "
                                          "training split's are 3x32x32; pass --resize"):
        load_train_test(cfg)


def test_a_test_loss_that_overflows_is_said(tmp_path, monkeypatch):
    """Solid-colour images: airbench's BatchNorm (eps 1e-12) sees zero variance and its
    test outputs overflow although training stays finite; the run says so."""
    from cnnlab.config import build_config
    from cnnlab.engine.train import fit

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    for c, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / "solid" / c).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (32, 32), colour).save(tmp_path / "solid" / c / f"{i}.png")
    said: list[str] = []
    cfg = build_config(None, {"model": "airbench-small", "dataset": "folder", "epochs": 1,
                              "data_dir": str(tmp_path / "solid"), "out": str(tmp_path / "r")})
    result = fit(cfg, log=said.append)
    assert not result.history[-1].test_loss < 1e4
    assert sum("the model's outputs overflow" in m for m in said) == 1


def test_a_folder_that_does_not_fit_the_model_is_refused_before_its_decode(tmp_path,
                                                                          monkeypatch):
    """From the first image: the size (or --resize) and, for a colour image, the channels;
    one message with every option to add, and nothing decoded or cached."""
    from cnnlab.config import build_config
    from cnnlab.engine.build import load_train_test

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = _tree(tmp_path / "t", size=(16, 16))
    said: list[str] = []
    cfg = build_config(None, {"model": "lenet5", "dataset": "folder", "data_dir": str(root)})
    with pytest.raises(CnnlabError, match="gives 3x16x16; pass --channels 1 --resize 28"):
        load_train_test(cfg, said.append)
    assert not any(m.startswith("decoding") for m in said)
    assert not (tmp_path / "cache").exists()
    cfg = build_config(None, {"model": "lenet5", "dataset": "folder", "data_dir": str(root),
                              "resize": 28, "channels": 1})
    train, _ = load_train_test(cfg, said.append)
    assert train.shape == (1, 28, 28)


def test_a_folder_run_is_titled_by_the_folders_name(tmp_path, monkeypatch):
    """`folder` says nothing in a title: the training table, the pictures, the summary and
    the report name the folder (folder 'letters'); the config keeps `folder`."""
    import html

    from click.testing import CliRunner

    from cnnlab.cli import cli
    from cnnlab.data import dataset_title
    from cnnlab.inspect.summary import run_summary
    from cnnlab.run import load_run
    from cnnlab.viz import attribution, inside, interpretation

    assert dataset_title("folder", tmp_path / "letters.zip") == "folder 'letters'"
    assert dataset_title("folder", f"{tmp_path}/letters/") == "folder 'letters'"
    assert dataset_title("folder") == "folder" and dataset_title("mnist", tmp_path) == "mnist"
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = _tree(tmp_path / "letters", size=(28, 28), classes=("a", "b"), n=4)
    out = tmp_path / "r"
    r = CliRunner().invoke(cli, ["train", "--dataset", "folder", "--data-dir", str(root),
                                 "--model", "mnist-net", "--channels", "1", "--epochs", "1",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.count("mnist-net on folder 'letters'") == 2, r.output  # header and table
    assert load_run(out, device="cpu").config.dataset == "folder"
    titles = []
    for module in (attribution, inside, interpretation):
        def spy(fig, path, real=module.save_png, **kw):
            titles.append(fig._suptitle.get_text() if fig._suptitle else "")
            return real(fig, path, **kw)
        monkeypatch.setattr(module, "save_png", spy)
    for args in (["visualize", "activations", str(out), "--layer", "conv1", "--index", "0",
                  "--index", "1"], ["visualize", "gradcam", str(out), "--index", "0"],
                 ["errors", str(out)]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
    assert len(titles) == 4  # activations, gradcam, the mistakes and the confusion matrix
    named = [t for t in titles if "folder 'letters'" in t]
    assert len(named) == 3, titles  # the mistakes picture names no data set
    assert "folder 'letters' test: accuracy" in r.output
    assert "trained on folder 'letters'" in run_summary(str(out))
    r = CliRunner().invoke(cli, ["report", str(out), "--out", str(tmp_path / "report.html")])
    assert r.exit_code == 0, r.output
    doc = html.unescape((tmp_path / "report.html").read_text())
    assert "<title>r: mnist-net on folder 'letters'" in doc


def test_features_their_map_and_bench_name_the_folder(letters_run, tmp_path, monkeypatch):
    """`features` (its line and the .npz, which keeps the data folder), `features map` (its
    picture's title), `probe`, `bench` and an unknown --class say folder 'letters', as
    training did; a features
    file from before the folder was kept still loads (titled plain folder); the default
    file names stay as they were."""
    from click.testing import CliRunner

    from cnnlab.cli import cli
    from cnnlab.engine.features import Features
    from cnnlab.viz import feature_map

    root = str(letters_run.parent / "letters")
    npz = tmp_path / "f.npz"
    r = CliRunner().invoke(cli, ["features", str(letters_run), "--out", str(npz)])
    assert r.exit_code == 0, r.output
    assert "(penultimate, folder 'letters' test)" in r.output
    feats = Features.load(npz)
    assert feats.dataset == "folder" and feats.dataset_title() == "folder 'letters'"
    titles = []

    def spy(fig, path, real=feature_map.save_png, **kw):
        titles.append(fig.axes[0].get_title())
        return real(fig, path, **kw)

    monkeypatch.setattr(feature_map, "save_png", spy)
    r = CliRunner().invoke(cli, ["features", "map", str(npz)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f-pca.png").is_file()  # the default name, as before
    assert titles[-1].endswith("of 8 folder 'letters' test images"), titles
    # an .npz written before data_dir was saved: meta only
    old = tmp_path / "old.npz"
    np.savez(old, features=feats.features, labels=feats.labels,
             classes=np.array(feats.classes, dtype=str),
             meta=np.array([feats.layer, "folder", "test", feats.run], dtype=str))
    assert Features.load(old).data_dir == "" and Features.load(old).dataset_title() == "folder"
    r = CliRunner().invoke(cli, ["features", "map", str(old)])
    assert r.exit_code == 0, r.output
    assert titles[-1].endswith("of 8 folder test images"), titles
    # another data set's features name no folder; the run's own, given --data-dir, do
    r = CliRunner().invoke(cli, ["features", str(letters_run), "--out", str(npz),
                                 "--data-dir", root, "--split", "train"])
    assert r.exit_code == 0 and "folder 'letters' train)" in r.output, r.output
    r = CliRunner().invoke(cli, ["bench", "mnist-net", "--dataset", "folder", "--data-dir", root,
                                 "--channels", "1", "--batch-size", "4", "--steps", "1",
                                 "--warmup", "0"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("mnist-net on folder 'letters', batch 4"), r.output
    r = CliRunner().invoke(cli, ["visualize", "activations", str(letters_run), "--layer",
                                 "conv1", "--class", "zz"])
    assert r.exit_code != 0 and "no class 'zz' in folder 'letters'; " in r.output, r.output
    r = CliRunner().invoke(cli, ["probe", str(letters_run), "--dataset", "folder", "--data-dir",
                                 root, "--no-pixels"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("linear probe on folder 'letters': 320 features"), r.output
