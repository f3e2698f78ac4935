"""Micro-batching: concurrent requests share one forward pass.

A CNN's forward pass on 16 images costs little more than on one, so when requests arrive
together it is cheaper to run them as a batch. Each request puts its (already decoded and
resized) image on a queue and awaits its row of the result; one task takes the first waiting
image, gathers whatever else arrives within a short window (or until ``max_batch``), runs the
batch on a single inference thread (so the event loop keeps accepting requests meanwhile),
and hands each request its own row. Requests that arrive while a batch is running wait on the
queue and form the next batch. ``max_batch=1`` turns batching off: one forward pass per
request, in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    largest: int = 0

    def to_dict(self) -> dict[str, float]:
        mean = self.requests / self.batches if self.batches else 0.0
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest,
                "mean_batch": round(mean, 2)}


@dataclass
class _Item:
    image: torch.Tensor
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Gather images submitted from concurrent requests into batches for ``infer``.

    ``infer`` takes a uint8 (N, C, H, W) batch and returns an (N, ...) tensor; it runs on one
    worker thread. ``window_ms`` is how long the first image of a batch waits for company.
    """

    def __init__(self, infer: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 32,
                 window_ms: float = 2.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if window_ms < 0:
            raise ValueError(f"the batching window must be >= 0 ms, got {window_ms}")
        self.infer = infer
        self.max_batch = max_batch
        self.window = window_ms / 1000.0 if max_batch > 1 else 0.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cnnlab-infer")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=True)

    async def submit(self, image: torch.Tensor) -> torch.Tensor:
        """The result row for one uint8 (C, H, W) image."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(image, future))
        return await future

    async def _gather(self) -> list[_Item]:
        assert self._queue is not None
        items = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window
        while len(items) < self.max_batch:
            try:  # whatever is already waiting joins at once
                items.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [i for i in await self._gather() if not i.future.cancelled()]
            if not items:
                continue
            try:  # whatever fails (stacking, inference, a short result), the task goes on
                batch = torch.stack([i.image for i in items])
                out = await loop.run_in_executor(self._pool, self.infer, batch)
                if len(out) != len(items):
                    raise RuntimeError(f"inference gave {len(out)} rows for {len(items)} images")
            except Exception as e:  # every waiting request learns of it
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(e)
                continue
            self.stats.requests += len(items)
            self.stats.batches += 1
            self.stats.largest = max(self.stats.largest, len(items))
            for i, row in zip(items, out, strict=True):
                if not i.future.done():
                    i.future.set_result(row)
