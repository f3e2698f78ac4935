"""Multi-process training on PyTorch's own engine: torchrun + DistributedDataParallel.

cnnlab does not start or connect processes itself. ``torchrun`` (or ``cnnlab train --nproc
N``, which calls torchrun's launcher API) starts one process per device and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`setup` reads them and
joins the process group (gloo on CPU; on GPUs NCCL for CUDA tensors plus gloo for the
host-side agreement flag, or gloo alone with ``--dist-backend gloo``, see
:func:`process_group_backend`). The rest of the library asks a
:class:`Dist` what it is: which slice of a batch is its own, whether it may write files,
and how to sum a tensor over all processes.

The rules that keep a run with N processes equal to one process with the same global batch:

* every rank draws the same permutation and augmentation for an epoch (the generator is
  seeded by seed and epoch, never by rank) and takes its own contiguous slice of each global
  batch: the global batch is the config's ``batch_size`` whatever N is;
* each rank's loss is weighted by its share of the global batch, so DDP's gradient average
  is the gradient of the global batch's mean loss, also for an uneven last batch;
* evaluation gives each rank a contiguous shard of the test split with no padding (unlike
  ``DistributedSampler``), and sums counts and losses over ranks: every example counts once;
* only rank 0 writes the run directory and prints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank ``rank`` of ``world`` (1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and logs."""
        return self.rank == 0

    def shard(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's contiguous part of positions ``lo..hi`` (sizes differ by at most 1)."""
        n = hi - lo
        return lo + n * self.rank // self.world, lo + n * (self.rank + 1) // self.world

    def agree(self, error: Exception | None) -> None:
        """Every rank reaches this point; if any met ``error`` on the way, all raise (rank 0
        its own error or a note), instead of the others waiting in the next collective."""
        if not self.enabled:
            if error is not None:
                raise error
            return
        failed = self.sum_(torch.tensor([int(error is not None)]))
        if error is not None:
            raise error
        if int(failed):
            raise CnnlabError("another process of this run failed; its error is above")

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all ranks, in place (a no-op in a single process)."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


SINGLE = Dist()
LAUNCHER_ENV = "CNNLAB_LAUNCHER_PID"  # set by `--nproc` for its ranks


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> Dist:
    """The job this process belongs to, from torchrun's environment (no process group
    needed); :data:`SINGLE` outside torchrun."""
    if not launched_by_torchrun():
        return SINGLE
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", "0")))


def process_group_backend(device: torch.device, choice: str = "auto") -> str:
    """The backend string for ``init_process_group``. On GPUs ``auto``/``nccl`` is
    ``cpu:gloo,cuda:nccl``: NCCL for the CUDA tensors (gradients, losses, counts) and gloo for
    the few host tensors (:meth:`Dist.agree`'s flag), which NCCL alone refuses.
    ``gloo`` serves both: CUDA builds without NCCL, or several processes on one GPU."""
    import torch.distributed as dist

    if device.type == "cpu":
        if choice == "nccl":
            raise CnnlabError("--dist-backend nccl needs CUDA GPUs; on CPU use gloo (the "
                              "default: drop --dist-backend)")
        return "gloo"
    if choice == "gloo":
        return "gloo"
    if not dist.is_nccl_available():
        if choice == "nccl":
            raise CnnlabError("this PyTorch build has no NCCL; use --dist-backend gloo")
        return "gloo"
    return "cpu:gloo,cuda:nccl"


def check_gpu_count(nproc: int, gpus: int, backend: str) -> None:
    """NCCL needs a GPU of its own per process on a node; gloo lets processes share them."""
    if "nccl" in backend and nproc > gpus:
        raise CnnlabError(f"{nproc} processes per node but this node has {gpus} GPU(s), and "
                          "NCCL needs one GPU per process: start at most that many "
                          "(--nproc / --nproc-per-node), or share GPUs with --dist-backend gloo")


def setup(device: torch.device, backend: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group torchrun prepared (once per process) and pick this rank's
    device: ``cuda:LOCAL_RANK`` on GPUs (modulo the GPU count under gloo, whose processes
    may share one), the CPU otherwise. Returns (job, device)."""
    info = current()
    if not info.enabled:
        return info, device
    import torch.distributed as dist

    if device.type not in ("cpu", "cuda"):
        raise CnnlabError(f"distributed training runs on CPU (gloo) or CUDA (NCCL), not "
                          f"{device.type}; pass --device cpu")
    # a group the caller joined already keeps its backend (e.g. a test's own gloo group)
    name = dist.get_backend() if dist.is_initialized() else process_group_backend(device,
                                                                                   backend)
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        # every rank checks the node's whole count, so rank 0 (the one that prints) says it
        check_gpu_count(int(os.environ.get("LOCAL_WORLD_SIZE", info.local_rank + 1)), gpus, name)
        device = torch.device("cuda", info.local_rank % gpus)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(name)
    watch_launcher()
    return info, device


def backend_name() -> str:
    """The joined process group's backend, as the run's log line names it."""
    import torch.distributed as dist

    name = dist.get_backend() if dist.is_initialized() else "none"
    return "NCCL + gloo" if "nccl" in name and "gloo" in name else name.replace("nccl", "NCCL")


_watching: list[bool] = []


def watch_launcher() -> None:
    """Under ``cnnlab train --nproc``: end this rank as soon as the launching process is gone
    (killed with SIGKILL, it cannot stop its children), instead of training on as an orphan.
    A dead launcher is seen as this process's parent changing (reparented at the parent's
    death, even while the dead parent waits, unreaped, as a zombie). The rank is sent
    SIGTERM, so that it unwinds (temporary files go); one stuck in a collective with a dead
    peer is ended 5 s later. Started once per process, as early as possible."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if not launcher or _watching or not launcher.isdigit():
        return
    _watching.append(True)
    import signal
    import threading
    import time

    def watch() -> None:
        while os.getppid() == int(launcher):
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5.0)
        os._exit(143)

    threading.Thread(target=watch, name="cnnlab-launcher-watch", daemon=True).start()


