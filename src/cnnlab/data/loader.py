"""The default loader: a whole split kept as one tensor on the training device.

A ``torch.utils.data.DataLoader`` builds every batch sample by sample in Python (PIL image,
then tensor, then normalise). Here the split is already a uint8 tensor on the device; a
step slices a batch by a random permutation, augments it as a batch, converts to float and
normalises with one fused multiply-add. Shuffling and augmentation draw from a generator
seeded by (seed, epoch), so epoch k has the same batches whether or not the run was resumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.data.augment import alternate_flip, cutout, random_crop, random_flip
from cnnlab.data.load import Split


@dataclass(frozen=True)
class Augment:
    """Batch augmentation settings; the defaults do nothing."""

    crop_padding: int = 0
    flip: bool = False
    crop_pad_mode: str = "zeros"  # or "reflect"
    alternate_flip: bool = False  # with flip: airbench's alternating scheme
    cutout: int = 0  # side of the square zeroed (after normalisation) in each image


def adapt_images(images: torch.Tensor, resize: int | None, channels: int | None) -> torch.Tensor:
    """Resize (bilinear) and/or change channel count of a whole uint8 split, once."""
    if channels is not None and channels != images.shape[1]:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1).contiguous()
        elif channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)
            images = (images.float() * w[:, None, None]).sum(1, keepdim=True).round().byte()
        else:
            raise ValueError(f"cannot convert {images.shape[1]} channels to {channels}")
    if resize is not None and tuple(images.shape[2:]) != (resize, resize):
        out = []
        for chunk in images.split(4096):  # bounded memory for big splits
            f = F.interpolate(chunk.float(), size=(resize, resize), mode="bilinear",
                              align_corners=False, antialias=True)
            out.append(f.round_().clamp_(0, 255).byte())
        images = torch.cat(out)
    return images


class DeviceLoader:
    """Iterate (float inputs, int64 labels) batches of a split held on ``device``."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        device: torch.device,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        channels_last: bool = False,
    ):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment or Augment()
        self.seed = seed
        self.channels_last = channels_last
        c = self.images.shape[1]
        mean_t = torch.tensor(mean if mean is not None else (0.0,) * c, dtype=torch.float32)
        std_t = torch.tensor(std if std is not None else (1.0,) * c, dtype=torch.float32)
        # x_norm = (x/255 - mean) / std = x * scale + shift: one fused op per batch
        self.scale = (1.0 / (255.0 * std_t)).view(1, c, 1, 1).to(device)
        self.shift = (-mean_t / std_t).view(1, c, 1, 1).to(device)
        self.flip_coin = None
        if self.augment.flip and self.augment.alternate_flip:  # one fixed coin per example
            g = torch.Generator().manual_seed(seed * 1_000_003 + 7919)
            self.flip_coin = (torch.rand(len(self.labels), generator=g) < 0.5).to(device)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels) if not self.drop_last else len(self) * self.batch_size

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of one epoch; the same ``epoch`` always gives the same batches."""
        gen = self._generator(epoch)
        order = self._order(gen)
        for i in range(len(self)):
            idx = self._batch(order, i)
            x, y = self.images[idx], self.labels[idx]
            if self.augment.crop_padding:
                x = random_crop(x, self.augment.crop_padding, gen, self.augment.crop_pad_mode)
            if self.flip_coin is not None:
                x = alternate_flip(x, self.flip_coin[idx], epoch)
            elif self.augment.flip:
                x = random_flip(x, gen)
            x = self._normalise(x)
            if self.augment.cutout:  # on normalised values, so the square is the mean colour
                x = cutout(x, self.augment.cutout, gen)
            yield self._layout(x), y

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def _order(self, gen: torch.Generator) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        return torch.randperm(len(self.labels), generator=gen).to(self.device)

    def _batch(self, order: torch.Tensor | None, i: int) -> slice | torch.Tensor:
        """Batch ``i`` of an epoch: a slice of the stored order, or of the permutation."""
        lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, len(self.labels))
        return slice(lo, hi) if order is None else order[lo:hi]

    def batch_indices(self, epoch: int = 0) -> list[torch.Tensor]:
        """The example indices of each batch of ``epoch``, as :meth:`epoch` draws them."""
        order = self._order(self._generator(epoch))
        order = torch.arange(len(self.labels)) if order is None else order.cpu()
        return [order[self._batch(None, i)] for i in range(len(self))]

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> normalised float32 batch (channels_last when asked)."""
        return self._layout(self._normalise(x))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
