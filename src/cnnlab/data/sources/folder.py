"""Reading an image-folder tree ``root/<split>/<class>/*.png|jpg`` from a directory or a zip.

The CIFAR-10 JPEG zip in ``../shared/data`` is such a tree, so it is read in place without
unpacking. Images are decoded once with Pillow (the result is cached by the caller); all
images in a split must share one size, since the loader keeps a split as one tensor.
"""

from __future__ import annotations

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from cnnlab.errors import CnnlabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


class _Tree:
    """Uniform listing/reading over a directory or a zip archive."""

    def __init__(self, root: Path):
        self.root = root
        self.zip: zipfile.ZipFile | None = None
        if root.is_file():
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
        if len(tops) == 1 and not ({"train", "test"} & tops):
            self.prefix = next(iter(tops))

    def images(self, split: str) -> list[tuple[str, PurePosixPath]]:
        """(class name, file) pairs under ``split/<class>/``, sorted for a stable order."""
        out = []
        for f in self.files:
            parts = f.parts[1:] if self.prefix else f.parts
            if len(parts) == 3 and parts[0] == split and f.suffix.lower() in IMAGE_SUFFIXES:
                out.append((parts[1], f))
        return sorted(out, key=lambda cf: (cf[0], str(cf[1])))

    def read(self, f: PurePosixPath) -> bytes:
        if self.zip is not None:
            return self.zip.read(str(f))
        return (self.root / f).read_bytes()


def class_names(root: Path, split: str = "train") -> list[str]:
    """Sorted class folder names of one split, without decoding any image."""
    return sorted({c for c, _ in _Tree(root).images(split)})


def _decode_image(blob: bytes, name: str, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # already loaded by read_image_folder

    try:
        with Image.open(io.BytesIO(blob)) as im:
            return np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError) as e:
        raise CnnlabError(f"cannot decode image {name} ({e}); remove or replace that file") from e


def read_image_folder(
    root: Path, split: str, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (N, C, H, W) uint8 images, (N,) labels and class names of one split."""
    from PIL import Image  # imported on use: the registry imports this module at start-up

    tree = _Tree(root)
    entries = tree.images(split)
    if not entries:
        raise CnnlabError(
            f"no images found under '{split}/<class>/' in {root}; "
            "an image folder must look like ROOT/train/<class>/*.png and ROOT/test/<class>/*.png"
        )
    found = sorted({c for c, _ in entries})
    if classes is None:
        classes = found
    unknown = set(found) - set(classes)
    if unknown:
        raise CnnlabError(
            f"split '{split}' of {root} has classes {sorted(unknown)} that the train split lacks"
        )
    index = {c: i for i, c in enumerate(classes)}
    with Image.open(io.BytesIO(tree.read(entries[0][1]))) as first:
        mode = "L" if first.mode in ("L", "1", "I;16", "I") else "RGB"
    blobs = [tree.read(f) for _, f in entries]  # zip reads are not thread-safe: read first
    with ThreadPoolExecutor(max_workers=4) as pool:
        arrays = list(pool.map(_decode_image, blobs, [str(f) for _, f in entries],
                               [mode] * len(blobs)))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise CnnlabError(
            f"images in {root}/{split} have different sizes {sorted(shapes)[:3]}; "
            "resize them to one size first"
        )
    images = np.stack(arrays)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    labels = np.array([index[c] for c, _ in entries], dtype=np.int64)
    return np.ascontiguousarray(images), labels, list(classes)


def decode_split(split: str, location: Path | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return one split of the tree at ``location``; class names are the train split's folders."""
    assert location is not None, "an image folder is read from files"
    # the test split's labels must index the train split's classes
    classes = class_names(location, "train") if split != "train" else None
    return read_image_folder(location, split, classes or None)
