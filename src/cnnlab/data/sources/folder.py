"""Reading an image-folder tree ``root/<split>/<class>/*.png|jpg`` from a directory or a zip.

The CIFAR-10 JPEG zip in ``../shared/data`` is such a tree, so it is read in place without
unpacking. Images are decoded once with Pillow (the result is cached by the caller); all
images in a split must share one size, since the loader keeps a split as one tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import os
import sys
import time
import types
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from cnnlab.errors import CnnlabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


TEST_FRACTION = 0.2  # of each class, held out as the test split of a flat folder


def held_out(entries: list[tuple[str, PurePosixPath]], fraction: float) -> set[PurePosixPath]:
    """The files of a flat folder that form its test split: in each class, the
    ``round(n * fraction)`` files (at least 1 and at most n - 1, for a class of 2 or more)
    whose names hash lowest. The same files every time, whatever the order of listing, as
    with Keras' ``validation_split`` and fastai's ``valid_pct`` but with no seed to keep."""
    by_class: dict[str, list[PurePosixPath]] = {}
    for c, f in entries:
        by_class.setdefault(c, []).append(f)
    test: set[PurePosixPath] = set()
    for files in by_class.values():
        n = len(files)
        k = min(max(round(n * fraction), 1), n - 1) if n >= 2 else 0
        ranked = sorted(files, key=lambda f: hashlib.md5(str(f).encode()).hexdigest())
        test.update(ranked[:k])
    return test


class Tree:
    """Uniform listing/reading over a directory or a zip archive."""

    def __init__(self, root: Path):
        self.root = root
        self.zip: zipfile.ZipFile | None = None
        if root.is_file():
            if root.suffix.lower() != ".zip" and not zipfile.is_zipfile(root):
                raise CnnlabError(f"{root} is a file, not an image folder or a .zip of one; "
                                  "pass --data-dir FOLDER (ROOT/<class>/*.png)")
            try:
                self.zip = zipfile.ZipFile(root)
            except zipfile.BadZipFile as e:
                raise CnnlabError(f"{root} is not a readable zip file ({e})") from e
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
            self.files = [PurePosixPath(n) for n in names]
        elif root.is_dir():
            self.files = [PurePosixPath(p.relative_to(root).as_posix())
                          for p in root.rglob("*") if p.is_file()]
        else:
            raise CnnlabError(f"image folder {root} does not exist; pass --data-dir PATH")
        # A zip may wrap the tree in one top folder (cifar10-jpeg/train/...): strip it.
        tops = {f.parts[0] for f in self.files if len(f.parts) > 1}
        self.prefix = ""
        self._splits: dict[float, tuple[list[tuple[str, PurePosixPath]], set[PurePosixPath]]] = {}
        if len(tops) == 1 and not ({"train", "test"} & tops):
            self.prefix = next(iter(tops))

    def _parts(self, f: PurePosixPath) -> tuple[str, ...]:
        return f.parts[1:] if self.prefix else f.parts

    @cached_property
    def flat(self) -> bool:
        """``ROOT/<class>/*.png`` with no train/ and test/ folders: the splits are made here."""
        tops = {self._parts(f)[0] for f in self.files if len(self._parts(f)) >= 2}
        return not ({"train", "test"} & tops) and bool(self.flat_classes())

    def images(self, split: str, test_fraction: float = TEST_FRACTION
               ) -> list[tuple[str, PurePosixPath]]:
        """(class name, file) pairs under ``split/<class>/`` at any depth (subfolders of a
        class folder belong to it, as in torchvision's ImageFolder), sorted for a stable
        order. A flat tree's split is made: ``test_fraction`` of each class is the test
        split (:func:`held_out`)."""
        if self.flat:
            every, test = self._flat_split(test_fraction)
            out = [cf for cf in every if (cf[1] in test) == (split == "test")]
        else:
            out = [(parts[1], f) for f in self.files if len(parts := self._parts(f)) >= 3
                   and parts[0] == split and f.suffix.lower() in IMAGE_SUFFIXES]
        return sorted(out, key=lambda cf: (cf[0], str(cf[1])))

    def _flat_split(self, test_fraction: float
                    ) -> tuple[list[tuple[str, PurePosixPath]], set[PurePosixPath]]:
        """Every (class, file) of a flat tree, and the files of its test split: hashed by
        the path below the class folders' parent, so a zip of the folder, or the folder in
        a wrapper folder, gives the same split. Worked out once per fraction."""
        if test_fraction in self._splits:
            return self._splits[test_fraction]
        every = [(self._parts(f)[0], f) for f in self.files
                 if len(self._parts(f)) >= 2 and f.suffix.lower() in IMAGE_SUFFIXES]
        names = {f: PurePosixPath(*self._parts(f)) for _, f in every}
        test_names = held_out([(c, names[f]) for c, f in every], test_fraction)
        self._splits[test_fraction] = every, {f for _, f in every if names[f] in test_names}
        return self._splits[test_fraction]

    def class_folders(self, split: str) -> set[str]:
        """Every folder directly under ``split/`` (of a flat tree: under the root; a
        directory root; in a zip, those holding files), images in it or not."""
        flat = self.flat
        if self.zip is None:
            base = self.root / self.prefix / ("" if flat else split)
            return {d.name for d in base.iterdir() if d.is_dir()} if base.is_dir() else set()
        depth = 2 if flat else 3
        return {parts[0 if flat else 1] for f in self.files
                if len(parts := self._parts(f)) >= depth and (flat or parts[0] == split)}

    def flat_classes(self) -> list[str]:
        """The folders under the root holding images at any depth (``ROOT/<class>/x.png``,
        ``ROOT/<class>/2024/x.png``): the classes of a tree without train/ and test/."""
        return sorted({parts[0] for f in self.files if len(parts := self._parts(f)) >= 2
                       and f.suffix.lower() in IMAGE_SUFFIXES})

    def read(self, f: PurePosixPath) -> bytes:
        if self.zip is not None:
            return self.zip.read(str(f))
        return (self.root / f).read_bytes()


def class_names(root: Path | Tree, split: str = "train", test_fraction: float = TEST_FRACTION
                ) -> list[str]:
    """Sorted class folder names of one split, without decoding any image."""
    tree = root if isinstance(root, Tree) else Tree(root)
    return sorted({c for c, _ in tree.images(split, test_fraction)})


BadFiles = Literal["fail", "skip"]
CHUNK = 256  # files per task: big enough to amortise the IPC, small enough to balance


def read_image_folder(
    root: Path, split: str, classes: list[str] | None = None, resize: int | None = None,
    bad_files: BadFiles = "fail", log: Callable[[str], None] = lambda _m: None,
    workers: int | None = None, scratch: Path | None = None,
    test_fraction: float = TEST_FRACTION, tree: Tree | None = None,
    skipped: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (N, C, H, W) uint8 images, (N,) labels and class names of one split.

    A flat tree (``ROOT/<class>/*.png``, no train/ and test/) is split here: ``test_fraction``
    of each class is the test split (:func:`held_out`).

    Files are decoded in worker processes (``workers``, default one per core), resized to
    ``resize`` x ``resize`` at decode time when given (so a folder of large photos never
    exists in memory at full size), with a progress bar on an interactive terminal.
    ``bad_files``: ``fail`` refuses a split with unreadable files (or files of another size
    without ``resize``), naming the first few; ``skip`` leaves them out, says how many, and
    adds them to ``skipped`` when given.
    Ctrl-C stops the workers; nothing is cached from an interrupted decode.

    ``scratch``: decode into this file (memory-mapped) rather than into memory, and return
    a view of it, so a split larger than memory can be decoded; the caller writes the cache
    from the view and removes the file.
    """

    if bad_files not in ("fail", "skip"):
        raise CnnlabError(f"--bad-files must be fail or skip, got '{bad_files}'")
    tree = tree or Tree(root)
    entries = tree.images(split, test_fraction)
    if not entries:
        raise CnnlabError(f"no images found under '{split}/<class>/' in {root}; an image folder "
                          "must look like ROOT/train/<class>/*.png and ROOT/test/<class>/*.png, "
                          "or ROOT/<class>/*.png (then --test-fraction of each class is the "
                          "test split)")
    found = sorted({c for c, _ in entries})
    empty = sorted(tree.class_folders(split) - set(found))
    if empty and classes is None:
        log(f"left out class folder(s) with no images in {split}/: {', '.join(empty)}")
    if classes is None:
        classes = found
    unknown = set(found) - set(classes)
    if unknown:
        raise CnnlabError(
            f"split '{split}' of {root} has classes {sorted(unknown)} that the train split lacks"
        )
    height, width, _ = _peek(tree, entries)
    size = (resize, resize) if resize else (width, height)
    names = [str(f) for _, f in entries]
    start = time.perf_counter()
    good, arrays, bad, grey = _decode_all(str(tree.root), names, size, resize is not None,
                                          workers, f"decoding {split}", scratch)
    seconds = time.perf_counter() - start
    unusable = [f"{names[i]} ({why})" for i, why in bad]
    sized = [u for u in unusable if "pass --resize" in u]
    broken = [u for u in unusable if "pass --resize" not in u]
    # every problem in one message, so that one rerun with the right options is enough
    if sized and resize is None and 2 * len(sized) >= len(names):
        also = (f"; {len(broken)} file(s) cannot be read either ({listed(broken)}): fix or "
                "remove them, or add --bad-files skip" if broken and bad_files == "fail" else "")
        raise CnnlabError(f"the images in {root} ({split}) have different sizes ({len(sized)} "
                          f"of {len(names)} differ from the first, {size[0]}x{size[1]}); pass "
                          f"--resize SIZE to resize them as they are decoded{also}")
    if bad:
        if bad_files == "fail":
            raise unusable_files(root, split, len(names), unusable)
        log(f"skipped {len(bad)} of {len(names)} {split} files that cannot be used: "
            f"{listed(unusable)}")
        if skipped is not None:
            skipped.extend(unusable)
    log(f"decoded {len(good):,} {split} images in {seconds:.1f} s "
        f"({len(names) / max(seconds, 1e-9):,.0f} files/s)")
    if not good:
        raise CnnlabError(f"none of the {len(names)} {split} files in {root} could be used")
    # grey only when every image is: one colour photo makes the split RGB
    images = arrays[..., :1].transpose(0, 3, 1, 2) if grey else arrays.transpose(0, 3, 1, 2)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[entries[i][0]] for i in good], dtype=np.int64)
    if isinstance(arrays, np.memmap):
        return images, labels, list(classes)  # a view of the scratch file: written in chunks
    return np.ascontiguousarray(images), labels, list(classes)


def listed(items: list[str], first: int = 3) -> str:
    """The first few of a list, and how many more: "a; b; c and 12 more"."""
    more = f" and {len(items) - first} more" if len(items) > first else ""
    return "; ".join(items[:first]) + more


def unusable_files(root: Path, split: str, total: int, unusable: list[str]) -> CnnlabError:
    """The refusal of a split with files that cannot be used (``--bad-files fail``), each
    given as "name (why)": also when they were found by an earlier decode that skipped them."""
    fix = ("fix or remove them, pass --resize SIZE for the ones of another size, or pass "
           "--bad-files skip to leave them out" if any("pass --resize" in u for u in unusable)
           else "fix or remove them, or pass --bad-files skip to leave them out")
    return CnnlabError(f"{len(unusable)} of {total} files in {root} ({split}) cannot be "
                       f"used: {listed(unusable)}; {fix}")


def split_signature(tree: Tree, split: str, test_fraction: float = TEST_FRACTION
                    ) -> tuple[list[str], bool]:
    """What one split's decode depends on, for its cache key: its own files (path, size and
    time; in a zip, size and CRC) and the train split's class names, which its labels index.
    Nothing else: ``--bad-files``, a ``--test-fraction`` that a tree with train/ and test/
    does not use, or a change to the other split keep the cache. Also returns whether the
    tree is flat (its splits made with ``test_fraction``)."""
    out = [",".join(class_names(tree, "train", test_fraction))]
    for _, f in tree.images(split, test_fraction):
        if tree.zip is not None:
            info = tree.zip.getinfo(str(f))
            out.append(f"{f}:{info.file_size}:{info.CRC}")
        else:
            st = (tree.root / f).stat()
            out.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
    return out, tree.flat


def first_image(location: Path, test_fraction: float = TEST_FRACTION
                ) -> tuple[int, int, bool] | None:
    """(height, width, in colour) of the train split's first readable image, upright: the
    size the split is decoded at without ``--resize``, known before the (long) decode; in
    colour means the split will be RGB (it is grey only if every image is). None when the
    folder has no readable image (the decode then says why)."""
    try:
        tree = Tree(location)
        return _peek(tree, tree.images("train", test_fraction))
    except (CnnlabError, OSError, ValueError):
        return None


def _peek(tree: Tree, entries: list[tuple[str, PurePosixPath]]) -> tuple[int, int, bool]:
    """(height, width, in colour) of the first readable of ``entries``, as the decode sees
    it (upright by its EXIF orientation): its size is the split's without ``--resize``."""
    from PIL import Image

    from cnnlab.decode_worker import as_seen

    with Image.open(io.BytesIO(tree.read(_first_readable(tree, entries)))) as im:
        rgb = np.asarray(as_seen(im).convert("RGB"))
    colour = bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())
    return rgb.shape[0], rgb.shape[1], colour


def _first_readable(tree: Tree, entries: list[tuple[str, PurePosixPath]]) -> PurePosixPath:
    """The first file Pillow can open: it decides the mode (grey or colour) and the size."""
    from PIL import Image

    for _, f in entries[:100]:
        try:
            with Image.open(io.BytesIO(tree.read(f))):
                return f
        except (OSError, ValueError, SyntaxError, KeyError):
            continue
    raise CnnlabError(f"none of the first 100 images in {tree.root} can be read; is it an "
                      "image folder?")


def _decode_all(root: str, names: list[str], size: tuple[int, int], resize: bool,
                workers: int | None, what: str, scratch: Path | None = None
                ) -> tuple[list[int], np.ndarray, list[tuple[int, str]], bool]:
    """Decode every file, in worker processes when there are many; results in file order,
    in memory or in the memory-mapped ``scratch`` file."""
    from cnnlab.decode_worker import decode_chunk, worker_start

    chunks = [list(range(i, min(i + CHUNK, len(names)))) for i in range(0, len(names), CHUNK)]
    workers = workers or min(os.cpu_count() or 1, 16)
    shape = (len(names), size[1], size[0], 3)
    out = None
    if scratch is not None:
        from cnnlab.fileio import reserve

        try:
            scratch.parent.mkdir(parents=True, exist_ok=True)
            with open(scratch, "wb") as f:  # allocated now: a full disk is no SIGBUS later
                reserve(f.fileno(), int(np.prod(shape)))
            out = np.memmap(scratch, np.uint8, "r+", shape=shape)
        except OSError:  # no room or no permission there: decode in memory
            scratch.unlink(missing_ok=True)
            out = None
    if out is None:
        out = np.empty(shape, np.uint8)
    ok = np.zeros(len(names), bool)
    bad: list[tuple[int, str]] = []
    grey = [True]

    def take(chunk: list[int], result: tuple) -> None:
        good, arrays, failed, all_grey = result
        grey[0] = grey[0] and all_grey
        if good:
            out[[chunk[i] for i in good]] = arrays
            ok[[chunk[i] for i in good]] = True
        bad.extend((chunk[i], why) for i, why in failed)

    with _progress(what, len(names)) as advance:
        if workers == 1 or len(chunks) == 1:
            for chunk in chunks:
                take(chunk, decode_chunk(root, [names[i] for i in chunk], size, resize))
                advance(len(chunk))
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a threaded torch process
            pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker_start,
                                       initargs=(os.getpid(),))
            try:
                with _main_hidden():  # the workers start as the chunks are submitted
                    futures = {pool.submit(decode_chunk, root, [names[i] for i in chunk], size,
                                           resize): chunk for chunk in chunks}
                for future in as_completed(futures):
                    take(futures[future], future.result())
                    advance(len(futures[future]))
            except BrokenProcessPool as e:
                raise CnnlabError(
                    f"a process decoding {root} died ({e}); out of memory? Try a smaller "
                    "--resize") from None
            finally:  # Ctrl-C or an error: drop the queued chunks, stop the workers
                pool.shutdown(wait=True, cancel_futures=True)
    good = np.flatnonzero(ok).tolist()
    if len(good) < len(names):  # close the gaps in place: no second copy of the split
        for j, i in enumerate(good):
            if i != j:
                out[j] = out[i]
        out = out[:len(good)]
    return good, out, sorted(bad), grey[0]


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start worker processes without the main script. A spawned process first runs the
    parent's ``__main__`` again (as ``__mp_main__``): a user's script without an
    ``if __name__ == "__main__":`` guard would then start training in every worker (and
    fail), and any script's imports (torch) cost each worker seconds. The workers need only
    :mod:`cnnlab.decode_worker`, found by its module name, so an empty stand-in is shown
    while they start."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@contextlib.contextmanager
def _progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A transient progress bar (files/s, time left) on an interactive terminal's stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True, markup=False)
    if not console.is_terminal or total < 2 * CHUNK:
        yield lambda _n: None
        return
    bar = Progress(TextColumn(what, markup=False), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}", markup=False), TimeRemainingColumn(),
                   console=console,
                   transient=True)
    start = time.perf_counter()
    with bar:
        task = bar.add_task(what, total=total, rate="")

        def advance(n: int) -> None:
            done = bar.tasks[0].completed + n
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=n, rate=f"{rate:,.0f} files/s")

        yield advance


def check_classes(tree: Tree, location: Path, test_fraction: float) -> None:
    """Before any decode: images with no class folders, a single class, or a flat folder
    with nothing left to test, each said as what it is (not as "no images found")."""
    train = sorted({c for c, _ in tree.images("train", test_fraction)})
    if not train:
        loose = sum(1 for f in tree.files
                    if len(tree._parts(f)) == 1 and f.suffix.lower() in IMAGE_SUFFIXES)
        if loose and tree.prefix:  # ROOT/cats/*.png: one folder, read as a wrapper
            raise CnnlabError(f"{location} holds one folder, '{tree.prefix}', with {loose} "
                              "image(s) directly in it: that is one class, and a classifier "
                              "needs at least 2; add a folder of images for each class "
                              "(ROOT/<class>/*.png)")
        if loose:
            raise CnnlabError(f"{location} holds {loose} image(s) but no class folders; put "
                              "each class's images in a folder of its own: ROOT/<class>/*.png")
        return  # read_image_folder says what a folder must look like
    if len(train) == 1:
        raise CnnlabError(f"{location} has one class ('{train[0]}'); a classifier needs at "
                          "least 2: add a folder of images for each class")
    if tree.flat and not tree.images("test", test_fraction):
        raise CnnlabError(f"every class in {location} has a single image, so none is left for "
                          "the test split; give each class at least 2 images (or make "
                          "train/ and test/ folders)")


def decode_split(split: str, location: Path | None, resize: int | None = None,
                 bad_files: BadFiles = "fail", log: Callable[[str], None] = lambda _m: None,
                 scratch: Path | None = None, test_fraction: float = TEST_FRACTION,
                 skipped: list[str] | None = None, tree: Tree | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return one split of the tree at ``location``; class names are the train split's folders.
    (``skipped``: see :func:`read_image_folder`; ``tree``: the location already listed.)"""
    assert location is not None, "an image folder is read from files"
    if tree is None:  # (load_split lists it itself, and checks the classes on a cache hit too)
        tree = Tree(location)  # listed once for this split: the checks, classes, decode
        if split == "train":
            check_classes(tree, location, test_fraction)
    if split == "train" and tree.flat:
        log(f"{location} has class folders but no train/ and test/: {test_fraction:.0%} of each "
            "class is the test split (the same files every time; --test-fraction)")
        tested = {c for c, _ in tree.images("test", test_fraction)}
        untested = sorted({c for c, _ in tree.images("train", test_fraction)} - tested)
        if untested:
            log(f"class(es) with a single image, kept for training, so not tested: "
                f"{', '.join(untested)}")
    if split == "train" and not tree.flat and tree.images("train") and not tree.images("test"):
        raise CnnlabError(  # before the long decode of train, not after it
            f"{location} has a train split but no images under 'test/<class>/'; move a fifth "
            "of each class's images to test/<class>/, or put the class folders directly in "
            f"{location} (then --test-fraction of each class is the test split)")
    # the test split's labels must index the train split's classes
    classes = class_names(tree, "train", test_fraction) if split != "train" else None
    return read_image_folder(location, split, classes or None, resize, bad_files, log,
                             scratch=scratch, test_fraction=test_fraction, tree=tree,
                             skipped=skipped)
