"""The FastAPI application behind `cnnlab serve`.

Routes: ``POST /predict`` (multipart upload, a JSON body ``{"image": BASE64}``, or the raw
image bytes as the body) -> top-k JSON; ``GET /health`` (the process is alive); ``GET
/ready`` (200 once the model is loaded and warmed up, 503 before); ``GET /model`` (name,
classes, input shape, preprocessing, the run's final metrics); ``GET /`` the drawing page.

This module needs the ``serve`` extra (FastAPI, uvicorn, python-multipart); the CLI checks
for it first. Every error is a JSON body ``{"error": "..."}`` with a fitting status and never a traceback:
413 for a body over the cap (checked on the raw bytes, before any parsing) or an image with
too many pixels, 415 for bytes that are not PNG/JPEG/WebP/GIF, 400 for a corrupt image or a
malformed request, 503 while warming up, 500 (details in the server log only) otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from cnnlab.data.images import looks_blank, model_view
from cnnlab.engine.predict import reads_digits
from cnnlab.errors import CnnlabError
from cnnlab.run import LoadedRun
from cnnlab.serve.batcher import MicroBatcher
from cnnlab.serve.decode import UploadError, decode_upload, default_max_pixels, install_pillow_limits

log = logging.getLogger("cnnlab.serve")
ENV_CONFIG = "CNNLAB_SERVE_CONFIG"  # how `--workers N` hands the settings to each worker


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one service (the `cnnlab serve` options)."""

    run_dir: str
    device: str = "auto"
    max_upload_mb: float = 5.0
    max_pixels: int | None = None  # None: default_max_pixels(model input)
    max_batch: int = 32  # 1 turns batching off
    batch_window_ms: float = 2.0
    top_k: int = 3
    invert: str = "auto"


class BodyLimit:
    """Answer 413 to any request body over ``max_bytes``, before the app parses a byte of it.

    A declared Content-Length over the cap is refused without reading; a chunked body is
    counted as it arrives and refused as soon as it passes the cap. Accepted bodies are
    handed on whole (they are small: that is the point of the cap).
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, delivered = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        mb = self.max_bytes / 2**20
        body = json.dumps({"error": f"the request body is over {mb:g} MB; send a smaller image "
                                    "(the server's limit is --max-upload-mb)"},
                          separators=(",", ":")).encode()  # as JSONResponse writes it
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class Service:
    """The loaded run, its batcher and readiness: the state behind the routes."""

    def __init__(self, run: LoadedRun, cfg: ServeConfig):
        run.require_images("`cnnlab serve`")
        self.run = run
        self.cfg = cfg
        self.max_pixels = cfg.max_pixels or default_max_pixels(run.preprocess.input_shape)
        self.batcher = MicroBatcher(self._infer, cfg.max_batch, cfg.batch_window_ms)
        self.ready = threading.Event()
        self.failure: str | None = None  # why warming up failed: the service cannot answer

    def _infer(self, images: torch.Tensor) -> torch.Tensor:
        return self.run.logits(images).float().softmax(1).cpu()

    def warm_up(self) -> None:
        """A few forward passes at the batch sizes the batcher makes, then ready; a failure
        (out of memory, a broken model) is logged and reported by /health, /ready and
        /predict instead of leaving the service "warming up" for ever."""
        c, h, w = self.run.preprocess.input_shape
        try:
            for n in sorted({1, 2, min(8, self.cfg.max_batch), self.cfg.max_batch}):
                self._infer(torch.zeros(n, c, h, w, dtype=torch.uint8))
        except Exception as e:
            self.failure = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            log.error("warming up the model failed; the service cannot answer", exc_info=e)
            return
        self.ready.set()
        log.info("model warmed up; ready")

    def view(self, data: bytes, invert: str, frame: bool) -> tuple[torch.Tensor, bool, bool]:
        """Upload bytes -> the uint8 image the model receives, whether it was inverted, and
        whether it is blank (one colour, or one dot: :func:`looks_blank`)."""
        picture = decode_upload(data, self.max_pixels)
        try:
            image, inverted = model_view(picture, self.run.preprocess, invert, frame)
        except CnnlabError as e:  # a request this model cannot take (frame on colour)
            raise UploadError(400, str(e)) from None
        return image, inverted, looks_blank(image, picture if frame else None)

    @property
    def digits(self) -> bool:
        """Whether the run reads MNIST-like digits (grey, light on dark, classes 0..9): then
        the drawing page offers framing like MNIST, ticked."""
        return reads_digits(self.run)

    def describe(self) -> dict[str, Any]:
        run, last = self.run, (self.run.history[-1] if self.run.history else None)
        metrics = None
        if last is not None:
            metrics = {"epochs": last.epoch, "train_loss": last.train_loss,
                       "train_acc": last.train_acc, "test_loss": last.test_loss,
                       "test_acc": last.test_acc}
        # dataset: the config's name (folder); dataset_title: as titles name it (folder 'letters')
        return {"model": run.config.model, "dataset": run.config.dataset,
                "dataset_title": run.config.dataset_title(),
                "run": run.run_dir.path.name, "classes": list(run.classes),
                "input_shape": list(run.preprocess.input_shape),
                "preprocess": run.preprocess.to_dict(), "metrics": metrics,
                "framing": {"available": run.preprocess.channels == 1, "digits": self.digits},
                "limits": {"max_upload_mb": self.cfg.max_upload_mb, "max_pixels": self.max_pixels},
                "batching": {"max_batch": self.cfg.max_batch,
                             "window_ms": self.cfg.batch_window_ms}}


def _png_data_url(image: torch.Tensor) -> str:
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    pic = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def _image_bytes(request: Request) -> bytes:
    """The image in a request: a multipart file, JSON ``{"image": BASE64}`` or the raw body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as e:  # python-multipart's parse errors have several types
            why = getattr(e, "detail", None) or type(e).__name__
            raise UploadError(400, f"malformed multipart body ({why}); send the image as a "
                                   "file field, e.g. curl -F file=@digit.png") from None
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise UploadError(400, "the multipart body has no file; send the image as a file "
                                   "field (e.g. curl -F file=@digit.png)")
        _no_options_in_body({k for k, v in form.multi_items() if not isinstance(v, UploadFile)})
        return await files[0].read()
    if kind == "application/json":
        shape = '{"image": "<base64 of a PNG, JPEG, WebP or GIF file>"}'
        try:
            payload = json.loads(await request.body())
        except ValueError:
            raise UploadError(400, f"the body is not valid JSON; send {shape}") from None
        text = payload.get("image") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            raise UploadError(400, f'the JSON body has no "image" string; send {shape}')
        _no_options_in_body(set(payload) - {"image"})
        if text.startswith("data:"):  # a data URL, as canvas.toDataURL() gives
            text = text.partition(",")[2]
        text = "".join(text.split())  # line breaks are normal in base64 (MIME, `base64`)
        if "-" in text or "_" in text:  # the URL-safe alphabet (RFC 4648 section 5)
            text = text.replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (ValueError, binascii.Error):
            raise UploadError(400, f'"image" is not valid base64; send {shape}') from None
    return await request.body()


