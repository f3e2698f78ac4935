"""Exporting a trained run to ONNX or TorchScript, verified against PyTorch before it is kept.

An exported file is only useful if it computes what the run computes, for any batch size. So
every export is checked at once: the exported file is loaded back (onnxruntime for ONNX,
``torch.jit.load`` for TorchScript) and run on real test images of the run's data set at
batch sizes 1, 2 and 7 (the classic bug is a batch axis frozen at the size of the dummy
input, hence a dummy batch of 2 and the checks at other sizes), next to the PyTorch model on
the same input. The file is kept only when every row agrees; the result is written beside it
as ``FILE.json`` (the *sidecar*), so whoever deploys the file knows its input, its
preprocessing, its classes and how it was checked.

The model is exported in eval mode on the CPU in fp32 and the standard memory format,
whatever it was trained in. By default the exported graph takes the *normalised* float32
tensor (``x/255`` minus mean over std, as :class:`~cnnlab.data.preprocess.Preprocess` makes
it); ``with_preprocess=True`` folds the normalisation into the graph so a client sends raw
uint8 pixels, already at the model's size and channel count.

A time-series run exports the same way: its graph takes float32 (N, C, L) series, already
z-normalised per series and channel, or, with ``with_preprocess=True``, raw series that the
graph z-normalises itself (:class:`RawSeries`).

onnx, onnxscript and onnxruntime are the optional ``export`` extra, imported only here.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data.preprocess import Preprocess, SeriesPreprocess, znormalise
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_path, write_json

#: format name -> (default file name inside the run directory, accepted suffix)
FORMATS: dict[str, tuple[str, str]] = {
    "onnx": ("model.onnx", ".onnx"),
    "torchscript": ("model.torchscript.pt", ".pt"),
}

#: batch sizes every export is checked at: 1 and 7 differ from the dummy batch (2)
VERIFY_BATCHES: tuple[int, ...] = (1, 2, 7)

#: Largest accepted |exported - PyTorch| over all logits. fp32 kernels that add in another
#: order (onnxruntime's fused convolutions, oneDNN) differ by ~1e-7..1e-5 on logits of the size
#: a classifier produces; 1e-3 leaves two orders of magnitude of room for that, and is still
#: far below any difference that comes from a wrong graph (a missing normalisation, a frozen
#: batch axis, a dropped layer), which moves logits by 0.1 and more.
ATOL = 1e-3

DUMMY_BATCH = 2  # > 1: an exporter must not be able to specialise the batch axis to 1
RANDOM_SEED = 0


@dataclass(frozen=True)
class VerifyRow:
    """One verification batch: the exported file against PyTorch on the same input."""

    batch: int
    max_abs_diff: float
    top1_agreement: float  # fraction of images whose argmax is the same


@dataclass
class ExportReport:
    """What :func:`export_model` / :func:`export_run` wrote, and how it was checked.
    :meth:`to_dict` is the sidecar ``FILE.json`` (its ``file`` is the name only: the sidecar
    lies beside the file and moves with it)."""

    format: str
    file: Path
    model: str
    classes: list[str]
    input: dict[str, Any]
    output: dict[str, Any]
    preprocess: dict[str, Any]
    images: dict[str, Any]  # which images the check used (real test images, or why not)
    verification: list[VerifyRow]
    tolerance: float
    verified: bool
    versions: dict[str, str]
    opset: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.file)

    @property
    def max_abs_diff(self) -> float:
        return max(r.max_abs_diff for r in self.verification)

    @property
    def top1_agreement(self) -> float:
        return min(r.top1_agreement for r in self.verification)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "file": self.file.name, "model": self.model,
            "classes": self.classes, "input": self.input, "output": self.output,
            "preprocess": self.preprocess,
            **({"opset": self.opset} if self.format == "onnx" else {}),
            "versions": self.versions, "images": self.images,
            "verification": [asdict(r) for r in self.verification],
            "tolerance": {"max_abs_diff": self.tolerance, "top1_agreement": 1.0},
            "verified": self.verified, "seconds": self.seconds,
        }


def sidecar_path(file: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    file = Path(file)
    return file.with_name(file.name + ".json")


def output_path(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Where ``fmt`` goes: ``out`` (its suffix must fit the format) or the run's default name."""
    default, suffix = _format(fmt)
    if out is None:
        return Path(run_dir) / default
    folder = str(out).endswith(("/", os.sep))  # "deploy/": a folder, made if missing
    out = Path(out)
    if out.is_dir() or folder:  # a folder: the default name inside it
        return out / default
    if out.suffix.lower() != suffix:
        raise CnnlabError(f"--out {out} does not fit --format {fmt}: {fmt} files end in "
                          f"{suffix} (e.g. {Path(out).with_suffix('').name}{suffix})")
    return out


