"""Reading a user's own image files (PNG, JPEG, ...) as the model's input.

Used wherever a command takes ``--image FILE``: each file is decoded with Pillow, given the
run's channel count and size (:meth:`Preprocess.adapt`), and, for a model trained on light
strokes on a dark ground (MNIST), a dark-on-light picture (a digit drawn in black on white
paper) is inverted, so it looks like what the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnlab.data.preprocess import Preprocess
from cnnlab.data.sources.folder import IMAGE_SUFFIXES
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["IMAGE_SUFFIXES", "load_images", "looks_dark_on_light", "model_view", "pil_to_tensor",
           "read_image"]


def read_image(path: str | Path) -> torch.Tensor:
    """One image file -> uint8 (C, H, W) with C = 1 (greyscale) or 3 (colour; alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path} is a directory; give an image file")
    if not path.is_file():
        raise CnnlabError(f"image file {path} does not exist")
    try:
        with Image.open(path) as im:
            return pil_to_tensor(im)
    except UnidentifiedImageError:
        raise CnnlabError(f"{path} is not an image file Pillow can read; give a PNG, JPEG, "
                          "BMP, GIF or WebP file") from None
    except Image.DecompressionBombError as e:
        raise CnnlabError(f"{path} declares too many pixels to decode safely ({e}); shrink it "
                          "first") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise CnnlabError(f"cannot read {path}: the image is corrupt or truncated "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                          "; save it again") from None


def pil_to_tensor(im: PILImage) -> torch.Tensor:
    """A Pillow image of any mode -> uint8 (C, H, W), C = 1 or 3, the way a person sees it.

    16-bit greyscale keeps its top 8 bits (not Pillow's clipping to 255); a transparent
    ground (a canvas or paint-app drawing) becomes white paper, not the black that dropping
    alpha would give; palette images are expanded.
    """
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: keep the top 8 bits
        wide = np.asarray(im).astype(np.int64)
        top = 65535 if im.mode != "I" or wide.max() > 255 else 255
        arr = (wide * 255 // max(top, 1)).clip(0, 255).astype(np.uint8)
        return torch.from_numpy(arr.copy())[None]
    mode = "L" if im.mode in ("L", "1", "LA") else "RGB"
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(paper, rgba)
    arr = np.asarray(im.convert(mode))
    t = torch.from_numpy(arr.copy())
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def looks_dark_on_light(image: torch.Tensor) -> bool:
    """Whether a uint8 (C, H, W) picture has a light background: its border is brighter than
    mid-grey (a drawing on paper), where MNIST-style images have a black border."""
    g = image.float().mean(0)
    border = torch.cat([g[0], g[-1], g[:, 0], g[:, -1]])
    return float(border.mean()) > 127.5


def model_view(image: torch.Tensor, preprocess: Preprocess, invert: str = "auto"
               ) -> tuple[torch.Tensor, bool]:
    """One uint8 (C, H, W) picture -> the uint8 image the model receives (its channels and
    size, inverted when it should be) and whether it was inverted. Normalisation follows in
    :meth:`Preprocess.normalise`, as for every batch.

    ``invert``: ``auto`` inverts dark-on-light pictures for a model trained light-on-dark;
    ``yes``/``no`` force it.
    """
    if invert not in ("auto", "yes", "no"):
        raise CnnlabError(f"invert must be auto, yes or no, got '{invert}'")
    img = preprocess.adapt(image[None])[0]
    flip = invert == "yes" or (invert == "auto" and preprocess.light_on_dark
                               and looks_dark_on_light(img))
    return (255 - img if flip else img), flip


def load_images(paths: Sequence[str | Path], preprocess: Preprocess, invert: str = "auto"
                ) -> tuple[torch.Tensor, list[str]]:
    """Image files -> one uint8 (N, C, H, W) batch in the model's channels and size, and a
    label per file (its name, marked when it was inverted).

    ``invert``: ``auto`` inverts dark-on-light pictures for a model trained light-on-dark;
    ``yes``/``no`` force it.
    """
    batch, labels = [], []
    for p in paths:
        img, flip = model_view(read_image(p), preprocess, invert)
        batch.append(img)
        labels.append(Path(p).name + (" (inverted)" if flip else ""))
    if not batch:
        raise CnnlabError("no image files given")
    return torch.stack(batch), labels
