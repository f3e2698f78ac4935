"""DDP on CPU (gloo): 2 processes train exactly what 1 process trains with the same global
batch, only rank 0 writes, evaluation counts every example once, and a run killed with
SIGKILL resumes to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.engine.train import fit

# mnist-net has no BatchNorm: with BN each rank would normalise by its own half-batch
SETTINGS = {"model": "mnist-net", "dataset": "digits", "resize": 28, "epochs": 2,
            "batch_size": 64, "limit_train": 640 + 37, "limit_test": 101, "lr": 0.05,
            "crop_padding": 2, "device": "cpu", "threads": 1, "log_every": 4}


def _worker(rank: int, world: int, store: str, settings: dict, report: str) -> None:
    """One rank: what torchrun would set up, then `fit`; records the files it replaced into
    place (every cnnlab write ends in os.replace) and its final weights. The process group
    meets through a file (no port to race for); `fit` finds it already joined."""
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    written: list[str] = []
    real_replace = os.replace

    def spy(src, dst, *a, **k):
        written.append(str(dst))
        return real_replace(src, dst, *a, **k)

    os.replace = spy
    result = fit(build_config(None, dict(settings)), log=lambda _m: None)
    os.replace = real_replace
    state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, f"{report}-rank{rank}.safetensors")
    Path(f"{report}-rank{rank}.json").write_text(json.dumps(
        {"written": written, "history": [h.test_acc for h in result.history],
         "losses": [h.train_loss for h in result.history]}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run in 1 process and in 2 processes under DDP."""
    root = tmp_path_factory.mktemp("ddp")
    single = fit(build_config(None, {**SETTINGS, "out": str(root / "single")}),
                 log=lambda _m: None)
    report = str(root / "report")
    mp.start_processes(_worker, args=(2, str(root / "store"),
                                      {**SETTINGS, "out": str(root / "ddp")}, report),
                       nprocs=2, start_method="spawn")
    ranks = [(load_file(f"{report}-rank{r}.safetensors"),
              json.loads(Path(f"{report}-rank{r}.json").read_text())) for r in range(2)]
    return root, single, ranks


def test_two_processes_train_what_one_process_trains(runs):
    root, single, ranks = runs
    one = {k: v.detach() for k, v in single.model.state_dict().items()}
    (w0, r0), (w1, r1) = ranks
    for k in one:
        assert torch.equal(w0[k], w1[k]), k  # every rank holds the same weights
        torch.testing.assert_close(w0[k], one[k], rtol=0, atol=2e-5)  # fp sum order
    assert not torch.equal(one["conv1.weight"], torch.zeros_like(one["conv1.weight"]))
    assert r0["losses"] == pytest.approx([h.train_loss for h in single.history], abs=1e-5)
    saved = load_file(str(root / "ddp" / "model.safetensors"))
    assert all(torch.equal(saved[k], w0[k]) for k in saved)


def test_only_rank_0_writes(runs):
    root, _, ((_, r0), (_, r1)) = runs
    assert r1["written"] == []
    names = {Path(p).name for p in r0["written"]}
    assert {"config.yaml", "preprocess.json", "metrics.csv", "model.safetensors"} <= names
    assert all(str(root / "ddp") in p for p in r0["written"])


