"""A big image folder: first decode into the cache, then epochs from the memory-mapped cache
against a plain torch.utils.data image-folder pipeline.

    python benchmarks/folder.py [--root /tmp/cnnlab-folder-bench] [--images 50000] [--workers 2]

The script first writes ``--images`` JPEG files (64x64, quality 90, 10 classes of smooth
random blobs, so they compress like photos rather than noise) under ROOT/train/<class>/ (and
a fifth as many, at most 1,000, under ROOT/test/), unless they are already there. Then it times, in one run:

1. the first decode of the training split into cnnlab's cache (worker processes, one per
   core), as images/sec;
2. one epoch from the memory-mapped cache (``--data-memory stream``'s HostLoader: shuffled
   batches of 256 gathered from the map in a background thread, normalised float32);
3. one epoch of a plain ``torch.utils.data`` pipeline over the same files: an image-folder
   ``Dataset`` decoding each file with PIL in ``__getitem__`` (``ToTensor`` + ``Normalize``
   as torchvision would), ``DataLoader(batch_size=256, shuffle=True, num_workers=W)``.

Both epochs deliver the same thing (a shuffled, normalised float batch for the model), with
no model, since the goal is the input pipeline. Prints the times and the ratio (3)/(2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

CLASSES = [f"class{i}" for i in range(10)]


def _write_some(args: tuple[str, int, int, int]) -> None:
    """Write images [start, stop) of one split (run in worker processes)."""
    from PIL import Image

    root, split_train, start, stop = args
    split = "train" if split_train else "test"
    rng = np.random.default_rng(start + (0 if split_train else 10**7))
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(start, stop):
        label = i % 10
        img = np.zeros((64, 64, 3), np.float32) + rng.uniform(0, 80, 3)
        for _ in range(4):  # smooth blobs: a class-dependent hue plus random ones
            cx, cy, r = rng.uniform(8, 56, 2).tolist() + [rng.uniform(6, 20)]
            color = rng.uniform(0, 255, 3) * 0.5 + np.array([25.5 * label, 128, 255 - 25.5 * label]) * 0.5
            mask = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - mask) + color * mask
        path = Path(root) / split / CLASSES[label] / f"{i:06d}.jpg"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def make_folder(root: Path, n_train: int, n_test: int = 1000, workers: int = 2) -> None:
    """Write the folder, or reuse it when it holds ``n_train`` images already. A folder this
    script wrote for another count is written afresh (its old files would be decoded too);
    any other non-empty folder is refused, never deleted."""
    done = root / "DONE"
    if done.is_file() and done.read_text().strip() == str(n_train):
        print(f"using the {n_train:,} images already in {root}")
        return
    if done.is_file():
        print(f"{root} holds another number of images ({done.read_text().strip()}): "
              "writing it afresh")
        for split in ("train", "test"):
            shutil.rmtree(root / split, ignore_errors=True)
        done.unlink()
    elif root.exists() and any(root.iterdir()):
        sys.exit(f"--root {root} holds files this script did not write; give an empty or "
                 "new folder")
    for split in ("train", "test"):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
    done.write_text("partial")  # this script's folder, even if the writing is interrupted
    t0 = time.perf_counter()
    jobs = [(str(root), True, s, min(s + 1000, n_train)) for s in range(0, n_train, 1000)]
    jobs += [(str(root), False, s, min(s + 1000, n_test)) for s in range(0, n_test, 1000)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_some, jobs))
    (root / "DONE").write_text(str(n_train))
    size = sum(p.stat().st_size for p in (root / "train").rglob("*.jpg"))
    shown = f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
    print(f"wrote {n_train:,} + {n_test:,} JPEGs ({shown}) in "
          f"{time.perf_counter() - t0:.1f} s (kept in {root} for later runs)")


class FolderDataset(torch.utils.data.Dataset):
    """What a tutorial writes without torchvision: list the files, decode one per item."""

    def __init__(self, root: Path, mean, std):
        self.files = sorted((p, CLASSES.index(p.parent.name)) for p in root.rglob("*.jpg"))
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.files[i]
        with Image.open(path) as im:
            x = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        x = x.float().div(255)  # ToTensor
        return (x - self.mean) / self.std, label  # Normalize


def epoch_plain(root: Path, mean, std, workers: int, batch: int) -> tuple[float, int]:
    ds = FolderDataset(root / "train", mean, std)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True,
                                         num_workers=workers)
    t0 = time.perf_counter()
    n = 0
    for x, _y in loader:
        n += len(x)
    return time.perf_counter() - t0, n


def epoch_cached(images: torch.Tensor, labels: torch.Tensor, batch: int, stream: bool
                 ) -> tuple[float, int]:
    from cnnlab.data.loader import DeviceLoader, HostLoader
    from cnnlab.data.preprocess import Preprocess

    pre = Preprocess.from_train(images)
    cls = HostLoader if stream else DeviceLoader
    loader = cls(images, labels, batch, torch.device("cpu"), pre, shuffle=True)
    t0 = time.perf_counter()
    n = 0
    for x, _y in loader.epoch(0):
        n += len(x)
    return time.perf_counter() - t0, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "cnnlab-folder-bench",
                   help="where the generated folder is written and kept for later runs "
                        "(delete it to free the space) [%(default)s]")
    p.add_argument("--images", type=int, default=50_000,
                   help="training images to generate and time (the issue asks for at least "
                        "50,000) [%(default)s]")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                   help="processes for writing the images and for the DataLoader side "
                        "[one per core: %(default)s]")
    p.add_argument("--batch-size", type=int, default=256, help="[%(default)s]")
    args = p.parse_args()
    if args.images < 10:
        p.error("--images must be at least 10")
    torch.set_num_threads(args.workers)
    make_folder(args.root, args.images, n_test=min(1000, max(10, args.images // 5)),
                workers=args.workers)

    cache = tempfile.TemporaryDirectory()
    os.environ["CNNLAB_CACHE"] = cache.name  # a cold cache: (1) really decodes
    from cnnlab.data import load_split

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.workers} workers, "
          f"batch {args.batch_size}")
    t0 = time.perf_counter()
    split = load_split("folder", "train", args.root, log=lambda m: print("  " + m))
    decode = time.perf_counter() - t0
    print(f"(1) first decode into the cache: {len(split):,} images in {decode:.1f} s = "
          f"{len(split) / decode:,.0f} images/s")
    mapped = load_split("folder", "train", args.root, mmap=True)
    mean = [float(v) for v in mapped.images[:5000].float().mean((0, 2, 3)) / 255]
    std = [float(v) for v in mapped.images[:5000].float().std((0, 2, 3)) / 255]
    rows = []
    for label, fn in [
        ("(2) epoch from the memory-mapped cache (HostLoader)",
         lambda: epoch_cached(mapped.images, mapped.labels, args.batch_size, True)),
        ("    epoch from the cache in memory (DeviceLoader)",
         lambda: epoch_cached(mapped.images.clone(), mapped.labels, args.batch_size, False)),
        (f"(3) epoch of torch.utils.data + PIL, {args.workers} workers",
         lambda: epoch_plain(args.root, mean, std, args.workers, args.batch_size)),
    ]:
        seconds, n = fn()
        rows.append(seconds)
        print(f"{label}: {seconds:.2f} s ({n / seconds:,.0f} images/s)", flush=True)
    print(f"(3) / (2): {rows[2] / rows[0]:.1f}x (target >= 3x)")
    cache.cleanup()


if __name__ == "__main__":
    sys.exit(main())