OPTIONS = ("top_k", "invert", "frame", "show_input")  # the query parameters of /predict


def _no_options_in_body(fields: set[str]) -> None:
    """A 400 for fields beside the image: options go in the query string, and one silently
    ignored (``{"image": ..., "top_k": 1}`` answering with 3 classes) is worse than an error."""
    if not fields:
        return
    names = ", ".join(sorted(fields))
    known = [f for f in sorted(fields) if f in OPTIONS]
    hint = (f"put {', '.join(known)} in the query string, e.g. /predict?{known[0]}=..." if known
            else f"the body holds only the image; the options are {', '.join(OPTIONS)} in the "
                 "query string")
    raise UploadError(400, f"unexpected field(s) {names} beside the image; {hint}")


def _query_bool(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}.get(raw.strip().lower())
    if value is None:
        raise UploadError(400, f"{name} must be 1 or 0 (true/false, yes/no), got '{raw}'")
    return value


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return min(default, high)
    if raw == "all":
        return high
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value:
        raise UploadError(400, f"{name} must be a whole number >= {low} (or 'all'), got '{raw}'")
    return min(value, high)


# /predict reads its body itself (three forms, capped before parsing), so FastAPI cannot
# infer its schema: this describes it for /openapi.json and the /docs page
PREDICT_OPENAPI: dict[str, Any] = {
    "parameters": [
        {"name": "top_k", "in": "query", "schema": {"type": "string", "default": "3"},
         "description": "classes to return: a number, or 'all'"},
        {"name": "invert", "in": "query",
         "schema": {"type": "string", "enum": ["auto", "yes", "no"], "default": "auto"},
         "description": "auto: invert dark-on-light drawings for a light-on-dark model"},
        {"name": "frame", "in": "query", "schema": {"type": "boolean", "default": False},
         "description": "frame a digit as MNIST's were (20x20 box, centred on its centre of "
                        "mass); grey models only"},
        {"name": "show_input", "in": "query", "schema": {"type": "boolean", "default": False},
         "description": "also return the model's input image as a PNG data URL"}],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}}},
        "application/json": {"schema": {"type": "object", "properties": {
            "image": {"type": "string", "description": "base64 of the image file"}}}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
}


