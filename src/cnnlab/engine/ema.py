"""Lookahead-style EMA of the weights (as airbench uses it).

Every ``every`` steps the running average moves toward the current weights and the model is
set back to the average. The decay grows over the run, ``(base**every) * (t/T)**3``, so the
model moves freely early and averages strongly at the end. Buffers (BatchNorm statistics)
are averaged too; integer buffers (the batch counters) are left alone.
"""

from __future__ import annotations

import torch
from torch import nn


class LookaheadEMA:
    def __init__(self, model: nn.Module, every: int, total_steps: int, base: float = 0.95,
                 power: float = 3.0):
        self.model = model  # the real module, not a torch.compile wrapper (its keys differ)
        self.every, self.total, self.base, self.power = every, total_steps, base, power
        self.avg: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def step(self, global_step: int) -> None:
        """Call after optimizer step ``global_step`` (1-based count of steps taken)."""
        if global_step % self.every:
            return
        state = self.model.state_dict()
        if self.avg is None:
            self.avg = {k: v.detach().clone() for k, v in state.items() if v.is_floating_point()}
            return
        decay = (self.base ** self.every) * (global_step / self.total) ** self.power
        for k, avg in self.avg.items():
            avg.lerp_(state[k], 1 - decay)
            state[k].copy_(avg)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Put the averaged weights into the model (at the end of an epoch)."""
        if self.avg is not None:
            state = self.model.state_dict()
            for k, avg in self.avg.items():
                state[k].copy_(avg)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{k}": v.detach().cpu().contiguous() for k, v in (self.avg or {}).items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        avg = {k[len("ema."):]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")}
        self.avg = avg or None
