"""On a GPU, a training epoch synchronises with the host only at its log points.

Randomness is drawn once per epoch on the device and batches are sliced there, so no step
copies anything from the host: a hidden copy would be a synchronisation per step. Skipped
without CUDA (the CPU has nothing to synchronise with).
"""

from __future__ import annotations

import pytest
import torch

from cnnlab.config import build_config
from cnnlab.engine import train as train_mod
from cnnlab.engine.build import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _relaxed(fn):
    """``fn`` with sync checks off: a log point may synchronise."""
    def wrapper(*args, **kwargs):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("error")
    return wrapper


@pytest.mark.parametrize("extra", [
    {"model": "fastnet", "crop_padding": 2, "flip": True, "cutout": 4},
    {"model": "fastnet", "flip": True, "alternate_flip": True, "crop_padding": 2,
     "crop_pad_mode": "reflect", "ema_every": 2},
])
def test_cuda_epoch_syncs_only_at_log_points(monkeypatch, extra):
    cfg = build_config(None, {"dataset": "digits", "resize": 28, "limit_train": 320,
                              "batch_size": 32, "log_every": 4, "device": "cuda", **extra})
    built = build(cfg)
    monkeypatch.setattr(train_mod, "log_point", _relaxed(train_mod.log_point))
    monkeypatch.setattr(train_mod, "epoch_result", _relaxed(train_mod.epoch_result))
    ema = None
    if built.cfg.ema_every:
        from cnnlab.engine.ema import LookaheadEMA

        ema = LookaheadEMA(built.model, built.cfg.ema_every, len(built.train))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for epoch in range(2):
            res = train_mod.train_one_epoch(built.step_model, built.train, built.optimizer,
                                            built.cfg, epoch, epoch * len(built.train), ema=ema,
                                            criterion=built.criterion)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert res.examples == 320


# --- issue 11's GPU paths: streaming with pinned copies, DDP and SyncBatchNorm on CUDA ---

def _exact_fp32():
    """fp32 without TF32 in cuDNN and cuBLAS, deterministic convolutions: two runs that
    should agree then differ only by summation order, not by TF32's 10-bit mantissa."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True


@pytest.fixture
def exact_fp32():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.deterministic)
    _exact_fp32()
    yield
    (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.deterministic) = saved


def test_stream_mode_on_cuda_copies_from_pinned_memory_and_trains_like_all(
        monkeypatch, tmp_path, exact_fp32):
    from cnnlab.engine.train import fit

    pinned: list[bool] = []
    real_pin = torch.Tensor.pin_memory

    def spy(self, *a, **k):
        out = real_pin(self, *a, **k)
        pinned.append(out.is_pinned())
        return out

    monkeypatch.setattr(torch.Tensor, "pin_memory", spy)
    base = {"model": "airbench", "dataset": "digits", "resize": 32, "channels": 3, "epochs": 2,
            "batch_size": 64, "limit_train": 320, "limit_test": 100, "crop_padding": 2,
            "flip": True, "log_every": 1, "device": "cuda", "precision": "fp32"}
    runs = {}
    for mode in ("all", "stream"):
        losses: list[float] = []
        pinned.clear()
        cfg = build_config(None, {**base, "data_memory": mode, "out": str(tmp_path / mode)})
        r = fit(cfg, log=lambda _m: None,
                progress=lambda _s, _n, loss, seen=losses: seen.append(loss))
        runs[mode] = (losses, r.model.state_dict(), r.history[-1].test_acc, list(pinned))
    (la, wa, aa, pa), (ls, ws, as_, ps) = runs["all"], runs["stream"]
    assert pa == [] and len(ps) == 10  # 5 steps x 2 epochs: every batch went through pinning
    assert len(la) == 10
    torch.testing.assert_close(torch.tensor(ls), torch.tensor(la), rtol=1e-5, atol=1e-6)
    for k in wa:
        torch.testing.assert_close(ws[k].float(), wa[k].float(), rtol=1e-4, atol=1e-5)
    assert abs(aa - as_) <= 0.01


DDP = {"dataset": "digits", "resize": 28, "epochs": 2, "batch_size": 64,
       "limit_train": 640 + 37, "limit_test": 101, "lr": 0.05, "crop_padding": 2,
       "device": "cuda", "precision": "fp32", "log_every": 4}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, settings: dict, report: str) -> None:
    """One rank as torchrun starts it: only the environment; `fit` joins the group itself
    (so the backend is cnnlab's choice), on cuda:LOCAL_RANK modulo the GPU count."""
    import json
    import os

    from safetensors.torch import save_file

    from cnnlab.engine.train import fit

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    _exact_fp32()
    logs: list[str] = []
    r = fit(build_config(None, dict(settings)), log=logs.append)
    state = {k: v.detach().cpu().contiguous() for k, v in r.model.state_dict().items()}
    save_file(state, f"{report}-rank{rank}.safetensors")
    with open(f"{report}-rank{rank}.json", "w") as f:
        json.dump({"logs": logs, "acc": [h.test_acc for h in r.history],
                   "loss": [h.train_loss for h in r.history],
                   "sync_bn": any(type(m).__name__ == "SyncBatchNorm" for m in r.model.modules()),
                   "device": str(next(r.model.parameters()).device)}, f)


def _ddp(tmp_path, name: str, settings: dict, world: int = 2) -> list[tuple[dict, dict]]:
    import json

    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    report = str(tmp_path / name)
    mp.start_processes(_ddp_worker, args=(world, _free_port(),
                                          {**settings, "out": str(tmp_path / name)}, report),
                       nprocs=world, start_method="spawn")
    return [(load_file(f"{report}-rank{r}.safetensors"),
             json.loads(open(f"{report}-rank{r}.json").read())) for r in range(world)]


def _single(tmp_path, name: str, settings: dict) -> tuple[dict, list]:
    from cnnlab.engine.train import fit

    r = fit(build_config(None, {**settings, "out": str(tmp_path / name)}), log=lambda _m: None)
    return {k: v.detach().cpu() for k, v in r.model.state_dict().items()}, r.history


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a
               if a[k].is_floating_point())


