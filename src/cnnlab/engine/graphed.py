"""One training step captured as a CUDA graph and replayed per batch (GPU, SGD only).

Small nets on a fast GPU are limited by the host: each eager step launches ~100 kernels from
Python (measured: mnist-fast at ~3.7 ms per step on an H100 whether fp32 or bf16). A CUDA
graph launches the whole step at once. What makes a replayed step equal to an eager one:

- batches are made outside the graph (so augmentation keeps working) and copied into static
  input buffers before each replay;
- gradients come from ``torch.autograd.grad`` inside the graph, and the SGD update is written
  out with ``torch._foreach`` ops: momentum buffers start at zero, which equals PyTorch's
  first step (``buf = grad``) for dampening 0, and live in ``optimizer.state`` as
  ``momentum_buffer`` so checkpoints stay those of ``torch.optim.SGD``;
- each param group's learning rate is a device tensor (holding -lr) filled before every
  replay, so the schedule still applies. The update is ``p + g * (-lr)`` by ``addcmul``,
  which rounds like ``torch.optim.SGD``'s ``p.add_(g, alpha=-lr)`` (a separate multiply
  and add would round twice and drift); weight decay and Nesterov follow it too;
- the graph is captured again when the set of trainable parameters changes (airbench stops
  training its whitening bias after 3 epochs), and an incomplete last batch runs eagerly
  through the same update code.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class GraphedSGDStep:
    def __init__(self, model: nn.Module, optimizer: torch.optim.SGD, criterion: nn.Module,
                 precision: str, batch_shape: tuple[int, ...], device: torch.device,
                 channels_last: bool):
        if not isinstance(optimizer, torch.optim.SGD):
            raise ValueError("CUDA graph steps support SGD only")
        self.model, self.optimizer, self.criterion = model, optimizer, criterion
        self.precision, self.device = precision, device
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.x = torch.zeros(batch_shape, device=device).contiguous(memory_format=fmt)
        self.y = torch.zeros(batch_shape[0], dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.neg_lrs = [torch.zeros((), device=device) for _ in optimizer.param_groups]
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state[p]
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(p)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.signature: tuple[bool, ...] = ()

    def _trainable(self) -> list[tuple[int, list[torch.Tensor]]]:
        return [(i, [p for p in g["params"] if p.requires_grad])
                for i, g in enumerate(self.optimizer.param_groups)]

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, gradients and the SGD update; the same code eager or under capture."""
        # autocast's weight-cast cache must be off under capture (PyTorch's CUDA graph notes)
        ctx = (contextlib.nullcontext() if self.precision == "fp32" else
               torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False))
        with ctx:
            out = self.model(x)
            loss = self.criterion(out, y)
        groups = self._trainable()
        params = [p for _, ps in groups for p in ps]
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            self._update(groups, grads)
        return loss.detach(), (out.argmax(1) == y).sum()

    def _update(self, groups: list[tuple[int, list[torch.Tensor]]],
                grads: tuple[torch.Tensor, ...]) -> None:
        """torch.optim.SGD's update (momentum, dampening 0, Nesterov, weight decay)."""
        k = 0
        for i, ps in groups:
            if not ps:
                continue
            g = self.optimizer.param_groups[i]
            gs = list(grads[k: k + len(ps)])
            k += len(ps)
            bufs = [self.optimizer.state[p]["momentum_buffer"] for p in ps]
            if g["weight_decay"]:
                gs = torch._foreach_add(gs, ps, alpha=g["weight_decay"])
            torch._foreach_mul_(bufs, g["momentum"])
            torch._foreach_add_(bufs, gs)
            step = torch._foreach_add(gs, bufs, alpha=g["momentum"]) if g["nesterov"] else bufs
            torch._foreach_addcmul_(ps, step, [self.neg_lrs[i]] * len(ps))

    def _capture(self) -> None:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        buffers = {k: v.clone() for k, v in self.model.state_dict().items()}
        saved = [(p.detach().clone(), self.optimizer.state[p]["momentum_buffer"].clone())
                 for g in self.optimizer.param_groups for p in g["params"]]
        lrs = [lr.clone() for lr in self.neg_lrs]
        for lr in self.neg_lrs:
            lr.zero_()  # warm-up steps must not move the weights
        with torch.cuda.stream(side):
            for _ in range(3):  # cuDNN autotuning and autograd set-up happen outside capture
                self._step(self.x, self.y)
        torch.cuda.current_stream(self.device).wait_stream(side)
        # undo what the warm-up changed: BatchNorm statistics and momentum buffers
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(buffers[k])
            for (p_saved, b_saved), p in zip(saved, [p for g in self.optimizer.param_groups
                                                     for p in g["params"]], strict=True):
                p.copy_(p_saved)
                self.optimizer.state[p]["momentum_buffer"].copy_(b_saved)
            for lr, old in zip(self.neg_lrs, lrs, strict=True):
                lr.copy_(old)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            loss, correct = self._step(self.x, self.y)
            self.loss.copy_(loss)
            self.correct.copy_(correct)
        self.signature = self._signature()

    def _signature(self) -> tuple[bool, ...]:
        """Which parameters train now; the captured graph is valid only for this set."""
        return tuple(p.requires_grad for g in self.optimizer.param_groups for p in g["params"])

    def _fill_lrs(self) -> None:
        for lr, group in zip(self.neg_lrs, self.optimizer.param_groups, strict=True):
            lr.fill_(-group["lr"])

    def eager_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same step without a graph (any device): for odd-sized batches and for tests."""
        self._fill_lrs()
        return self._step(x, y)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step on batch (x, y); returns (loss, number correct) on the device."""
        if x.shape != self.x.shape:  # the last, incomplete batch: same update, eagerly
            return self.eager_step(x, y)
        self._fill_lrs()
        if self.graph is None or self._signature() != self.signature:
            self._capture()
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.loss, self.correct  # read them before the next call overwrites them
