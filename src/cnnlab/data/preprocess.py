"""One preprocessing object: how raw uint8 images become the tensors a model was trained on.

Training, evaluation and everything after them (predict, serve, export) must see inputs
exactly as the training loop did: the same channel count and size, the same mean/std, the
same memory layout. A :class:`Preprocess` is built once from the *training* split, saved in
the run directory as ``preprocess.json``, and read back by :func:`cnnlab.load_run`, so none
of those later steps needs the data set, and none recomputes statistics from the split it
happens to be looking at.

Time series get a sibling, :class:`SeriesPreprocess`: float32 (N, C, L) series, each series
and channel z-normalised on its own. It is saved in the same ``preprocess.json`` with
``"kind": "series"``; a file without ``kind`` (every image run) is a :class:`Preprocess`.
"""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Preprocess:
    """uint8 (N, C, H, W) images -> normalised float inputs of the model.

    ``channels`` and ``size`` are what the model sees; any uint8 batch is converted to them
    (grey <-> RGB, bilinear resize). ``mean``/``std`` are per channel in [0, 1] units, or
    None for no normalisation. ``light_on_dark`` records whether the training images draw
    light strokes on a dark background (MNIST) so a later ``predict`` can invert a photo of
    dark ink on paper. ``channels_last`` is the memory format the model was trained in.
    """

    channels: int
    size: tuple[int, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    light_on_dark: bool = False
    channels_last: bool = False
    kind: ClassVar[str] = "image"  # "series": SeriesPreprocess (not a field: old files lack it)

    def __post_init__(self) -> None:
        channels = _whole(self.channels)
        if channels not in (1, 3):
            raise CnnlabError(f"preprocessing needs 1 or 3 channels (an int), got "
                              f"{self.channels!r}")
        try:
            parts = list(self.size)
        except TypeError:  # Preprocess(1, 28): a square, as --resize 28 is
            parts = [self.size, self.size]
        size = [_whole(v) for v in parts]
        if len(size) != 2 or None in size or min(size) < 1:
            raise CnnlabError(f"preprocessing size is (height, width) in pixels, got "
                              f"{self.size!r}")
        object.__setattr__(self, "channels", channels)  # plain ints: the JSON record
        object.__setattr__(self, "size", (size[0], size[1]))
        if (self.mean is None) != (self.std is None):
            raise CnnlabError("preprocessing needs both mean and std, or neither")
        for stats in (self.mean, self.std):
            if stats is not None and len(stats) != self.channels:
                raise CnnlabError(f"preprocessing mean/std need {self.channels} values, "
                                  f"got {len(stats)}")
        if self.std is not None and min(self.std) <= 0:
            raise CnnlabError(f"preprocessing std must be positive, got {self.std}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    @property
    def is_series(self) -> bool:
        return False

    # ------------------------------------------------------------------ uint8 -> uint8
    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """Convert a uint8 (N, C, H, W) batch to this channel count and size, once."""
        return adapt_images(images, self.size, self.channels)

    # ----------------------------------------------------------------- uint8 -> float
    def scale_shift(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``x_norm = (x/255 - mean)/std = x * scale + shift``: two (1, C, 1, 1) tensors."""
        c = self.channels
        mean = torch.tensor(self.mean if self.mean is not None else (0.0,) * c)
        std = torch.tensor(self.std if self.std is not None else (1.0,) * c)
        scale = (1.0 / (255.0 * std)).view(1, c, 1, 1).to(device)
        shift = (-mean / std).view(1, c, 1, 1).to(device)
        return scale, shift

    def normalise(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> torch.Tensor:
        """uint8 batch (already adapted) -> float32, normalised in one fused multiply-add."""
        scale, shift = scale_shift or self.scale_shift(x.device)
        return torch.addcmul(shift, x.float(), scale)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """Put a float batch in the memory format the model was trained in."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __call__(self, images: Any) -> torch.Tensor:
        """Any uint8 (N, C, H, W) batch (a tensor or numpy array, or Pillow images, one or a
        list) -> the model's float input (adapt, normalise, layout)."""
        images = as_uint8_batch(images, self)
        if images.dtype != torch.uint8 or images.dim() != 4:
            hint = ""
            if images.dtype.is_floating_point:
                top = float(images.max()) if images.numel() else 0.0
                hint = ("; floats in 0..1 become pixels with (x * 255).round().byte()"
                        if top <= 1.0 else "; floats in 0..255 become pixels with "
                        "x.round().clamp(0, 255).byte()")
            if images.dim() == 3:
                hint += ("; one image needs a batch axis, x[None]" if images.shape[0] in (1, 3)
                         else "; channels go first: x.permute(2, 0, 1)[None] for one H x W x C "
                              "image")
            raise CnnlabError(f"preprocessing takes uint8 images (N, C, H, W), got "
                              f"{images.dtype} {tuple(images.shape)}{hint}")
        return self.layout(self.normalise(self.adapt(images)))

    # ------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean) if self.mean is not None else None
        d["std"] = list(self.std) if self.std is not None else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess | SeriesPreprocess:
        """A saved record: a :class:`SeriesPreprocess` when its ``kind`` says ``series``."""
        kind = d.get("kind", "image") if isinstance(d, dict) else "image"
        if kind == "series":
            return SeriesPreprocess.from_dict(d)
        if kind != "image":
            raise CnnlabError(f"bad preprocessing record: unknown kind '{kind}' (image or "
                              "series); was it written by a newer cnnlab?")
        try:
            return cls(
                channels=int(d["channels"]), size=(int(d["size"][0]), int(d["size"][1])),
                mean=tuple(float(v) for v in d["mean"]) if d.get("mean") is not None else None,
                std=tuple(float(v) for v in d["std"]) if d.get("std") is not None else None,
                light_on_dark=bool(d.get("light_on_dark", False)),
                channels_last=bool(d.get("channels_last", False)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CnnlabError(f"bad preprocessing record ({e!r}); expected keys channels, "
                              "size, mean, std, light_on_dark, channels_last") from e

    @classmethod
    def from_json(cls, text: str) -> Preprocess | SeriesPreprocess:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise CnnlabError(f"preprocessing record is not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise CnnlabError("preprocessing record must be a JSON object")
        return cls.from_dict(data)

    # ------------------------------------------------------------- from training data
    @classmethod
    def from_train(cls, images: torch.Tensor, normalize: bool = True,
                   published: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
                   channels_last: bool = False) -> Preprocess:
        """Build from the (already adapted) uint8 training images.

        ``published`` mean/std (the data set's own, computed on its training split) are used
        when they have one value per channel; otherwise the statistics are computed from
        ``images``. Never from a test split.
        """
        c, h, w = images.shape[1:]
        mean = std = None
        if normalize:
            if published is not None and len(published[0]) == c:
                mean, std = tuple(published[0]), tuple(published[1])
            else:
                mean, std = channel_stats(images)
        light = c == 1 and float(images[:4096].float().mean()) < 127.5
        return cls(channels=int(c), size=(int(h), int(w)), mean=mean, std=std,
                   light_on_dark=light, channels_last=channels_last)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, rounded to 4 places."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):  # chunks: no float copy of the whole split
        x = chunk.double() / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    n = images.numel() / c
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(1e-6).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _whole(value: Any) -> int | None:
    """``value`` as a plain int when it is a whole number (an int, a numpy integer, a 0-d
    integer tensor; not a bool or a float), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def as_uint8_batch(images: Any, preprocess: Preprocess) -> torch.Tensor:
    """A tensor as it is; a numpy array as a tensor; Pillow images (one or a list, any mode
    or size) read as a person sees them and brought to ``preprocess``'s channels and size;
    anything else a one-line error naming what is accepted."""
    import numpy as np

    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, np.ndarray):  # a copy: a read-only array (np.asarray(pil))
        return torch.from_numpy(np.array(images, order="C", copy=True))
    pictures = images if isinstance(images, (list, tuple)) else [images]
    if pictures and all(hasattr(p, "getbands") for p in pictures):  # Pillow images
        from cnnlab.data.images import pil_to_tensor

        return torch.stack([preprocess.adapt(pil_to_tensor(p)[None])[0] for p in pictures])
    raise CnnlabError("this takes uint8 images (N, C, H, W) as a torch tensor or numpy array, "
                      f"or Pillow images, got {type(images).__name__}")


def adapt_images(images: torch.Tensor, size: int | tuple[int, int] | None,
                 channels: int | None) -> torch.Tensor:
    """Resize (bilinear, antialiased) and/or change the channel count of uint8 images."""
    if channels is not None and channels != images.shape[1]:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1).contiguous()
        elif channels == 1 and images.shape[1] == 3:  # ITU-R 601 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=images.device)
            images = (images.float() * w[:, None, None]).sum(1, keepdim=True).round().byte()
        else:
            hint = ("; the array looks channels-last (N, H, W, C): x.permute(0, 3, 1, 2)"
                    if images.dim() == 4 and images.shape[-1] in (1, 3, 4) else
                    "; for RGBA drop the alpha channel, x[:, :3], or pass Pillow images "
                    "(transparency is then drawn as a person sees it)"
                    if images.shape[1] == 4 else "; use --channels 1 or 3")
            raise CnnlabError(f"cannot convert {images.shape[1]} channels to {channels}{hint}")
    if isinstance(size, int):
        size = (size, size)
    if size is not None and tuple(images.shape[2:]) != tuple(size):
        out = []
        for chunk in images.split(4096):  # bounded memory for big splits
            f = F.interpolate(chunk.float(), size=size, mode="bilinear", align_corners=False,
                              antialias=True)
            out.append(f.round_().clamp_(0, 255).byte())
        images = torch.cat(out)
    return images


def adapt_mapped(images: torch.Tensor, size: int | tuple[int, int] | None,
                 channels: int | None, scratch_dir: Path) -> torch.Tensor:
    """:func:`adapt_images` for a split memory-mapped from the cache (a split that may not
    fit in memory): adapted a few thousand images at a time into an unlinked scratch file
    in ``scratch_dir``, itself memory-mapped, so that the adapted split stays out of memory
    too. (The scratch file vanishes with the process.) No room there is a one-line error:
    this split is streamed because it does not fit in memory."""
    import tempfile

    import numpy as np

    from cnnlab.fileio import reserve

    first = adapt_images(images[:1], size, channels)
    if first.shape[1:] == images.shape[1:]:
        return images
    shape = (len(images), *first.shape[1:])
    try:
        scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=scratch_dir, prefix="cnnlab-adapted-") as f:
            reserve(f.fileno(), int(np.prod(shape)))  # a full disk: an error now, not SIGBUS
            out = np.memmap(f, np.uint8, "w+", shape=shape)
    except OSError as e:
        raise CnnlabError(f"no room for the {'x'.join(map(str, shape[1:]))} copy of the "
                          f"streamed training split in {scratch_dir} ({e.strerror or e}; "
                          f"{int(np.prod(shape)) / 2**30:.1f} GiB): free space there, set "
                          "$CNNLAB_CACHE to a larger disk, or resize when decoding (an image "
                          "folder's --resize)") from None
    for i in range(0, len(images), 4096):
        out[i:i + 4096] = adapt_images(images[i:i + 4096], size, channels).numpy()
    return torch.from_numpy(out)


@dataclass(frozen=True)
class SeriesPreprocess:
    """float32 (N, C, L) time series -> the model's input: with ``znorm``, each series and
    channel minus its own mean over time, divided by its own standard deviation (population;
    a flat series, deviation below ``EPS``, becomes zeros), as the UCR archive's series usually
    are and as Wang et al. (2017) and Fawaz et al. (2019) train on. Per-series statistics need
    nothing from the training split but the shape, so a single new series is normalised the
    same way as in training; and normalising an already normalised series changes nothing.

    Same interface as :class:`Preprocess` where the loaders and commands use it (``adapt``,
    ``normalise``, ``layout``, ``__call__``, ``input_shape``); there is no memory layout to
    choose (``channels_last`` is False) and no uint8 step: ``adapt`` normalises.
    """

    channels: int
    length: int
    znorm: bool = True
    kind: ClassVar[str] = "series"
    channels_last: ClassVar[bool] = False
    EPS: ClassVar[float] = 1e-8

    def __post_init__(self) -> None:
        if self.channels < 1 or self.length < 1:
            raise CnnlabError(f"series preprocessing needs at least 1 channel and length 1, got "
                              f"{self.channels}x{self.length}")

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.channels, self.length)

    @property
    def is_series(self) -> bool:
        return True

    def check(self, series: torch.Tensor) -> None:
        """A one-line error unless ``series`` is (N, C, L) with this C and L."""
        if series.dim() != 3 or not series.dtype.is_floating_point:
            raise CnnlabError(f"this run takes float series (N, {self.channels}, {self.length}), "
                              f"got {series.dtype} {tuple(series.shape)}")
        if tuple(series.shape[1:]) != self.input_shape:
            raise CnnlabError(f"this run was trained on series of {self.channels} channel(s) x "
                              f"{self.length} steps, got {series.shape[1]}x{series.shape[2]}; "
                              "give series of that shape")

    def adapt(self, series: torch.Tensor) -> torch.Tensor:
        """Check the shape and z-normalise each series and channel (float32)."""
        self.check(series)
        return znormalise(series, self.EPS) if self.znorm else series.float()

    def scale_shift(self, device: torch.device | str = "cpu") -> None:
        """Nothing to precompute: :meth:`adapt` normalised already."""
        return None

    def normalise(self, x: torch.Tensor, scale_shift: object = None) -> torch.Tensor:
        return x.float()

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def __call__(self, series: torch.Tensor) -> torch.Tensor:
        """Any float (N, C, L) batch of this shape -> the model's input."""
        return self.adapt(series)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "length": self.length,
                "znorm": self.znorm}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeriesPreprocess:
        try:
            return cls(channels=int(d["channels"]), length=int(d["length"]),
                       znorm=bool(d.get("znorm", True)))
        except (KeyError, TypeError, ValueError) as e:
            raise CnnlabError(f"bad series preprocessing record ({e!r}); expected keys kind, "
                              "channels, length, znorm") from e

    @classmethod
    def from_train(cls, series: torch.Tensor, normalize: bool = True) -> SeriesPreprocess:
        """From the training split's shape (z-normalisation needs no statistics)."""
        c, length = series.shape[1:]
        return cls(channels=int(c), length=int(length), znorm=normalize)


def znormalise(series: torch.Tensor, eps: float = SeriesPreprocess.EPS) -> torch.Tensor:
    """Each series and channel of (N, C, L) minus its mean over time, over its standard
    deviation (population); a series whose deviation is below ``eps`` (flat) is only centred,
    so it becomes zeros rather than amplified rounding noise. Computed in float64 (a constant
    series then has a deviation of exactly 0), returned as float32. Exported graphs
    (:class:`cnnlab.engine.export.RawSeries`) run this same function."""
    x = series.double()
    mean = x.mean(dim=-1, keepdim=True)
    std = (x - mean).square().mean(dim=-1, keepdim=True).sqrt()  # plain ops: exportable
    return ((x - mean) / torch.where(std < eps, torch.ones_like(std), std)).float()