def create_app(run: LoadedRun, cfg: ServeConfig) -> FastAPI:
    """The FastAPI application serving ``run`` with the settings ``cfg``."""
    service = Service(run, cfg)
    install_pillow_limits(service.max_pixels)
    for noisy in ("multipart", "python_multipart"):  # a malformed upload is the client's 400,
        logging.getLogger(noisy).setLevel(logging.ERROR)  # not a warning in the server log
    page = resources.files("cnnlab.serve").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app: Any):
        await service.batcher.start()
        warm = asyncio.get_running_loop().run_in_executor(None, service.warm_up)
        yield
        await warm
        await service.batcher.close()

    app = FastAPI(title="cnnlab serve", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service

    @app.exception_handler(UploadError)
    async def _upload_error(_r: Request, e: UploadError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    routes = "POST /predict; GET /, /model, /health, /ready, /docs, /openapi.json"

    @app.exception_handler(HTTPException)
    async def _http_error(_r: Request, e: HTTPException) -> JSONResponse:
        detail = str(e.detail)
        if e.status_code in (404, 405):
            detail = f"{detail}; this service has {routes}"
        return JSONResponse({"error": detail}, status_code=e.status_code,
                            headers=getattr(e, "headers", None))  # 405 keeps its Allow header

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> JSONResponse:
        first = (e.errors() or [{"msg": "invalid request"}])[0]
        return JSONResponse({"error": str(first.get("msg"))}, status_code=400)

    @app.exception_handler(Exception)
    async def _crash(_r: Request, e: Exception) -> JSONResponse:
        log.error("request failed", exc_info=e)  # the traceback stays in the server's log
        return JSONResponse({"error": "internal error; the server log has the details"},
                            status_code=500)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse,
                   include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Alive; with request and batch counts of this process (``pid``: with --workers N,
        each request may reach another process)."""
        return {"status": "error" if service.failure else "ok", "ready": service.ready.is_set(),
                **({"error": service.failure} if service.failure else {}),
                "pid": os.getpid(), **service.batcher.stats.to_dict()}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """200 once the model is loaded and warmed up; 503 before (or if that failed)."""
        if service.ready.is_set():
            return JSONResponse({"ready": True})
        why = (f"warming up the model failed ({service.failure})" if service.failure
               else "the model is warming up")
        return JSONResponse({"ready": False, "error": why}, status_code=503)

    # HEAD for the probes: routes of their own, out of the schema (one route with both
    # methods gives both one operation id, and FastAPI warns of the duplicate)
    for path, answer in (("/health", health), ("/ready", ready)):
        app.add_api_route(path, answer, methods=["HEAD"], include_in_schema=False)

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return service.describe()

    @app.post("/predict", openapi_extra=PREDICT_OPENAPI)
    async def predict(request: Request) -> dict[str, Any]:
        """Top-k classes of one image. Query: ``top_k`` (or ``all``), ``invert``
        (auto|yes|no), ``frame=1`` to frame a digit like MNIST, ``show_input=1`` to get the
        model-input image as a PNG data URL."""
        if service.failure:
            raise UploadError(503, f"the model could not be warmed up ({service.failure}); "
                                   "see the server log")
        if not service.ready.is_set():
            raise UploadError(503, "the model is still warming up; retry in a moment")
        start = time.perf_counter()
        k = _query_int(request, "top_k", cfg.top_k, 1, len(run.classes))
        invert = request.query_params.get("invert", cfg.invert)
        if invert not in ("auto", "yes", "no"):
            raise UploadError(400, f"invert must be auto, yes or no, got '{invert}'")
        frame = _query_bool(request, "frame", False)
        show_input = _query_bool(request, "show_input", False)
        twice = [k for k in OPTIONS if len(request.query_params.getlist(k)) > 1]
        if twice:
            raise UploadError(400, f"{', '.join(twice)} given more than once; give each "
                                   "option once")
        unknown = set(request.query_params) - set(OPTIONS)
        if unknown:
            raise UploadError(400, f"unknown query parameter(s) {', '.join(sorted(unknown))}; "
                                   f"/predict takes {', '.join(OPTIONS)}")
        data = await _image_bytes(request)
        image, inverted, blank = await run_in_threadpool(service.view, data, invert, frame)
        probs = await service.batcher.submit(image)
        p, idx = probs.topk(k)
        out: dict[str, Any] = {
            "top": [{"class": run.classes[i], "probability": round(float(q), 6)}
                    for q, i in zip(p.tolist(), idx.tolist(), strict=True)],
            "inverted": inverted, "blank": blank}
        if show_input:
            out["input"] = _png_data_url(image)
        out["ms"] = round((time.perf_counter() - start) * 1000, 2)
        return out

    return app


def app_from_env() -> Any:
    """Application factory for uvicorn's worker processes (``--workers N``): each loads the
    run named in ``$CNNLAB_SERVE_CONFIG``."""
    from cnnlab.run import load_run

    cfg = ServeConfig(**json.loads(os.environ[ENV_CONFIG]))
    return BodyLimit(create_app(load_run(cfg.run_dir, cfg.device), cfg),
                     int(cfg.max_upload_mb * 2**20))
