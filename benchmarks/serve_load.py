"""Load test of `cnnlab serve`: requests/sec and latency with batching on and off.

    python benchmarks/serve_load.py [--run RUN] [--clients 16] [--seconds 15] [--rounds 2]
                                    [--device cpu|cuda]

Starts the real command (`python -m cnnlab serve RUN`, on 127.0.0.1) once per mode, waits for
``/ready``, then drives it from another process: ``--clients`` threads, each with its own
keep-alive connection, upload real MNIST test digits as PNG files (multipart, as a browser or
``curl -F`` sends them) back to back for ``--seconds`` after a short warm-up. Prints
requests/sec, p50/p99 latency, the error count (anything but a 200 with an answer) and the
server's mean batch size, for batching on (the default settings) and off (``--no-batching``:
one forward pass per request), alternating the modes ``--rounds`` times, then the ratio.

Without ``--run`` it first trains the ``mnist-fast`` recipe (about 10 s) into a temporary
folder. MNIST is read from ``--data-dir`` / ``$CNNLAB_DATA``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BOUNDARY = "cnnlab-load-test"


def _multipart(png: bytes) -> bytes:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            "filename=\"digit.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    return head + png + f"\r\n--{BOUNDARY}--\r\n".encode()


def mnist_pngs(data_dir: str | None, n: int = 512) -> list[bytes]:
    """The first ``n`` MNIST test digits as PNG files."""
    from PIL import Image

    from cnnlab.data import load_split

    images = load_split("mnist", "test", data_dir).images[:n, 0].numpy()
    out = []
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _client(port: int, bodies: list[bytes], seconds: float, warmup: float, results: list,
            start: threading.Barrier, index: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    start.wait()
    t0 = time.perf_counter()
    i = index
    latencies, errors = [], 0
    while True:
        now = time.perf_counter()
        if now - t0 > warmup + seconds:
            break
        body = bodies[i % len(bodies)]
        i += 7
        try:
            conn.request("POST", "/predict", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            ok = resp.status == 200 and b'"top"' in data
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        done = time.perf_counter()
        if done - t0 > warmup:  # count only requests finished after the warm-up
            if ok:
                latencies.append(done - now)
            else:
                errors += 1
    conn.close()
    results.append((latencies, errors))


def drive(port: int, pngs: list[bytes], clients: int, seconds: float, warmup: float,
          out: mp.Queue) -> None:
    """In its own process: ``clients`` threads hammering the server; puts the summary."""
    bodies = [_multipart(p) for p in pngs]
    results: list = []
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=_client, args=(port, bodies, seconds, warmup, results,
                                                      barrier, k)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [float("nan")] * 99
    out.put({"requests": len(lat), "errors": errors, "rps": len(lat) / seconds,
             "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def one_mode(run: str, batching: bool, pngs: list[bytes], args: argparse.Namespace) -> dict:
    port = _free_port()
    cmd = [sys.executable, "-m", "cnnlab", "serve", run, "--port", str(port), "--device",
           args.device]
    if not batching:
        cmd.append("--no-batching")
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):
            if server.poll() is not None:  # it exited (a missing extra, a bad run): say why
                raise SystemExit(f"`cnnlab serve` exited with {server.returncode}:\n"
                                 f"{server.communicate()[0][-3000:]}")
            try:
                if _get(port, "/ready").get("ready"):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the server did not become ready in 60 s")
        out: mp.Queue = mp.get_context("spawn").Queue()
        client = mp.get_context("spawn").Process(
            target=drive, args=(port, pngs, args.clients, args.seconds, args.warmup, out))
        client.start()
        result = out.get(timeout=args.seconds + args.warmup + 120)
        client.join()
        stats = _get(port, "/health")
        result["mean_batch"] = stats["mean_batch"]
        result["largest_batch"] = stats["largest_batch"]
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[0]
    if "Traceback" in log:
        print(log[-3000:], file=sys.stderr)
    result["mode"] = "batching on" if batching else "batching off"
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a run directory (default: train mnist-fast first)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="where the service runs the model")
    args = p.parse_args()
    pngs = mnist_pngs(args.data_dir)
    run = args.run
    tmp = None
    if run is None:
        import cnnlab

        tmp = tempfile.TemporaryDirectory()
        run = str(Path(tmp.name) / "mnist-fast")
        print("training mnist-fast for the service ...", flush=True)
        cnnlab.train("mnist-fast", out=run, data_dir=args.data_dir)
    import torch

    print(f"cnnlab serve {run} on {args.device}: {args.clients} clients, {args.seconds:g} s per "
          f"mode after {args.warmup:g} s warm-up; torch {torch.__version__}, {os.cpu_count()} "
          "CPUs")
    rows = []
    for r in range(args.rounds):
        for batching in (True, False):
            row = one_mode(run, batching, pngs, args)
            row["round"] = r + 1
            rows.append(row)
            print(f"round {r + 1}  {row['mode']:<13} {row['rps']:8.1f} req/s  p50 "
                  f"{row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  errors "
                  f"{row['errors']}  mean batch {row['mean_batch']:.1f} (largest "
                  f"{row['largest_batch']})", flush=True)
    on = statistics.mean(r["rps"] for r in rows if r["mode"] == "batching on")
    off = statistics.mean(r["rps"] for r in rows if r["mode"] == "batching off")
    errors = sum(r["errors"] for r in rows)
    print(f"batching on / off: {on:.1f} / {off:.1f} req/s = {on / off:.2f}x; errors {errors}")
    if tmp is not None:
        tmp.cleanup()
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
