"""Batch augmentations as tensor operations: one call transforms the whole batch.

They work on uint8 (N, C, H, W) batches before normalisation, so padding is black exactly
as torchvision's ``RandomCrop(padding=p)`` pads a PIL image; no per-sample Python runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Pad by ``padding`` pixels with zeros and crop each image back at a random offset."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device="cpu").to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device="cpu").to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device="cpu").lt(0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)