def _format(fmt: str) -> tuple[str, str]:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise CnnlabError(f"unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    return FORMATS[fmt]


def require_onnx() -> tuple[Any, Any]:
    """(onnx, onnxruntime), or the one-line error naming ``cnnlab[export]``."""
    from cnnlab.extras import require_extra

    onnx = require_extra("onnx", "export", "--format onnx")
    require_extra("onnxscript", "export", "--format onnx")  # torch's ONNX exporter needs it
    ort = require_extra("onnxruntime", "export", "--format onnx")
    return onnx, ort


# ------------------------------------------------------------------------- the graph
class RawPixels(nn.Module):
    """uint8 pixels (N, C, H, W), already at the model's size -> logits: the run's
    normalisation (``x * scale + shift``, see :meth:`Preprocess.scale_shift`) folded in front
    of the model, so the exported graph needs no preprocessing code on the client."""

    def __init__(self, model: nn.Module, preprocess: Preprocess):
        super().__init__()
        scale, shift = preprocess.scale_shift()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.float() * self.scale + self.shift)


class RawSeries(nn.Module):
    """float32 series (N, C, L) of the run's shape -> logits: each series and channel
    z-normalised in the graph by :func:`cnnlab.data.preprocess.znormalise` itself (float64,
    flat series to zeros), so a client sends the raw values."""

    def __init__(self, model: nn.Module, preprocess: SeriesPreprocess):
        super().__init__()
        self.model = model
        self.znorm = preprocess.znorm
        self.eps = preprocess.EPS

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        return self.model(znormalise(series, self.eps) if self.znorm else series)


def export_module(model: nn.Module, preprocess: Preprocess | SeriesPreprocess,
                  with_preprocess: bool) -> nn.Module:
    """An eval-mode fp32 CPU copy of ``model`` in the standard memory format (the caller's model
    is left as it is), wrapped in :class:`RawPixels` (:class:`RawSeries` for a series run)
    when ``with_preprocess``."""
    m = copy.deepcopy(model).cpu().float().to(memory_format=torch.contiguous_format).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    if not with_preprocess:
        return m.eval()
    return (RawSeries(m, preprocess) if preprocess.is_series else RawPixels(m, preprocess)).eval()


# ----------------------------------------------------------------------- the export
@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Silence the exporters' chatter (torch.onnx's "torchvision is not installed. Skipping
    torchvision::nms" log lines, FutureWarnings and TracerWarnings), so that the command
    prints only its own output. Errors still raise."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_onnx(module: nn.Module, dummy: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    with quiet_exporters():
        torch.onnx.export(module, (dummy,), str(path), dynamo=True,
                          dynamic_shapes=({0: batch},), input_names=["images"],
                          output_names=["logits"], external_data=False, verbose=False,
                          optimize=True)


