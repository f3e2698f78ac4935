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

from cnnlab.data.preprocess import Preprocess, adapt_images
from cnnlab.data.sources.folder import IMAGE_SUFFIXES
from cnnlab.decode_worker import as_seen
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["IMAGE_SUFFIXES", "check_frame", "frame_digit", "load_images", "looks_blank",
           "looks_dark_on_light", "model_view", "pil_to_tensor", "read_image", "reduce_jpeg"]

JPEG_DRAFT_SIDE = 512  # a JPEG decodes at reduced scale down to this side (reduce_jpeg)
INK = 30  # a pixel this far from the background (of 255) is part of the drawing


def read_image(path: str | Path) -> torch.Tensor:
    """One image file -> uint8 (C, H, W) with C = 1 (greyscale) or 3 (colour), as seen."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path} is a directory; give an image file")
    if not path.is_file():
        raise CnnlabError(f"image file {path} does not exist")
    try:
        with Image.open(path) as im:
            return pil_to_tensor(reduce_jpeg(im))
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


def reduce_jpeg(im: PILImage, at_least: int = JPEG_DRAFT_SIDE) -> PILImage:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, before any pixel is
    decoded) while both sides stay at least ``at_least``: a 12 MP phone photo then decodes at
    about 1000x750, 16x less memory and time, for a model that sees 28x28 or 224x224. Other
    formats are returned as they are."""
    if im.format in ("JPEG", "MPO"):  # MPO: a phone's JPEG with extra pictures inside
        im.draft(None, (at_least, at_least))
    return im


def pil_to_tensor(im: PILImage) -> torch.Tensor:
    """A Pillow image of any mode -> uint8 (C, H, W), C = 1 or 3, the way a person sees it
    (upright, transparency on contrasting paper: :func:`cnnlab.decode_worker.as_seen`)."""
    arr = np.asarray(as_seen(im))
    t = torch.from_numpy(arr.copy())
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def looks_dark_on_light(image: torch.Tensor) -> bool:
    """Whether a uint8 (C, H, W) picture has a light background: its border is brighter than
    mid-grey (a drawing on paper), where MNIST-style images have a black border."""
    g = image.float().mean(0)
    border = torch.cat([g[0], g[-1], g[:, 0], g[:, -1]])
    return float(border.mean()) > 127.5


def frame_digit(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A picture of one digit -> grey uint8 (1, H, W) at ``size``, framed as MNIST's digits
    were made: the drawing's bounding box scaled (keeping its aspect) into a 20x20 box (for
    28x28; 20/28 of the side in general) and placed so its centre of mass is at the centre.

    The ink is what differs from the background, whichever way round: dark strokes on light
    paper or light strokes on black (an MNIST digit, a photo of chalk). The result keeps the
    picture's polarity (:func:`model_view` inverts afterwards when the model needs it) on a
    clean background. A picture with no ink (blank) is only resized.
    """
    grey = adapt_images(image[None], None, 1)[0, 0].float()
    dark_on_light = looks_dark_on_light(image)
    ink = 255 - grey if dark_on_light else grey
    border = torch.cat([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
    ink = (ink - border.median()).clamp_min(0)  # grey paper, a dim board: background is 0
    if float(ink.max()) >= INK:  # pencil on grey paper: the strongest stroke becomes full ink
        ink = ink * (255.0 / float(ink.max()))
    h, w = size
    strong = ink > INK
    if not strong.any():
        return adapt_images(image[None], size, 1)[0]
    rows, cols = strong.any(1).nonzero()[:, 0], strong.any(0).nonzero()[:, 0]
    crop = ink[int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
    box = 20 / 28 * min(h, w)
    scale = box / max(crop.shape)
    ch, cw = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = torch.nn.functional.interpolate(crop[None, None], size=(ch, cw), mode="bilinear",
                                            align_corners=False, antialias=True)[0, 0]
    small = small.clamp(0, 255)
    total = float(small.sum()) or 1.0
    cy = float((small.sum(1) * torch.arange(ch)).sum()) / total
    cx = float((small.sum(0) * torch.arange(cw)).sum()) / total
    top, left = round(h / 2 - cy), round(w / 2 - cx)  # MNIST: centre of mass at (14, 14)
    canvas = torch.zeros(h, w)
    y0, x0 = max(top, 0), max(left, 0)  # the part of the box inside the canvas
    y1, x1 = min(top + ch, h), min(left + cw, w)
    canvas[y0:y1, x0:x1] = small[y0 - top:y1 - top, x0 - left:x1 - left]
    out = 255 - canvas if dark_on_light else canvas
    return out.round().clamp(0, 255).to(torch.uint8)[None]


def check_frame(preprocess: Preprocess) -> None:
    """A one-line error unless framing like MNIST fits the run: grey images only."""
    if preprocess.channels != 1:
        raise CnnlabError("framing a digit like MNIST (--frame) is for grey models; this run "
                          "takes colour images, so leave framing off")


SPECK = 0.1  # ink within a square this share of the picture's shorter side may be a dot


def looks_blank(image: torch.Tensor, picture: torch.Tensor | None = None) -> bool:
    """Whether a uint8 model input is almost one colour (every pixel within ``INK`` of 255
    of the others): an empty canvas, a lens cap; or, given the ``picture`` it was framed
    from (``frame``, which blows any ink up to fill the box), whether that holds only a dot
    (:func:`only_a_speck`: one tap on the drawing page). The model still answers, and the
    answer means little, so predict and serve say so."""
    return int(image.amax()) - int(image.amin()) < INK or (
        picture is not None and only_a_speck(picture))


def only_a_speck(picture: torch.Tensor) -> bool:
    """Whether a uint8 (C, H, W) picture's ink (pixels over ``INK`` from the border's median
    grey) is one small filled dot: it fits in a box under ``SPECK`` of the picture's shorter
    side both ways, the box is roughly square and the ink fills most of it. A small digit on
    a big scan is strokes (a "1" is thin, a "7" or "0" leaves its box mostly empty), and
    noise spread over a photo spans it, so those pass."""
    grey = picture.float().mean(0)
    border = torch.cat([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    rows, cols = torch.nonzero((grey - border.median()).abs() > INK, as_tuple=True)
    if len(rows) == 0:
        return False  # one colour: the model input says so
    h, w = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
    side = SPECK * min(grey.shape)
    return h < side and w < side and max(h, w) <= 2 * min(h, w) and len(rows) >= 0.5 * h * w


def model_view(image: torch.Tensor, preprocess: Preprocess, invert: str = "auto",
               frame: bool = False) -> tuple[torch.Tensor, bool]:
    """One uint8 (C, H, W) picture -> the uint8 image the model receives (its channels and
    size, inverted when it should be) and whether it was inverted. Normalisation follows in
    :meth:`Preprocess.normalise`, as for every batch.

    ``invert``: ``auto`` inverts dark-on-light pictures for a model trained light-on-dark;
    ``yes``/``no`` force it. ``frame``: frame a digit as MNIST's were (:func:`frame_digit`);
    for grey models only.
    """
    if invert not in ("auto", "yes", "no"):
        raise CnnlabError(f"invert must be auto, yes or no, got '{invert}'")
    if frame:
        check_frame(preprocess)
    img = frame_digit(image, preprocess.size) if frame else preprocess.adapt(image[None])[0]
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