def test_distributed_evaluation_counts_each_test_example_once(runs):
    _, single, ((_, r0), (_, r1)) = runs
    # 101 test examples split 50 + 51: the same accuracy as one process, both ranks agree
    expected = [h.test_acc for h in single.history]
    assert r0["history"] == pytest.approx(expected, abs=1e-12)
    assert r1["history"] == r0["history"]
    assert all(abs(a * 101 - round(a * 101)) < 1e-9 for a in r0["history"])


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _wait_for(proc: subprocess.Popen, path: Path, seconds: float = 240) -> None:
    """Until ``path`` exists (an epoch's checkpoint), while ``proc`` still runs."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.005)


RESUME = ["--model", "mnist-net", "--dataset", "digits", "--resize", "28", "--epochs", "5",
          "--batch-size", "32", "--limit-train", "1024", "--limit-test", "64", "--device",
          "cpu", "--nproc", "2", "--keep-checkpoints", "0"]


def test_a_killed_ddp_run_resumes_to_the_same_weights(tmp_path):
    whole = _cli(*RESUME, "--out", str(tmp_path / "whole"))
    out = whole.communicate(timeout=300)[0]
    assert whole.returncode == 0, out

    psutil = pytest.importorskip("psutil")
    cut = tmp_path / "cut"
    proc = _cli(*RESUME, "--out", str(cut))
    _wait_for(proc, cut / "checkpoints" / "epoch-002.json")
    # the launcher and both ranks (torch's agent starts them in sessions of their own), at
    # once and without any clean-up
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    done = sorted(p.name for p in (cut / "checkpoints").glob("*.json"))
    assert "epoch-005.json" not in done  # it really was cut short
    resumed = _cli("--resume", str(cut), "--nproc", "2")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0 and "resuming" in out, out
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(cut / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]


def test_a_lost_rank_or_launcher_ends_the_job_in_a_few_lines(tmp_path):
    """A rank killed (out of memory, say) after a saved epoch: no traceback from the ranks
    that lose it, one line on why, and how to continue. The launcher killed (and left
    unreaped, so a zombie): its ranks end instead of training on as orphans."""
    psutil = pytest.importorskip("psutil")
    cut = tmp_path / "cut"
    proc = _cli(*RESUME, "--out", str(cut))
    _wait_for(proc, cut / "checkpoints" / "epoch-001.json")
    ranks = [c for c in psutil.Process(proc.pid).children(recursive=True)
             if c.environ().get("RANK") == "1"]
    ranks[0].send_signal(signal.SIGKILL)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert "another training process stopped" in out
    assert f"killed by SIGKILL (out of memory?); continue from its last epoch with " \
           f"`cnnlab train --resume {cut} --nproc 2`" in out

    proc = _cli(*RESUME, "--out", str(tmp_path / "orphans"))
    deadline = time.monotonic() + 240
    while len(ranks := [c for c in psutil.Process(proc.pid).children(recursive=True)
                        if "RANK" in c.environ()]) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # not waited for yet: a zombie
    gone, alive = psutil.wait_procs(ranks, timeout=15)
    assert not alive
    proc.communicate(timeout=60)


def test_sync_bn_is_refused_on_cpu():
    r = CliRunner().invoke(cli, ["train", "--sync-bn", "--device", "cpu", "--epochs", "1"])
    assert r.exit_code == 1 and "--sync-bn needs CUDA" in r.output


def test_nproc_checks_what_it_can_before_starting_processes():
    r = CliRunner().invoke(cli, ["train", "--nproc", "2", "--sync-bn", "--device", "cpu"])
    assert r.exit_code == 1 and "--sync-bn needs CUDA" in r.output
    r = CliRunner().invoke(cli, ["train", "--nproc", "2", "--batch-size", "1", "--device", "cpu"])
    assert r.exit_code == 1 and "make it at least 2" in r.output


def test_the_backend_is_nccl_for_cuda_tensors_and_gloo_for_host_tensors(monkeypatch):
    """NCCL alone refuses CPU tensors, and `Dist.agree` sums a CPU flag: on GPUs the group is
    mixed. gloo is the way to share a GPU between processes, or a CUDA build without NCCL."""
    import torch.distributed as tdist

    from cnnlab.distributed import check_gpu_count, process_group_backend
    from cnnlab.errors import CnnlabError

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert process_group_backend(cpu) == process_group_backend(cpu, "gloo") == "gloo"
    with pytest.raises(CnnlabError, match="nccl needs CUDA GPUs"):
        process_group_backend(cpu, "nccl")
    monkeypatch.setattr(tdist, "is_nccl_available", lambda: True)
    assert process_group_backend(cuda) == process_group_backend(cuda, "nccl") == \
        "cpu:gloo,cuda:nccl"
    assert process_group_backend(cuda, "gloo") == "gloo"
    monkeypatch.setattr(tdist, "is_nccl_available", lambda: False)
    assert process_group_backend(cuda) == "gloo"
    with pytest.raises(CnnlabError, match="no NCCL; use --dist-backend gloo"):
        process_group_backend(cuda, "nccl")

    check_gpu_count(2, 2, "cpu:gloo,cuda:nccl")
    check_gpu_count(4, 1, "gloo")  # gloo: four processes may share one GPU
    with pytest.raises(CnnlabError, match="this node has 1 GPU.*--dist-backend gloo"):
        check_gpu_count(2, 1, "cpu:gloo,cuda:nccl")


def test_nproc_refuses_nccl_on_cpu_and_unknown_backends():
    r = CliRunner().invoke(cli, ["train", "--nproc", "2", "--dist-backend", "nccl",
                                 "--device", "cpu"])
    assert r.exit_code == 1 and "--dist-backend nccl needs CUDA GPUs" in r.output
    r = CliRunner().invoke(cli, ["train", "--nproc", "2", "--dist-backend", "mpi", "--device",
                                 "cpu"])
    assert r.exit_code != 0 and "mpi" in r.output and "gloo" in r.output


def test_too_few_examples_for_one_step_is_an_error(tmp_path):
    cfg = build_config(None, {**SETTINGS, "limit_train": 10, "batch_size": 64,
                              "drop_last": True, "out": str(tmp_path / "r")})
    with pytest.raises(Exception, match=r"too few for one step .* lower --batch-size to 10 or "
                                        r"less, or add --no-drop-last, or raise --limit-train"):
        fit(cfg, log=lambda _m: None)
    assert not (tmp_path / "r").exists()


def test_a_bad_option_found_while_loading_stops_every_rank_with_one_error(tmp_path):
    """The input shape is checked while the data loads, which rank 0 does before the other
    ranks; they used to wait in a barrier and die there with gloo's traceback."""
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--nproc", "2", "--model",
                        "lenet5", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                        "--out", str(tmp_path / "r")], capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "pass --resize 28" in out and "Traceback" not in out and "gloo" not in out, out
    assert out.count("Error: model 'lenet5' takes 1x28x28") == 1, out
    assert not (tmp_path / "r").exists()