def test_two_processes_sharing_a_gpu_with_gloo_train_what_one_process_trains(
        tmp_path, exact_fp32):
    """DDP on CUDA tensors (gloo, so both ranks may use the one GPU of the test machine);
    --cuda-graphs is set and must fall back to eager steps under DDP, with a message."""
    settings = {**DDP, "model": "mnist-net"}
    one, history = _single(tmp_path, "single", settings)
    (w0, r0), (w1, r1) = _ddp(tmp_path, "ddp", {**settings, "dist_backend": "gloo",
                                                "cuda_graphs": True})
    assert r0["device"].startswith("cuda") and r1["device"].startswith("cuda")
    assert any("DDP: 2 processes (gloo)" in m for m in r0["logs"]), r0["logs"]
    assert any("cuda_graphs is not used under DDP" in m for m in r0["logs"])
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # every rank holds the same weights
    assert _max_diff(w0, one) < 1e-4, _max_diff(w0, one)
    assert r0["loss"] == pytest.approx([h.train_loss for h in history], abs=1e-4)
    assert r0["acc"] == r1["acc"]
    assert r0["acc"] == pytest.approx([h.test_acc for h in history], abs=0.02)


def test_sync_bn_on_cuda_normalises_by_the_global_batch(tmp_path, exact_fp32):
    """With --sync-bn, 2 processes of half a batch each train what one process trains (the
    batch statistics are the global batch's); without it, each normalises by its half."""
    settings = {**DDP, "model": "lenet-bn", "dist_backend": "gloo"}
    one, _ = _single(tmp_path, "single", settings)
    (synced, rs), _ = _ddp(tmp_path, "sync", {**settings, "sync_bn": True})
    (apart, ra), _ = _ddp(tmp_path, "apart", settings)
    assert rs["sync_bn"] and not ra["sync_bn"]
    d_sync, d_apart = _max_diff(synced, one), _max_diff(apart, one)
    assert d_sync < 1e-3 and d_apart > 10 * d_sync, (d_sync, d_apart)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs a GPU per process")
def test_two_gpus_with_nccl_train_what_one_gpu_trains(tmp_path, exact_fp32):
    settings = {**DDP, "model": "mnist-net"}
    one, _ = _single(tmp_path, "single", settings)
    (w0, r0), (w1, r1) = _ddp(tmp_path, "nccl", settings)
    assert any("DDP: 2 processes (NCCL + gloo)" in m for m in r0["logs"]), r0["logs"]
    assert r0["device"] == "cuda:0" and r1["device"] == "cuda:1"
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert _max_diff(w0, one) < 1e-4


def _mixed_group_worker(_rank: int, store: str, out: str) -> None:
    import json

    import torch.distributed as tdist

    from cnnlab.distributed import Dist, backend_name, process_group_backend
    from cnnlab.errors import CnnlabError

    tdist.init_process_group(process_group_backend(torch.device("cuda", 0)),
                             init_method=f"file://{store}", rank=0, world_size=1)
    job = Dist(0, 2, 0)  # "enabled", so every call below goes through the process group
    job.agree(None)  # a CPU flag: NCCL alone would refuse it
    host = job.sum_(torch.tensor([3]))
    gpu = job.sum_(torch.ones(4, device="cuda"))
    try:
        job.agree(CnnlabError("boom"))
        raised = ""
    except CnnlabError as e:
        raised = str(e)
    with open(out, "w") as f:
        json.dump({"backend": backend_name(), "host": host.tolist(), "gpu": gpu.tolist(),
                   "raised": raised}, f)
    tdist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_nccl_available(), reason="no NCCL in this build")
def test_on_gpus_host_tensors_go_through_gloo_and_cuda_tensors_through_nccl(tmp_path):
    import json

    import torch.multiprocessing as mp

    mp.start_processes(_mixed_group_worker, args=(str(tmp_path / "store"), str(tmp_path / "o")),
                       nprocs=1, start_method="spawn")
    got = json.loads((tmp_path / "o").read_text())
    assert got == {"backend": "NCCL + gloo", "host": [3], "gpu": [1.0] * 4, "raised": "boom"}


def test_nproc_on_one_gpu_asks_for_gloo_or_fewer_processes_and_runs_with_gloo(tmp_path):
    import subprocess
    import sys

    base = [sys.executable, "-m", "cnnlab", "train", "--nproc", "2", "--device", "cuda",
            "--epochs", "1", "--limit-train", "512"]
    if torch.cuda.device_count() == 1:
        r = subprocess.run([*base, "--out", str(tmp_path / "nccl")], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 1 and "--dist-backend gloo" in r.stdout + r.stderr
        assert not (tmp_path / "nccl").exists()
    r = subprocess.run([*base, "--dist-backend", "gloo", "--out", str(tmp_path / "gloo")],
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "DDP: 2 processes (gloo)" in out and (tmp_path / "gloo" / "model.safetensors").exists()
