"""Batch augmentations as tensor operations: one call transforms the whole batch.

They work on uint8 (N, C, H, W) batches before normalisation, so padding is black exactly
as torchvision's ``RandomCrop(padding=p)`` pads a PIL image; no per-sample Python runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _reflect(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Map indices in [-size+1, 2*size-2] into [0, size-1] by mirror reflection."""
    idx = idx.abs()
    return torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None,
                mode: str = "zeros") -> torch.Tensor:
    """Pad by ``padding`` pixels (zeros or reflection) and crop back at a random offset.

    One gather over (batch, channel, row, column) index grids: no per-image Python. For
    reflection the padded image is never built; indices are mirrored instead.
    """
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device="cpu").to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device="cpu").to(x.device)
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


def random_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device="cpu").lt(0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def alternate_flip(x: torch.Tensor, coin: torch.Tensor, epoch: int) -> torch.Tensor:
    """airbench's alternating flip: an example is mirrored in even epochs iff its fixed coin
    (drawn once per run) says so, and in odd epochs iff it does not, so every image is seen
    both ways in any two consecutive epochs; that beats fresh coin flips for short runs."""
    flip = coin ^ bool(epoch % 2)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero one random ``size`` x ``size`` square per image (the square lies inside it).

    Applied to normalised batches, so the square becomes the data set's mean colour, as in
    DeVries and Taylor's cutout and airbench96. One mask built by broadcasting; no loop.
    """
    if size <= 0:
        return x
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n,), generator=generator, device="cpu").to(x.device)
    left = torch.randint(0, w - size + 1, (n,), generator=generator, device="cpu").to(x.device)
    rows = torch.arange(h, device=x.device)[None, :] - top[:, None]
    cols = torch.arange(w, device=x.device)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < size))[:, None, :, None] & \
        ((cols >= 0) & (cols < size))[:, None, None, :]
    return x.masked_fill(inside, 0)
