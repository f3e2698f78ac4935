"""The default loader: a whole split kept as one tensor on the training device.

A ``torch.utils.data.DataLoader`` builds every batch sample by sample in Python (PIL image,
then tensor, then normalise). Here the split is already a uint8 tensor on the device; a
step slices a batch by a random permutation, augments it as a batch, converts to float and
normalises with one fused multiply-add (:class:`~cnnlab.data.preprocess.Preprocess`).

All randomness of an epoch (the permutation, crop offsets, flip coins, cutout corners) is
drawn at the start of the epoch, on the training device, from a generator seeded by
(seed, epoch): epoch k has the same batches whether or not the run was resumed, and no step
copies random numbers from the host (on a GPU that copy would synchronise every step).
Under DDP every rank draws the same, and takes its own slice of each global batch
(:class:`~cnnlab.distributed.Dist`): the batches, and each example's augmentation,
do not depend on the number of processes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Literal

import torch

from cnnlab.data.augment import (
    Augment,
    EpochDraws,
    alternate_flip,
    cutout,
    draw_epoch,
    random_crop,
    random_flip,
)
from cnnlab.data.preprocess import Preprocess
from cnnlab.distributed import SINGLE, Dist


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of one epoch, on ``device`` where PyTorch has one (else the CPU)."""
    try:
        gen = torch.Generator(device=device)
    except RuntimeError:  # a backend without its own generator
        gen = torch.Generator()
    return gen.manual_seed(seed * 1_000_003 + epoch)


