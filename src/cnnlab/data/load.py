"""Loading a split: the registry, the file lookup, the decode cache and the decoder together.

``load_split(name, split)`` returns a :class:`Split`: the whole split as one uint8 tensor
(N, C, H, W) (a time-series data set: one float32 tensor (N, C, L)), int64 labels and class
names. The first call decodes the source files with
the registry entry's decoder and caches the result; later calls read the cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.cache import (
    cache_path,
    read_cached,
    read_skipped,
    remove_stale,
    scratch_path,
    write_cached,
)
from cnnlab.data.locate import locate, not_found_error
from cnnlab.data.registry import DatasetInfo, get_info
from cnnlab.data.sources import folder
from cnnlab.errors import CnnlabError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Split:
    """One split held in memory: images (N, C, H, W) uint8 (or series (N, C, L) float32),
    labels (N,) int64, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def is_series(self) -> bool:
        """1-D series (N, C, L) rather than images (N, C, H, W)."""
        return self.images.dim() == 3


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    log: Callable[[str], None] = lambda _m: None,
    mmap: bool = False,
    resize: int | None = None,
    bad_files: str = "fail",
    test_fraction: float = 0.2,
) -> Split:
    """Load one split of a data set as tensors, decoding and caching on first use.

    ``mmap``: the images are memory-mapped from the cache file instead of read into memory
    (after a first decode, which writes the cache, they are mapped from it too).
    ``resize`` and ``bad_files`` apply to image folders, which are resized as they are
    decoded and may skip unreadable files (other data sets ignore them: they are resized
    after loading, and have no files to skip); ``test_fraction`` is the share of each class
    a flat image folder (``ROOT/<class>/``) holds out as its test split."""
    if split not in SPLITS:
        raise CnnlabError(f"unknown split '{split}'; choose train or test")
    info = get_info(name)
    location = None
    if not info.embedded:
        location = locate(name, data_dir)
        if location is None:
            raise not_found_error(name, data_dir)
    options = ({"resize": resize, "bad_files": bad_files, "test_fraction": test_fraction}
               if info.image_tree else {})
    key_options, signature = options, None
    if info.image_tree:  # keyed by what the split's pixels depend on, not by every option
        assert location is not None
        tree = folder.Tree(location)  # listed once: the cache key, then any decode
        options["tree"] = tree
        if split == "train":  # on a cache hit too: one class, nothing to test
            folder.check_classes(tree, location, test_fraction)
        # folder decode 2: EXIF orientation applied, transparency on contrasting paper (as_seen)
        key_options = {"resize": resize, "decode": 2}
        signature, flat = folder.split_signature(tree, split, test_fraction)
        if flat:  # each fraction its own place: the caches of two fractions both stay
            key_options["test_fraction"] = test_fraction
        elif split == "train" and test_fraction != folder.TEST_FRACTION:
            log(f"{location} has its own train/ and test/ folders: --test-fraction "
                f"{test_fraction:g} is not used")
    cache = cache_path(info.name, split, location, key_options, signature)  # ucr:gunpoint
    if use_cache and cache.is_file():
        cached = read_cached(cache, mmap)
        if cached is not None:
            if info.image_tree:
                _recall_skipped(cache, split, location, bad_files, len(cached[1]), log)
            return Split(*cached)
        log(f"ignoring unreadable cache file {cache}")
    log(f"decoding {name} {split} from {location or info.source}")
    if info.image_tree and use_cache:
        return _decode_folder_to_cache(info, split, location, options, cache, mmap, log)
    images, labels, classes = info.decoder(split, location, **options, log=log) \
        if info.image_tree else info.decoder(split, location)
    _note_size(info, split, location, len(labels), log)
    result = Split(torch.from_numpy(np.ascontiguousarray(images)),
                   torch.from_numpy(np.ascontiguousarray(labels)), tuple(classes))
    if use_cache:
        try:
            write_cached(cache, result.images, result.labels, result.classes)
        except (OSError, CnnlabError) as e:  # a read-only cache must not stop training
            log(_not_cached(e))
        else:
            _drop_stale(cache, log)
            if mmap:  # the decoded arrays are dropped: the split lives in the file
                mapped = read_cached(cache, mmap=True)
                if mapped is not None:
                    return Split(*mapped)
    return result


def _recall_skipped(cache: Path, split: str, location: Path | None, bad_files: str,
                    kept: int, log: Callable[[str], None]) -> None:
    """A cached folder split that left files out (decoded with ``--bad-files skip``) is
    refused under ``--bad-files fail`` as its decode would be, and said under ``skip``."""
    skipped = read_skipped(cache)
    if not skipped:
        return
    total = kept + len(skipped)
    if bad_files == "fail":
        raise folder.unusable_files(location or cache, split, total, skipped)
    log(f"skipped {len(skipped)} of {total} {split} files that cannot be used: "
        f"{folder.listed(skipped)}")


def _drop_stale(cache: Path, log: Callable[[str], None]) -> None:
    """After a new cache file: the ones the same files made before they changed go."""
    gone = remove_stale(cache)
    if gone:
        log(f"removed {len(gone)} outdated cache file(s) of the files' earlier contents")


def _not_cached(e: Exception) -> str:
    """The note for a cache that could not be written: training goes on without it."""
    why = str(e).removesuffix("; choose another place")
    return (f"could not write the cache ({why}); the split stays in memory this time (set "
            "$CNNLAB_CACHE to a writable folder to cache it)")


def _decode_folder_to_cache(info: DatasetInfo, split: str, location: Path | None,
                            options: dict, cache: Path, mmap: bool,
                            log: Callable[[str], None]) -> Split:
    """An image folder decoded into a scratch file beside the cache (so a split larger than
    memory can be decoded), the cache written from it in chunks, and the split read back
    (memory-mapped when ``mmap``). The scratch file goes in every case, Ctrl-C included."""
    scratch = scratch_path(cache)
    skipped: list[str] = []
    try:
        images, labels, classes = info.decoder(split, location, **options, log=log,
                                               scratch=scratch, skipped=skipped)
        _note_size(info, split, location, len(labels), log)
        try:
            write_cached(cache, images, labels, tuple(classes), skipped)
        except (OSError, CnnlabError) as e:  # a read-only cache must not stop training
            log(_not_cached(e))
            return Split(torch.from_numpy(np.ascontiguousarray(images)),
                         torch.from_numpy(labels), tuple(classes))
        _drop_stale(cache, log)
        del images
    finally:
        scratch.unlink(missing_ok=True)
    cached = read_cached(cache, mmap)
    if cached is None:
        raise CnnlabError(f"the cache file {cache} just written cannot be read back; delete "
                          "it and try again")
    return Split(*cached)


def _note_size(info: DatasetInfo, split: str, location: Path | None, n: int,
               log: Callable[[str], None]) -> None:
    """Say so when a copy of a published data set holds another number of examples."""
    if info.sizes and not info.embedded and n != info.sizes[split]:
        log(f"note: {location} holds {n} {split} examples; the published {info.name} has "
            f"{info.sizes[split]}")
