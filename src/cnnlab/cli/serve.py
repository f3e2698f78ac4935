"""`cnnlab serve RUN`: the run behind HTTP (FastAPI + uvicorn, the ``serve`` extra)."""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import os
import socket
from dataclasses import asdict
from pathlib import Path

import click
from rich.text import Text

from cnnlab.cli import cli
from cnnlab.cli.console import console
from cnnlab.errors import CnnlabError


def _check_free(host: str, port: int) -> int:
    """Fail in one line now, rather than after loading, when the address cannot be bound;
    returns the port (a free one chosen by the system for ``--port 0``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    not_here = (f"--host {host} is not an address of this machine; use 127.0.0.1 (this "
                "machine only) or 0.0.0.0 (all interfaces)")
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except socket.gaierror:
            raise CnnlabError(not_here) from None
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise CnnlabError(not_here) from None
            raise CnnlabError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick "
                              "another --port, or stop what is using it") from None
        return s.getsockname()[1]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on; 0.0.0.0 exposes the service to the network")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-upload-mb", type=float, default=5.0, show_default=True,
              help="largest request body accepted (413 above it)")
@click.option("--max-pixels", type=int, default=None,
              help="largest image accepted, in pixels [default: 4096x the model's input, "
                   "at least 4 MP]")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="server processes, each with its own copy of the model")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="most concurrent requests run as one batch")
@click.option("--batch-window-ms", type=click.FloatRange(0, 1000), default=2.0, show_default=True,
              help="how long a request waits for others to batch with")
@click.option("--no-batching", is_flag=True, help="one forward pass per request")
@click.option("--top-k", type=click.IntRange(1, None), default=3, show_default=True,
              help="classes per answer unless the request asks (?top_k=K)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
@click.option("--access-log", is_flag=True,
              help="log every request (uvicorn's access log, with its start-up lines)")
def serve(run_dir: Path, host: str, port: int, max_upload_mb: float, max_pixels: int | None,
          workers: int, max_batch: int, batch_window_ms: float, no_batching: bool, top_k: int,
          device: str, access_log: bool) -> None:
    """Serve a trained run over HTTP, with a drawing page at / .

    POST /predict takes an image (multipart file, raw body, or JSON {"image": base64}) and
    answers the top-k classes; GET /model, /health and /ready describe the service.
    Concurrent requests are batched into one forward pass.
    """
    from cnnlab.extras import require_extra

    require_extra("fastapi", "serve", "cnnlab serve")
    uvicorn = require_extra("uvicorn", "serve", "cnnlab serve")
    require_extra("multipart", "serve", "cnnlab serve")
    from cnnlab.run import load_run
    from cnnlab.serve.app import ENV_CONFIG, BodyLimit, ServeConfig, create_app

    if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
        raise CnnlabError(f"--max-upload-mb must be a positive number, got {max_upload_mb}")
    if not math.isfinite(batch_window_ms):
        raise CnnlabError(f"--batch-window-ms must be a number of milliseconds, got "
                          f"{batch_window_ms}")
    if max_pixels is not None and max_pixels < 1:
        raise CnnlabError(f"--max-pixels must be positive, got {max_pixels}")
    cfg = ServeConfig(run_dir=str(run_dir.resolve()), device=device, max_upload_mb=max_upload_mb,
                      max_pixels=max_pixels, max_batch=1 if no_batching else max_batch,
                      batch_window_ms=batch_window_ms, top_k=top_k)
    port = _check_free(host, port)
    run = load_run(run_dir, device)  # a bad run directory fails here, in one line
    run.require_images("`cnnlab serve`")
    h, w = run.preprocess.size
    if max_pixels is not None and max_pixels < h * w:
        raise CnnlabError(f"--max-pixels {max_pixels} is below the model's own input ({w}x{h} "
                          f"= {h * w:,} pixels): no upload could have the detail the model "
                          f"reads; give at least {h * w}, or leave it out for the default")
    con = console()
    shown = f"[{host}]" if ":" in host else host
    con.print(Text.assemble("serving ", (run.config.model, "bold"),
                            f" ({run.run_dir.path.name}) on http://{shown}:{port}/  (draw at /, "
                            "API at /predict, Ctrl-C stops)"))
    if not _is_loopback(host):
        con.print(Text.assemble(("warning:", "yellow"), f" listening on {host}: anyone who can "
                                "reach this machine can use the service (from this machine: "
                                f"http://127.0.0.1:{port}/)"))
    limit = int(max_upload_mb * 2**20)
    log_level = "info" if access_log else "warning"
    if workers == 1:
        app = BodyLimit(create_app(run, cfg), limit)
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False,
                    access_log=access_log)
    else:
        os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
        uvicorn.run("cnnlab.serve.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers, log_level=log_level, server_header=False,
                    access_log=access_log)