class DeviceLoader:
    """Iterate (float inputs, int64 labels) batches of a split held on ``device``.

    ``images`` are uint8 (N, C, H, W) already in the model's channels and size
    (``preprocess.adapt``); ``preprocess`` normalises them and sets the memory layout.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device,
        preprocess: Preprocess,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        dist: Dist = SINGLE,
        shard: Literal["batches", "split"] = "batches",
    ):
        if shard not in ("batches", "split"):
            raise ValueError(f"shard must be 'batches' or 'split', got {shard!r}")
        if dist.enabled and shard == "split":  # evaluation: a contiguous part, no padding
            lo, hi = dist.shard(0, len(labels))
            images, labels = images[lo:hi], labels[lo:hi]
        self.images = self._place(images, device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.preprocess = preprocess
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment or Augment()
        self.seed = seed
        # with N processes: "batches" yields this rank's slice of every global batch
        # (training); "split" holds this rank's part of the split (evaluation, summed after)
        self.dist = dist
        self.shard_batches = dist.enabled and shard == "batches"
        self._scale_shift = preprocess.scale_shift(device)
        self.flip_coin = None
        if self.augment.flip and self.augment.alternate_flip:  # one fixed coin per example
            g = torch.Generator().manual_seed(seed * 1_000_003 + 7919)
            self.flip_coin = (torch.rand(len(self.labels), generator=g) < 0.5).to(device)

    def __len__(self) -> int:
        n = len(self.labels)
        if self.drop_last or (self.shard_batches and n % self.batch_size < self.dist.world):
            return n // self.batch_size  # with N processes, a last batch of < N is dropped
        return -(-n // self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels) if not self.drop_last else len(self) * self.batch_size

    def forever(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of epoch 0, 1, 2, ... without end: for timing a number of steps."""
        epoch = 0
        while True:
            yield from self.epoch(epoch)
            epoch += 1

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of one epoch; the same ``epoch`` always gives the same batches."""
        order, draws = self._draw(epoch)
        aug = self.augment
        for lo, hi, idx, x, y in self._batches(order):
            d = draws.slice(lo, hi)
            if d.crop is not None:
                x = random_crop(x, aug.crop_padding, d.crop, aug.crop_pad_mode)
            if self.flip_coin is not None:
                x = alternate_flip(x, self.flip_coin[idx], epoch)
            elif d.flip is not None:
                x = random_flip(x, d.flip)
            x = self.preprocess.normalise(x, self._scale_shift)
            if d.cutout is not None:  # on normalised values, so the square is the mean colour
                x = cutout(x, aug.cutout, d.cutout)
            yield self.preprocess.layout(x), y

    def _spans(self) -> Iterator[tuple[int, int]]:
        """Positions (in the epoch's order) of each batch this process works on."""
        for i in range(len(self)):
            lo, hi = self.batch_bounds(i)
            if self.shard_batches:  # draws follow positions, not ranks
                lo, hi = self.dist.shard(lo, hi)
            yield lo, hi

    def _batches(self, order: torch.Tensor | None
                 ) -> Iterator[tuple[int, int, torch.Tensor | slice, torch.Tensor, torch.Tensor]]:
        """(lo, hi, indices, uint8 images, labels) of each batch, gathered on the device."""
        for lo, hi in self._spans():
            idx = slice(lo, hi) if order is None else order[lo:hi]
            yield lo, hi, idx, self.images[idx], self.labels[idx]

    def examples(self, idx: torch.Tensor) -> torch.Tensor:
        """Examples ``idx`` as normalised float inputs (e.g. for data-dependent init)."""
        return self.to_float(self.images[idx.to(self.images.device)].to(self.device))

    def _draw(self, epoch: int) -> tuple[torch.Tensor | None, EpochDraws]:
        """The epoch's permutation (drawn first) and augmentation draws, on the device."""
        aug = self.augment
        if not (self.shuffle or aug.crop_padding or aug.cutout or aug.flip):
            return None, EpochDraws()
        gen = epoch_generator(self.seed, epoch, self.device)
        dev = gen.device
        order = torch.randperm(len(self.labels), generator=gen, device=dev) if self.shuffle else None
        draws = draw_epoch(aug, len(self.labels), tuple(self.images.shape[2:]), gen, dev)
        if dev != self.device:  # once per epoch, never per step
            order = order.to(self.device) if order is not None else None
            draws = EpochDraws(*(None if t is None else t.to(self.device)
                                 for t in (draws.crop, draws.flip, draws.cutout)))
        return order, draws

    def _place(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Where the split is kept: on the training device."""
        return images.to(device)

    def batch_bounds(self, i: int) -> tuple[int, int]:
        """Positions of global batch ``i`` in the epoch's order (all ranks' slices together)."""
        return i * self.batch_size, min((i + 1) * self.batch_size, len(self.labels))

    def batch_indices(self, epoch: int = 0) -> list[torch.Tensor]:
        """The example indices of each batch of ``epoch``, as :meth:`epoch` draws them."""
        order, _ = self._draw(epoch)
        order = torch.arange(len(self.labels)) if order is None else order.cpu()
        return [order[slice(*self.batch_bounds(i))] for i in range(len(self))]

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> normalised float32 batch in the model's layout."""
        return self.preprocess.layout(self.preprocess.normalise(x, self._scale_shift))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


class HostLoader(DeviceLoader):
    """The same batches as :class:`DeviceLoader`, for a split kept on the host (typically
    memory-mapped from the cache file, ``--data-memory stream``) instead of on the device.

    The permutation and augmentation draws are those of :class:`DeviceLoader` (same
    generator, same device), so batches and results are identical; only where the uint8
    images come from differs. A background thread gathers each batch from the host array
    (touching only the pages it needs) a few batches ahead; on CUDA into pinned memory, copied
    with ``non_blocking=True`` so the copy overlaps the previous step.
    """

    PREFETCH = 3

    def _place(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The split stays where it is: host memory or a memory map."""
        self.pin = device.type == "cuda"
        return images

    def _batches(self, order: torch.Tensor | None
                 ) -> Iterator[tuple[int, int, torch.Tensor | slice, torch.Tensor, torch.Tensor]]:
        host_order = None if order is None else order.cpu()  # once per epoch
        spans = list(self._spans())
        done: queue.Queue = queue.Queue(maxsize=self.PREFETCH)
        stop = threading.Event()

        def hand_over(item: object) -> bool:
            """Put ``item`` for the consumer; False once it has stopped listening."""
            while not stop.is_set():
                try:
                    done.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def gather() -> None:
            try:
                for lo, hi in spans:
                    idx = slice(lo, hi) if host_order is None else host_order[lo:hi]
                    x = self.images[idx]
                    if self.pin:
                        x = x.pin_memory()
                    if not hand_over((lo, hi, x)):
                        return
            except BaseException as e:  # handed to the consumer, re-raised there
                hand_over(e)

        worker = threading.Thread(target=gather, name="cnnlab-gather", daemon=True)
        worker.start()
        try:
            for _ in spans:
                item = done.get()
                if isinstance(item, BaseException):
                    raise item
                lo, hi, x = item
                idx = slice(lo, hi) if order is None else order[lo:hi]
                yield lo, hi, idx, x.to(self.device, non_blocking=True), self.labels[idx]
        finally:  # also when the consumer stops early
            stop.set()
            worker.join()