class InputCheck(nn.Module):
    """A traced model behind a scripted check of its input's dtype and shape (all but the
    batch). A trace keeps no Python ``if``, so without this a TorchScript file takes any
    input: floats where it wants uint8 pixels (scaled by 255 again: wrong logits, no error),
    or another size (a fully convolutional net answers anyway). ONNX Runtime checks both."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, shape: tuple[int, ...]):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.shape = list(shape)
        self.expected = f"{str(dtype).removeprefix('torch.')} (batch, {', '.join(map(str, shape))})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.dtype:  # (TorchScript prints a dtype as a number: not shown)
            raise ValueError("this model takes " + self.expected + "; the input has another "
                             "dtype")
        if x.dim() != len(self.shape) + 1 or list(x.shape[1:]) != self.shape:
            raise ValueError("this model takes " + self.expected + ", got the shape "
                             + str(list(x.shape)))
        return self.model(x)


def _export_torchscript(module: nn.Module, dummy: torch.Tensor, path: Path) -> None:
    with quiet_exporters(), torch.no_grad():
        traced = torch.jit.trace(module, (dummy,), check_trace=False)
        traced = torch.jit.script(InputCheck(traced, dummy.dtype, tuple(dummy.shape[1:])))
        buf = io.BytesIO()  # torch's file writer aborts the process on a full disk; Python's
        torch.jit.save(traced, buf)  # write raises an OSError, which is reported in one line
    path.write_bytes(buf.getvalue())


Runner = Callable[[torch.Tensor], torch.Tensor]


def _onnx_runner(path: Path) -> Runner:
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])

    return run


def _torchscript_runner(path: Path) -> Runner:
    with quiet_exporters():  # torch 2.13 deprecates TorchScript with a warning on each load
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x)

    return run


_EXPORTERS = {"onnx": _export_onnx, "torchscript": _export_torchscript}
_RUNNERS: dict[str, Callable[[Path], Runner]] = {"onnx": _onnx_runner,
                                                 "torchscript": _torchscript_runner}


# ------------------------------------------------------------------- verification
def verification_batches(images: torch.Tensor,
                         sizes: Sequence[int] = VERIFY_BATCHES) -> list[torch.Tensor]:
    """Consecutive, disjoint slices of ``images`` of the given sizes (repeating the images
    when there are fewer than ``sum(sizes)``)."""
    need = sum(sizes)
    idx = torch.arange(need) % images.shape[0]
    pool = images[idx]
    out, start = [], 0
    for n in sizes:
        out.append(pool[start:start + n])
        start += n
    return out


def random_images(preprocess: Preprocess | SeriesPreprocess, n: int = sum(VERIFY_BATCHES),
                  seed: int = RANDOM_SEED) -> torch.Tensor:
    """Deterministic random uint8 images of the model's input shape (a series run: float32
    random walks of its shape, offset and scaled so that z-normalising them matters)."""
    g = torch.Generator().manual_seed(seed)
    if preprocess.is_series:
        steps = torch.randn((n, *preprocess.input_shape), generator=g)
        return steps.cumsum(-1) * 3.0 + 5.0
    return torch.randint(0, 256, (n, *preprocess.input_shape), generator=g, dtype=torch.uint8)


def model_input(preprocess: Preprocess | SeriesPreprocess, images: torch.Tensor) -> torch.Tensor:
    """The float32 tensor the exported graph takes without ``with_preprocess``: normalised
    images in the standard layout, or z-normalised series."""
    return preprocess(images) if preprocess.is_series else preprocess.normalise(images)


def verify(runner: Runner, reference: nn.Module, preprocess: Preprocess,
           batches: Sequence[torch.Tensor], with_preprocess: bool) -> list[VerifyRow]:
    """Each uint8 batch through the exported file and through PyTorch (``reference``: the
    run's model, fp32 on the CPU, in its own memory format) on the same input."""
    rows = []
    for images in batches:
        x = preprocess(images)  # the normalised float32 input, in the trained memory format
        with torch.no_grad():
            want = reference(x).float()
        got = runner(images if with_preprocess else x.contiguous()).float()  # images: raw
        if got.shape != want.shape:
            raise CnnlabError(f"the exported model gives logits of shape {tuple(got.shape)} for a "
                              f"batch of {images.shape[0]}, PyTorch {tuple(want.shape)}; the "
                              "export is broken (a fixed batch axis?)")
        rows.append(VerifyRow(int(images.shape[0]), float((got - want).abs().max()),
                              float((got.argmax(1) == want.argmax(1)).float().mean())))
    return rows


# ----------------------------------------------------------------------- front doors
def export_model(model: nn.Module, preprocess: Preprocess, classes: Sequence[str], fmt: str,
                 out: str | Path, *, with_preprocess: bool = False,
                 images: torch.Tensor | None = None, images_info: dict[str, Any] | None = None,
                 model_name: str = "", atol: float = ATOL) -> ExportReport:
    """Export ``model`` (any device, precision or memory format; it is not changed) to ``out``,
    verify the file against PyTorch at batch sizes 1, 2 and 7, and write ``out`` and its
    sidecar ``out + ".json"`` atomically.

    ``images`` are uint8 (N, C, H, W) verification images already at the model's input size
    (the run's test images; deterministic random ones when None), ``images_info`` says in the
    sidecar where they came from. On a failed check neither file is written (a previous export
    at ``out`` stays as it was) and a one-line :class:`CnnlabError` says by how much it failed.
    Needs no run directory, so tests and notebooks can export an in-memory model.
    """
    fmt = fmt.lower()
    _format(fmt)
    if fmt == "onnx":
        onnx, ort = require_onnx()
    out = Path(out)
    if images is None:
        images = random_images(preprocess)
        images_info = images_info or {"source": "random", "seed": RANDOM_SEED}
    series = preprocess.is_series
    dtype_ok = images.dtype == torch.float32 if series else images.dtype == torch.uint8
    if not dtype_ok or tuple(images.shape[1:]) != preprocess.input_shape:
        want = ", ".join(map(str, preprocess.input_shape))
        raise CnnlabError(f"verification {'series' if series else 'images'} must be "
                          f"{'float32' if series else 'uint8'} (N, {want}), got "
                          f"{images.dtype} {tuple(images.shape)}"
                          + ("" if series else "; adapt them first (Preprocess.adapt)"))
    module = export_module(model, preprocess, with_preprocess)
    reference = copy.deepcopy(model).cpu().float().eval()
    dummy = verification_batches(images, (DUMMY_BATCH,))[0]
    with torch.no_grad():  # the side file names one class per output
        outputs = reference(model_input(preprocess, dummy)).shape[-1]
    if outputs != len(classes):
        raise CnnlabError(f"the model gives {outputs} outputs but {len(classes)} class names "
                          "were given; give one name per output")
    if not with_preprocess:
        dummy = model_input(preprocess, dummy)
    versions = {"torch": torch.__version__}
    if fmt == "onnx":
        versions.update(onnx=onnx.__version__, onnxruntime=ort.__version__)
    seconds: dict[str, float] = {}
    with atomic_path(out) as tmp_file, atomic_path(sidecar_path(out)) as tmp_json:
        t0 = time.perf_counter()
        try:
            _EXPORTERS[fmt](module, dummy, tmp_file)
        except CnnlabError:
            raise
        except Exception as e:  # the exporters raise many types; give one line, keep the cause
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CnnlabError(f"{fmt} export of {model_name or 'the model'} failed "
                              f"({type(e).__name__}: {first})") from e
        if fmt == "onnx":  # before the check, so the checked file is the one kept
            _add_onnx_metadata(onnx, tmp_file, list(classes), client_preprocess(preprocess),
                               model_name, with_preprocess)
        seconds["export"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        rows = verify(_RUNNERS[fmt](tmp_file), reference, preprocess,
                      verification_batches(images), with_preprocess)
        seconds["verify"] = round(time.perf_counter() - t0, 3)
        opset = _onnx_opset(onnx, tmp_file) if fmt == "onnx" else None
        ok = all(r.top1_agreement == 1.0 and r.max_abs_diff <= atol for r in rows)
        report = ExportReport(
            format=fmt, file=out, model=model_name, classes=list(classes),
            input={"name": "images",
                   "dtype": "uint8" if with_preprocess and not series else "float32",
                   "shape": ["batch", *preprocess.input_shape], "with_preprocess": with_preprocess,
                   "range": _input_range(preprocess, with_preprocess)},
            output={"name": "logits", "dtype": "float32", "shape": ["batch", len(classes)]},
            preprocess=client_preprocess(preprocess), images=images_info or {"source": "given"},
            verification=rows, tolerance=atol, verified=ok, versions=versions, opset=opset,
            seconds=seconds)
        if not ok:
            worst = max(rows, key=lambda r: (1 - r.top1_agreement, r.max_abs_diff))
            raise CnnlabError(
                f"the {fmt} export does not match PyTorch (batch {worst.batch}: max abs diff "
                f"{worst.max_abs_diff:.3g}, allowed {atol:g}; top-1 agreement "
                f"{worst.top1_agreement:.3f}, needed 1.0); nothing was written")
        write_json(tmp_json, report.to_dict())
    return report


def _input_range(preprocess: Preprocess | SeriesPreprocess, with_preprocess: bool) -> str:
    if preprocess.is_series:
        return ("raw series values: the graph z-normalises each series and channel"
                if with_preprocess else "each series and channel z-normalised over time "
                "(minus its mean, over its population std; flat series: zeros)")
    if with_preprocess:
        return "0..255 raw pixels"
    return ("normalised: (x/255 - mean)/std, see preprocess" if preprocess.mean is not None
            else "x/255: pixels scaled to 0..1 (this run was trained without normalisation)")


def client_preprocess(preprocess: Preprocess | SeriesPreprocess) -> dict[str, Any]:
    """What a client of the exported file must do to an image, in words and numbers (the
    training memory format, ``channels_last``, is PyTorch's business: the graph takes NCHW)."""
    d = preprocess.to_dict()
    if preprocess.is_series:
        d["how"] = (f"float32 (N, {preprocess.channels}, {preprocess.length}): "
                    f"{preprocess.channels} channel(s) of {preprocess.length} time steps"
                    + (", each series and channel z-normalised over time" if preprocess.znorm
                       else ""))
        return d
    d.pop("channels_last", None)
    grey = preprocess.channels == 1
    d["how"] = (
        "turn the picture upright (EXIF orientation); put a transparent ground on white paper "
        "(on black when its opaque pixels are light on average); 16-bit grey keeps its top 8 "
        f"bits; convert to {'grey (ITU-R 601 luma)' if grey else 'RGB'}; resize to "
        f"{preprocess.size[1]}x{preprocess.size[0]} (bilinear, antialiased; stretched, not "
        "cropped); uint8 NCHW"
        + ("; invert (255 - x) when the mean of the resized image's border pixels is above "
           "127.5, i.e. dark strokes on light paper: the model was trained on light strokes "
           "on black" if preprocess.light_on_dark else ""))
    return d


def _add_onnx_metadata(onnx: Any, path: Path, classes: list[str], preprocess: dict[str, Any],
                       model_name: str, with_preprocess: bool) -> None:
    """Class names and preprocessing inside the file (Netron, onnxruntime's
    ``get_modelmeta().custom_metadata_map``), so they survive without the sidecar."""
    proto = onnx.load(str(path))
    if preprocess.get("kind") == "series":
        what = "float32 raw series" if with_preprocess else "float32 z-normalised series"
    else:
        what = ("uint8 pixels 0..255" if with_preprocess else "float32 (x/255 - mean)/std"
                if preprocess.get("mean") is not None else "float32 x/255")
    props = {"cnnlab.model": model_name, "cnnlab.classes": json.dumps(classes),
             "cnnlab.preprocess": json.dumps(preprocess), "cnnlab.input": what}
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = f"cnnlab export of {model_name or 'a model'}: {len(classes)} classes"
    onnx.save(proto, str(path))


def _onnx_opset(onnx: Any, path: Path) -> int | None:
    proto = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def run_images(run: Any, data_dir: str | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The first test images of the run's own data set, adapted to the model's input, for the
    verification; deterministic random images when that split cannot be loaded (the returned
    info says so and why)."""
    from cnnlab.engine.evaluate import run_split

    n = sum(VERIFY_BATCHES)
    try:
        name, data = run_split(run, data_dir=data_dir, split="test")
    except CnnlabError as e:
        return random_images(run.preprocess, n), {
            "source": "random", "seed": RANDOM_SEED,
            "reason": f"the test split of '{run.config.dataset}' could not be loaded: {e}"}
    count = min(n, int(data.images.shape[0]))
    raw = data.images[:count]  # series stay raw: the check z-normalises them as a client would
    if run.preprocess.is_series:
        run.preprocess.check(raw)
    return raw if run.preprocess.is_series else run.preprocess.adapt(raw), {
        "source": "test split", "dataset": name, "split": "test", "indices": f"0..{count - 1}"}


def export_run(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None,
               with_preprocess: bool = False, atol: float = ATOL,
               data_dir: str | None = None) -> ExportReport:
    """Export a trained run's final weights to ONNX or TorchScript (the Python form of
    `cnnlab export`), verified on real test images of its data set; see :func:`export_model`.

    Writes ``out`` (default ``RUN/model.onnx`` or ``RUN/model.torchscript.pt``) and its sidecar
    ``out + ".json"``.

    >>> report = export_run("runs/lenet5-digits-20260101-120000", "onnx")   # doctest: +SKIP
    >>> report.verified, report.max_abs_diff                                # doctest: +SKIP
    """
    from cnnlab.run import load_run

    fmt = fmt.lower()
    path = output_path(run_dir, fmt, out)
    if fmt == "onnx":
        require_onnx()  # a missing extra fails before the run is loaded
    run = load_run(run_dir, device="cpu")
    images, info = run_images(run, data_dir)
    return export_model(run.model, run.preprocess, run.classes, fmt, path,
                        with_preprocess=with_preprocess, images=images, images_info=info,
                        model_name=run.config.model, atol=atol)
