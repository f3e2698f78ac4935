"""Run each side of a comparison in its own child process and collect its JSON result.

One benchmark run starts every side as a fresh ``python`` child, one after the other, so
the sides share the machine and data but not their memory: each reports its own peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import torch

RESULT_TAG = "BENCH-RESULT "


def run_side(script: str, side: str, args: list[str]) -> dict:
    """Run ``script --side SIDE ARGS`` in a child; return the dict it printed."""
    proc = subprocess.run([sys.executable, script, "--side", side, *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise SystemExit(f"side {side} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def report(result: dict) -> None:
    """Called in the child: add peak memory and print the tagged result line."""
    import resource

    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["workers_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(RESULT_TAG + json.dumps(result), flush=True)


def machine() -> str:
    dev = (torch.cuda.get_device_name() if torch.cuda.is_available()
           else f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    return f"torch {torch.__version__}, {dev}"


def dispatch(sides: dict[str, Callable[[list[str]], dict]]) -> bool:
    """In a child (``--side NAME``), run that side and report; return True if it ran."""
    if "--side" not in sys.argv:
        return False
    i = sys.argv.index("--side")
    name, rest = sys.argv[i + 1], sys.argv[i + 2:]
    report(sides[name](rest))
    return True
