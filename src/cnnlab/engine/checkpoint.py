"""Checkpoints without pickle: safetensors for every tensor, JSON for everything else.

A checkpoint is a pair ``STEM.safetensors`` (model weights under ``model.*``, optimizer
tensors under ``optim.<param>.<name>``, EMA tensors under ``ema.*``) plus ``STEM.json``
(epoch, global step, optimizer hyper-parameters and scalars, metric history). Both are
written atomically, the JSON last, so a JSON file marks a complete checkpoint. Which stems
a run directory uses is :class:`cnnlab.run.RunDir`'s business, not this module's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_path, write_json
from cnnlab.models import upgrade_state_dict
from cnnlab.safety import refuse_pickled_weights


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def write_checkpoint(stem: Path, epoch: int, model: nn.Module,
                     optimizer: torch.optim.Optimizer, ema: Any, meta: dict[str, Any]) -> None:
    """Write the checkpoint after ``epoch`` (1-based count of finished epochs) to ``stem``."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    if ema is not None:
        tensors.update(ema.state_tensors())
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp))
    write_json(stem.with_suffix(".json"), {"epoch": epoch, "optimizer": opt_meta, **meta})


def save_weights(path: Path, model: nn.Module) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors weights file; a missing or damaged file gives a clear
    error, and a pickle saved under a safetensors name is named as such (never unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    refuse_pickled_weights(path)
    try:
        return load_file(str(path))
    except FileNotFoundError as e:
        raise CnnlabError(f"no weights at {path}; train first or give the right run dir") from e
    except (SafetensorError, OSError) as e:
        raise CnnlabError(f"{path} is not a readable safetensors file ({e}); it is damaged or "
                          "truncated: restore it, or train the run again") from e


def load_weights(path: Path, model: nn.Module) -> None:
    """Load safetensors weights into ``model`` (see :func:`read_weights`)."""
    state = read_weights(path)
    try:
        model.load_state_dict(upgrade_state_dict(model, state))
    except RuntimeError as e:
        raise CnnlabError(f"{path} does not match the model ({str(e).splitlines()[0]})") from e


def load_checkpoint(stem: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    ema: Any = None) -> dict[str, Any]:
    """Restore model and optimizer from a checkpoint; return its JSON metadata."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    refuse_pickled_weights(stem.with_suffix(".safetensors"))
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        tensors = load_file(str(stem.with_suffix(".safetensors")))
    except (OSError, ValueError, SafetensorError) as e:
        raise CnnlabError(f"checkpoint {stem} is unreadable ({e}); "
                          "delete it to resume from the one before") from e
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(upgrade_state_dict(model, model_state))
        optimizer.load_state_dict(_join_optimizer(tensors, meta.pop("optimizer")))
        if ema is not None:
            ema.load_tensors(tensors, next(model.parameters()).device)
    except (RuntimeError, ValueError, KeyError) as e:
        raise CnnlabError(f"checkpoint {stem} does not match the model or optimizer "
                          f"({str(e).splitlines()[0]})") from e
    return meta
