"""Resolving the device, precision and threads once, at the start of a run."""

from __future__ import annotations

import contextlib

import torch

from cnnlab.errors import CnnlabError


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; asking for one that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise CnnlabError("--device mps asked for, but MPS is not available; use --device cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise CnnlabError(f"unknown device '{name}'; choose auto, cpu, cuda or mps")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """fp32: a no-op context; bf16: autocast on the device (matmuls/convs in bfloat16)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise CnnlabError(f"unknown precision '{precision}'; choose fp32 or bf16")


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
