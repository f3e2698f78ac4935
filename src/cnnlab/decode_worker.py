"""Decoding image files in worker processes: one function, importing only numpy and Pillow.

Decoding tens of thousands of JPEGs is CPU-bound Python-and-C work that threads do not
spread over cores, so :func:`cnnlab.data.sources.folder.read_image_folder` runs
:func:`decode_chunk` in a process pool. This module stays outside ``cnnlab.data`` (whose
package imports torch) so that each freshly spawned worker starts in a fraction of a second.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's convert("L")


def as_seen(im: PILImage) -> PILImage:
    """A Pillow image of any mode -> mode L or RGB, the way a person sees it on screen.

    Upright: the EXIF orientation a phone camera writes is applied (browsers apply it, so a
    sideways JPEG must not reach the model sideways). 16-bit grey keeps its top 8 bits (not
    Pillow's clipping to 255). A transparent ground becomes paper that contrasts with the
    drawing: white under dark strokes (a canvas or paint-app drawing), black under light ones
    (white ink on transparency would vanish on white), where dropping alpha would give black
    under everything. Palette images are expanded.
    """
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: keep the top 8 bits
        wide = np.asarray(im).astype(np.int64)
        top = 65535 if im.mode != "I" or wide.max() > 255 else 255
        return Image.fromarray((wide * 255 // max(top, 1)).clip(0, 255).astype(np.uint8))
    mode = "L" if im.mode in ("L", "1", "LA") else "RGB"
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        pixels = np.asarray(rgba)
        opaque = pixels[..., 3] > 127
        light_ink = bool(opaque.any() and not opaque.all()
                         and float((pixels[..., :3][opaque] @ np.array(LUMA)).mean()) > 127.5)
        paper = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light_ink else (255,) * 4)
        im = Image.alpha_composite(paper, rgba)
    return im.convert(mode)


def decode_chunk(root: str, names: list[str], size: tuple[int, int], resize: bool
                 ) -> tuple[list[int], np.ndarray | None, list[tuple[int, str]], bool]:
    """Decode ``names`` (paths inside the directory or zip ``root``) as RGB at ``size``
    (width, height): resized to it when ``resize``, else refused when they have another size.

    Returns the positions decoded, their stacked (n, H, W, 3) arrays, (position, reason) for
    each file that could not be used, and whether every decoded image is grey (R = G = B),
    so that a folder is grey only when all its images are, whatever file comes first.
    """
    from PIL import Image, UnidentifiedImageError

    archive = zipfile.ZipFile(root) if Path(root).is_file() else None
    good: list[int] = []
    arrays: list[np.ndarray] = []
    bad: list[tuple[int, str]] = []
    try:
        for i, name in enumerate(names):
            try:
                blob = archive.read(name) if archive else (Path(root) / name).read_bytes()
                with Image.open(io.BytesIO(blob)) as im:
                    im = as_seen(im).convert("RGB")
                    if resize and im.size != size:
                        im = im.resize(size, Image.BILINEAR)  # antialiased when shrinking
                    arr = np.asarray(im)
            except UnidentifiedImageError:
                bad.append((i, "not an image file Pillow can read"))
                continue
            except (OSError, ValueError, SyntaxError, EOFError, KeyError,
                    Image.DecompressionBombError) as e:
                bad.append((i, f"corrupt or truncated: {type(e).__name__}: "
                               f"{(str(e).splitlines() or [''])[0]}"))
                continue
            if (arr.shape[1], arr.shape[0]) != size:
                bad.append((i, f"{arr.shape[1]}x{arr.shape[0]} pixels where the first image "
                               f"has {size[0]}x{size[1]} (pass --resize SIZE)"))
                continue
            good.append(i)
            arrays.append(arr)
    finally:
        if archive is not None:
            archive.close()
    stacked = np.stack(arrays) if arrays else None
    grey = stacked is None or bool((stacked[..., 0] == stacked[..., 1]).all()
                                   and (stacked[..., 1] == stacked[..., 2]).all())
    return good, stacked, bad, grey


def worker_start(parent: int) -> None:
    """Set up a decode worker process (the pool's initializer). Ctrl-C is the parent's to
    handle (it stops the pool; a worker's own KeyboardInterrupt would only print a
    traceback), and the worker ends as soon as its parent is gone: a parent killed with
    SIGKILL cannot stop the pool, and its workers would wait on a pipe nobody reads."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