def test_two_nodes_meet_through_torchruns_rendezvous(tmp_path):
    """The multi-node command of the README, with both "nodes" on this host: two torchrun
    launchers, one process each, meeting at a c10d rendezvous on 127.0.0.1, train what one
    process trains."""
    import socket

    with socket.socket() as s:  # a free port (another program could take it: rare)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--model", "mnist-net", "--dataset", "digits", "--resize", "28", "--epochs", "2",
            "--limit-train", "640", "--limit-test", "101", "--lr", "0.05", "--threads", "1",
            "--device", "cpu"]  # gloo on CPU also where there are GPUs
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                f"127.0.0.1:{port}", "--rdzv-id", "cnnlab-test", "-m", "cnnlab", "train",
                *args, "--out", str(tmp_path / "nodes")]
    nodes = [subprocess.Popen(torchrun, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs
    assert sum("DDP: 2 processes (gloo)" in o for o in outs) == 1, outs  # rank 0 alone prints
    r = CliRunner().invoke(cli, ["train", *args, "--out", str(tmp_path / "one")])
    assert r.exit_code == 0, r.output
    two, one = (load_file(tmp_path / d / "model.safetensors") for d in ("nodes", "one"))
    assert max((two[k] - one[k]).abs().max().item() for k in one) < 2e-5


def test_other_commands_refuse_to_run_under_torchrun(lenet_run):
    env = {"WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}
    r = CliRunner().invoke(cli, ["eval", str(lenet_run)], env={**env, "RANK": "0"})
    assert r.exit_code == 1 and "only `cnnlab train` runs in several processes" in r.output
    r = CliRunner().invoke(cli, ["eval", str(lenet_run)], env={**env, "RANK": "1"})
    assert r.exit_code == 1 and r.output == ""  # said once, by rank 0


def test_more_threads_than_cores_is_said(tmp_path):
    threads, before = 2 * (os.cpu_count() or 1), torch.get_num_threads()
    try:
        r = CliRunner().invoke(cli, ["train", "--threads", str(threads), "--epochs", "1",
                                     "--limit-train", "64", "--device", "cpu",  # also on a GPU box
                                     "--out", str(tmp_path / "r")])
    finally:
        torch.set_num_threads(before)  # the process's setting: later tests must not share it
    assert r.exit_code == 0, r.output
    assert f"--threads {threads} asks for {threads} CPU threads on" in r.output


def test_a_model_that_freezes_a_layer_between_epochs_trains_under_ddp(tmp_path):
    """airbench trains its whitening bias for 3 epochs, then freezes it. DDP waits for a
    gradient of every parameter it hooked, so epoch 4 used to fail on every rank ("Expected to
    have finished reduction in the prior iteration"); the model is now wrapped anew."""
    out = tmp_path / "air"
    proc = _cli("--model", "airbench-small", "--dataset", "digits", "--channels", "3",
                "--resize", "32", "--epochs", "4", "--batch-size", "32", "--limit-train", "128",
                "--limit-test", "32", "--device", "cpu", "--nproc", "2", "--keep-checkpoints",
                "0", "--out", str(out))
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    bias = {n: load_file(str(out / "checkpoints" / f"epoch-00{n}.safetensors"))["model.0.bias"]
            for n in (1, 3, 4)}
    assert not torch.equal(bias[1], bias[3])  # it trained in epochs 1-3
    assert torch.equal(bias[3], bias[4])  # and was frozen in epoch 4


def test_nproc_does_not_need_a_resolvable_hostname(tmp_path):
    """In many containers the machine's own name does not resolve. torch's launcher names the
    node by getfqdn() unless told otherwise, and then retried for minutes; `--nproc` is one
    node, so its ranks meet on 127.0.0.1."""
    script = tmp_path / "bad_host.py"
    script.write_text(
        "import socket, sys\n"
        "socket.getfqdn = lambda *a: 'no-such-host.invalid'\n"
        "from cnnlab.cli import main\n"
        "sys.argv = ['cnnlab', 'train', '--nproc', '2', '--device', 'cpu', '--epochs', '1',\n"
        "            '--limit-train', '64', '--threads', '1', '--out', sys.argv[1]]\n"
        "main()\n")
    t = time.monotonic()
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t < 60 and "gai error" not in r.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
