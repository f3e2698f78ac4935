"""Decoding image files in worker processes: one function, importing only numpy and Pillow.

Decoding tens of thousands of JPEGs is CPU-bound Python-and-C work that threads do not
spread over cores, so :func:`cnnlab.data.sources.folder.read_image_folder` runs
:func:`decode_chunk` in a process pool. This module stays outside ``cnnlab.data`` (whose
package imports torch) so that each freshly spawned worker starts in a fraction of a second.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np


def decode_chunk(root: str, names: list[str], mode: str, size: tuple[int, int], resize: bool
                 ) -> tuple[list[int], np.ndarray | None, list[tuple[int, str]]]:
    """Decode ``names`` (paths inside the directory or zip ``root``) to ``mode`` ("L" or
    "RGB") at ``size`` (width, height): resized to it when ``resize``, else refused when
    they have another size.

    Returns the positions decoded, their stacked arrays (n, H, W) or (n, H, W, 3), and
    (position, reason) for each file that could not be used.
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
                    im = im.convert(mode)
                    if resize and im.size != size:
                        im = im.resize(size, Image.BILINEAR)  # antialiased when shrinking
                    arr = np.asarray(im)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
                    KeyError, Image.DecompressionBombError) as e:
                bad.append((i, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"))
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
    return good, (np.stack(arrays) if arrays else None), bad
