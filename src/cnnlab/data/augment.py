"""Batch augmentations as tensor operations: one call transforms the whole batch.

They work on uint8 (N, C, H, W) batches before normalisation, so padding is black exactly
as torchvision's ``RandomCrop(padding=p)`` pads a PIL image; no per-sample Python runs.
Their random numbers (offsets, coins, positions) are arguments, not drawn here: the loader
draws them for a whole epoch at once on the training device (:func:`draw_epoch`), because
drawing per batch on the host and copying to a GPU is a hidden synchronisation per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Batch augmentation settings; the defaults do nothing."""

    crop_padding: int = 0
    flip: bool = False
    crop_pad_mode: str = "zeros"  # or "reflect"
    alternate_flip: bool = False  # with flip: airbench's alternating scheme
    cutout: int = 0  # side of the square zeroed (after normalisation) in each image

    def check_fits(self, size: tuple[int, ...]) -> None:
        """Crop shifts and cutout squares must fit inside the images (a reflected pad also needs
        less padding than the image: half the side at most covers both)."""
        from cnnlab.errors import CnnlabError

        side = min(size)
        if self.cutout > side:
            raise CnnlabError(f"--cutout {self.cutout} is larger than the {side}-pixel images; "
                              f"use at most {side}")
        if self.crop_padding > side // 2:
            raise CnnlabError(f"--crop-padding {self.crop_padding} shifts the {side}-pixel "
                              "images by up to that many pixels, so many crops would be mostly "
                              f"padding; use at most {side // 2} (2 to 4 is usual)")


@dataclass
class EpochDraws:
    """Every random number one epoch of augmentation needs, one entry per example slot
    (position in the epoch's order), all on the training device."""

    crop: torch.Tensor | None = None  # (n, 2) row and column offsets
    flip: torch.Tensor | None = None  # (n,) bool
    cutout: torch.Tensor | None = None  # (n, 2) top and left

    def slice(self, lo: int, hi: int) -> EpochDraws:
        return EpochDraws(*(None if t is None else t[lo:hi]
                            for t in (self.crop, self.flip, self.cutout)))


def draw_epoch(aug: Augment, n: int, size: tuple[int, ...], generator: torch.Generator,
               device: torch.device) -> EpochDraws:
    """Draw one epoch's augmentation randomness with ``generator`` (on ``device``).
    ``size`` is (H, W): only cutout uses it (time series, with a 1-D size, have no
    augmentation)."""
    draws = EpochDraws()
    if aug.crop_padding:
        draws.crop = torch.randint(0, 2 * aug.crop_padding + 1, (n, 2), generator=generator,
                                   device=device)
    if aug.flip and not aug.alternate_flip:
        draws.flip = torch.rand(n, generator=generator, device=device) < 0.5
    if aug.cutout:
        h, w = size
        draws.cutout = torch.stack([
            torch.randint(0, h - aug.cutout + 1, (n,), generator=generator, device=device),
            torch.randint(0, w - aug.cutout + 1, (n,), generator=generator, device=device)], 1)
    return draws


def _reflect(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Map indices in [-size+1, 2*size-2] into [0, size-1] by mirror reflection."""
    idx = idx.abs()
    return torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)


def random_crop(x: torch.Tensor, padding: int, offsets: torch.Tensor,
                mode: str = "zeros") -> torch.Tensor:
    """Pad by ``padding`` pixels (zeros or reflection) and crop back at ``offsets`` (n, 2),
    each in [0, 2 * padding].

    One gather over (batch, channel, row, column) index grids: no per-image Python. For
    reflection the padded image is never built; indices are mirrored instead.
    """
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    dy, dx = offsets[:, 0], offsets[:, 1]
    rows = torch.arange(h, device=x.device)[None, :] + dy[:, None]
    cols = torch.arange(w, device=x.device)[None, :] + dx[:, None]
    if mode == "reflect":
        src = x
        rows, cols = _reflect(rows - padding, h), _reflect(cols - padding, w)
    else:
        src = F.pad(x, (padding,) * 4)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return src[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images whose ``flip`` coin (n,) is True left-right."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def alternate_flip(x: torch.Tensor, coin: torch.Tensor, epoch: int) -> torch.Tensor:
    """airbench's alternating flip: an example is mirrored in even epochs iff its fixed coin
    (drawn once per run) says so, and in odd epochs iff it does not, so every image is seen
    both ways in any two consecutive epochs; that beats fresh coin flips for short runs."""
    flip = coin ^ bool(epoch % 2)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int, corners: torch.Tensor) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image at ``corners`` (n, 2: top, left), which
    :func:`draw_epoch` draws so that the square lies inside the image.

    Applied to normalised batches, so the square becomes the data set's mean colour, as in
    DeVries and Taylor's cutout and airbench96. One mask built by broadcasting; no loop.
    """
    if size <= 0:
        return x
    _, _, h, w = x.shape
    top, left = corners[:, 0], corners[:, 1]
    rows = torch.arange(h, device=x.device)[None, :] - top[:, None]
    cols = torch.arange(w, device=x.device)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < size))[:, None, :, None] & \
        ((cols >= 0) & (cols < size))[:, None, None, :]
    return x.masked_fill(inside, 0)