PEER_GONE = ("Connection closed by peer", "Connection reset by peer",
             "NCCL communicator was aborted")


def peer_lost(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process of the job is gone
    (its own error, a kill, out of memory): gloo's closed or reset connection, NCCL's abort.
    Not a timeout or a failure of this process's own backend, whose message must be seen."""
    return isinstance(error, RuntimeError) and any(s in str(error) for s in PEER_GONE)


def finish() -> None:
    """At the end of a run that succeeded on every rank: wait for all of them, so that no
    rank leaves the process group while another still works in it (rank 0 writing the
    final files). A rank that left early made gloo's threads in the other abort it at exit
    now and then ("terminate called without an active exception", SIGABRT) after a run that
    had finished. Not on the way out of an error, where a peer may be gone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def teardown() -> None:
    """Leave the process group (at the end of a run), so the process exits cleanly."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: Dist, device: torch.device) -> torch.nn.Module:
    """The DDP wrapper the training steps call; the bare model where there is one process."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def launch(nproc: int, argv: list[str]) -> int:
    """``cnnlab train --nproc N``: run ``python -m cnnlab ARGV`` in N processes on this node
    through torchrun's launcher API (a standalone rendezvous on a free local port), and
    return an exit status. Multi-node jobs use ``torchrun`` itself."""
    import signal
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun does: each process its share
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    os.environ[LAUNCHER_ENV] = str(os.getpid())  # for the ranks; removed again below
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=f"cnnlab-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2,
                          # one node: its ranks meet on 127.0.0.1, not at the name getfqdn()
                          # gives, which in many containers does not resolve (minutes of retries)
                          local_addr="127.0.0.1")
    for name in ["torch.distributed.elastic", *list(logging.root.manager.loggerDict)]:
        if name.startswith("torch.distributed.elastic"):  # each module sets its own level
            logging.getLogger(name).setLevel(logging.CRITICAL)  # we report
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "cnnlab", *argv)
    except SignalException as e:  # Ctrl-C or kill of this launcher: the ranks were stopped
        if e.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise SystemExit(128 + int(e.sigval)) from None
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values()]
        # SIGKILL is never the launcher's doing (it stops the others with SIGTERM): a kill
        # or the out-of-memory killer, which the others then fail on, with exit 1
        killed = sorted((c for c in codes if c < 0), key=lambda c: c != -signal.SIGKILL)
        if killed and (killed[0] == -signal.SIGKILL or not any(c > 0 for c in codes)):
            name = signal.Signals(-killed[0]).name
            raise CnnlabError(f"a training process was killed by {name}"
                              + (" (out of memory?)" if name == "SIGKILL" else "")) from None
        return max(codes) if codes else 1
    finally:  # this process is not a rank: a later run in it must not watch itself
        os.environ.pop(LAUNCHER_ENV, None)
    return 0
