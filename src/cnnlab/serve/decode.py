"""Untrusted upload bytes -> a uint8 image, or an :class:`UploadError` with an HTTP status.

The declared content type of an upload is whatever the client says, so the file type is
decided by its first bytes, and only PNG, JPEG, WebP and GIF are handed to Pillow (whose
other decoders are then never reached). A small file can declare a huge canvas (a
decompression bomb: a few kB of PNG that inflate to gigabytes), so the pixel count in the
header is checked against a cap *before* anything is decoded, and Pillow's own limit is set
to the same cap with its warning turned into an error as a second line of defence.
"""

from __future__ import annotations

import io
import re
import warnings

import torch

from cnnlab.data.images import pil_to_tensor, reduce_jpeg

# magic bytes -> the Pillow format name that may open them
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
ACCEPTED = "PNG, JPEG, WebP or GIF"
JPEG_HEADROOM = 64  # a JPEG decodes at down to 1/8 scale per side: 64x fewer pixels


class UploadError(Exception):
    """A request the client must change: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def sniff(data: bytes) -> str | None:
    """The image format named by the first bytes, or None when it is not one we open."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    return None


def default_max_pixels(input_shape: tuple[int, int, int]) -> int:
    """A pixel cap that suits the model: 4096 times its input area (3.2 MP for 28x28, 4.2 MP
    for 32x32), and never below 4 MP. Anything larger is shrunk to the model's size anyway;
    the drawing page shrinks dropped photos in the browser before sending them. It caps the
    pixels *decoded*: a baseline JPEG decodes at reduced scale (:func:`reduce_jpeg`), so a
    phone photo of up to 64 times the cap is accepted; a progressive JPEG counts at full size
    (libjpeg keeps all its coefficients in memory)."""
    _, h, w = input_shape
    return max(4096 * h * w, 4_000_000)


def install_pillow_limits(max_pixels: int) -> None:
    """Pillow's own bomb check at what a JPEG may declare (``max_pixels`` times the JPEG
    headroom; :func:`decode_upload` checks every other format at ``max_pixels`` itself before
    decoding), its warning made an error (process-wide: called once by the server, not per
    request, since warning filters are global state)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels * JPEG_HEADROOM
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def decode_upload(data: bytes, max_pixels: int) -> torch.Tensor:
    """Upload bytes -> uint8 (C, H, W); :class:`UploadError` 415/413/400 otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UploadError(400, "the upload is empty; send a PNG, JPEG, WebP or GIF image")
    fmt = sniff(data)
    if fmt is None:
        raise UploadError(415, f"the upload is not a {ACCEPTED} image (judged by its first "
                               "bytes, not its declared type); send one of those")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            declared = "x".join(map(str, im.size))
            # a baseline JPEG decodes at its reduced scale row by row; a progressive one keeps
            # a full-size coefficient buffer whatever the scale, so it counts at full size
            progressive = im.info.get("progressive") or im.info.get("progression")
            w, h = im.size if progressive else reduce_jpeg(im).size
            if w * h > max_pixels:
                raise UploadError(413, f"the image is {declared} ({w * h:,} pixels to "
                                       f"decode), more than this service accepts "
                                       f"({max_pixels:,}); shrink it first")
            return pil_to_tensor(im)  # an animated GIF gives its first frame
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))  # Pillow says how many
        size = f" ({int(found[1]):,} pixels)" if found else ""
        raise UploadError(413, f"the image is larger{size} than this service accepts "
                               f"({max_pixels:,} pixels); shrink it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise UploadError(400, f"the {fmt} image is corrupt or truncated "
                               f"({type(e).__name__}); send a complete image file") from None
