"""One build path: a config in, a resolved copy of it and every part of a run out.

Shared by ``fit``, ``cnnlab bench`` and the benchmarks. The order is fixed and each step
says why it is where it is:

1. copy the config; the caller's object is never changed;
2. the device (precision and memory format depend on it);
3. the data splits (the number of classes comes from them, and a missing or misshapen data
   set must fail before anything is written or built);
4. the model (seeded), then its memory format, which the loaders are given, not patched;
5. the :class:`~cnnlab.data.preprocess.Preprocess` built from the training split (for time
   series a :class:`~cnnlab.data.preprocess.SeriesPreprocess`, which z-normalises each
   series), and the loaders;
6. data-dependent init (airbench's whitening), the optimizer (before ``torch.compile``: it
   must hold the real parameters), the DDP wrapper under torchrun, the loss criterion.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.config import TrainConfig, build_config
from cnnlab.data import Split, get_info, load_split
from cnnlab.data.augment import Augment
from cnnlab.data.cache import cache_dir
from cnnlab.data.loader import DeviceLoader, HostLoader
from cnnlab.data.preprocess import Preprocess, SeriesPreprocess, adapt_images, adapt_mapped
from cnnlab.device import auto_channels_last, resolve_device, resolve_precision, set_threads
from cnnlab.distributed import Dist, setup, wrap_model
from cnnlab.engine.finetune import prepare, to_sync_batchnorm
from cnnlab.engine.optim import build_optimizer
from cnnlab.errors import CnnlabError
from cnnlab.models import check_input_shape, create_model, get_model_info, init_weights

Log = Callable[[str], None]


@dataclass
class Built:
    """Everything a run needs before its first step."""

    cfg: TrainConfig  # resolved copy: precision, channels_last and device filled in
    device: torch.device
    classes: tuple[str, ...]
    preprocess: Preprocess | SeriesPreprocess
    train: DeviceLoader
    test: DeviceLoader
    model: nn.Module  # the real module (checkpoints, EMA)
    step_model: nn.Module  # what the steps call: the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    dist: Dist  # this process's rank and the number of processes (1 without torchrun)


def _named(cfg: TrainConfig) -> str:
    """The data set as an error names it: ``data set 'mnist'``, ``data set folder 'letters'``."""
    title = cfg.dataset_title()
    return f"data set '{title}'" if title == cfg.dataset else f"data set {title}"


def stepped(model: nn.Module, cfg: TrainConfig, dist: Dist, device: torch.device) -> nn.Module:
    """What the training steps call: the model in its DDP wrapper (several processes), then
    compiled (``--compile``). Built again when the set of trainable parameters changes, since
    DDP only hooks the parameters that required grad when it was built."""
    step_model = wrap_model(model, dist, device)
    return torch.compile(step_model) if cfg.compile else step_model


def fixed_subset(split: Split, n: int | None) -> Split:
    """A fixed random subset of ``n`` examples (image folders are stored class by class, so
    the first n would be one class); the same for every run, kept in stored order."""
    if n is None or n >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return Split(split.images[idx], split.labels[idx], split.classes)


def load_train_test(cfg: TrainConfig, log: Log = lambda _m: None,
                    streamed: Callable[[int], bool] = lambda _bytes: False
                    ) -> tuple[Split, Split]:
    """Both splits of ``cfg.dataset``, limited and adapted as ``cfg`` asks, checked against
    the model's input shape (an error names the options that fix it). Unless
    ``cfg.data_memory`` is ``all``, the training images come memory-mapped from the cache;
    when ``streamed`` says a training split of that many bytes (once adapted) will be
    streamed, a resized or recoloured copy of it is memory-mapped too."""
    _check_folder_size_early(cfg)
    splits = []
    for name, limit in (("train", cfg.limit_train), ("test", cfg.limit_test)):
        mmap = name == "train" and cfg.data_memory != "all"
        split = fixed_subset(load_split(cfg.dataset, name, cfg.data_dir, log=log, mmap=mmap,
                                        **cfg.folder_options()), limit)
        if split.is_series:  # as stored: SeriesPreprocess z-normalises them
            check_input_shape(cfg.model, split.shape, _named(cfg), bool(cfg.init_from))
            refuse_image_options(cfg)
            splits.append(split)
            continue
        # the test split takes the training split's channel count unless --channels says
        channels = cfg.channels or (splits[0].images.shape[1] if splits else None)
        adapted = adapt_images(split.images[:1], cfg.resize, channels)
        if mmap and streamed(len(split) * adapted.numel()):
            images = adapt_mapped(split.images, cfg.resize, channels, cache_dir())
        else:
            images = adapt_images(split.images, cfg.resize, channels)
        if splits and images.shape[1:] != splits[0].images.shape[1:]:
            have, want = ("x".join(map(str, x.shape[1:])) for x in (images, splits[0].images))
            raise CnnlabError(f"the test split's images are {have} but the training split's "
                              f"are {want}; pass --resize SIZE to give both one size")
        check_input_shape(cfg.model, tuple(images.shape[1:]), _named(cfg), bool(cfg.init_from))
        splits.append(Split(images, split.labels, split.classes))
    return splits[0], splits[1]


def _check_folder_size_early(cfg: TrainConfig) -> None:
    """An image folder whose images (as given, or ``--resize``d) do not fit the model is
    refused from its first image, before the decode of the whole folder, which can take
    minutes and would be cached at the wrong size. A colour first image makes the folder
    RGB; a grey one says nothing yet (a folder is grey only if every image is), so then the
    channels are checked after the decode."""
    from cnnlab.data.locate import locate
    from cnnlab.data.sources.folder import first_image

    info, model = get_info(cfg.dataset), get_model_info(cfg.model)
    location = locate(cfg.dataset, cfg.data_dir) if info.image_tree else None
    first = first_image(location, cfg.test_fraction) if location and not model.series else None
    if first is None:
        return
    want = model.input_shape
    size = (cfg.resize, cfg.resize) if cfg.resize else first[:2]
    channels = cfg.channels or (3 if first[2] else want[0])  # grey: unknown until decoded
    if (channels, *size) != tuple(want):
        check_input_shape(cfg.model, (channels, *size), _named(cfg), bool(cfg.init_from))


def refuse_image_options(cfg: TrainConfig) -> None:
    """One line naming the image-only options set for a time-series data set: series are
    neither resized nor converted, and have no crops, flips, cutout, test-time augmentation
    or channels_last layout."""
    given = [opt for opt, on in (
        ("--resize", cfg.resize is not None), ("--channels", cfg.channels is not None),
        ("--crop-padding", cfg.crop_padding > 0), ("--flip", cfg.flip),
        ("--alternate-flip", cfg.alternate_flip), ("--cutout", cfg.cutout > 0),
        ("--tta", cfg.tta > 0), ("--channels-last", bool(cfg.channels_last))) if on]
    if given:
        what = "is an image option" if len(given) == 1 else "are image options"
        raise CnnlabError(f"{', '.join(given)} {what}; data set '{cfg.dataset}' holds 1-D "
                          "series, which take no resizing, channel conversion or augmentation: "
                          f"drop {'it' if len(given) == 1 else 'them'}")


def free_memory(device: torch.device) -> int:
    """Bytes free for the training split: GPU memory on CUDA, available RAM elsewhere."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def streams(mode: str, size: int, device: torch.device, sharing: int = 1) -> bool:
    """Whether a training split of ``size`` bytes is streamed from the host
    (``--data-memory``); with ``auto``, when it is more than half of what is free, divided
    among the ``sharing`` processes of this machine that each hold a copy."""
    if mode == "auto":
        budget = free_memory(device) // 2 // (1 if device.type == "cuda" else max(sharing, 1))
        return size > budget
    return mode == "stream"


def model_config(model: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A config for a bare model name (`cnnlab bench MODEL`, `cnnlab lr-find MODEL`): these
    measure the model rather than reproduce a recipe, so known data is fitted to the model
    (``resize``/``channels`` from the registered shapes) instead of refused."""
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    info = get_model_info(model)
    if info.series and "dataset" not in over:
        over["dataset"] = "ucr:GunPoint"  # the smallest bundled series set fits any series model
    cfg = build_config(None, {**over, "model": model})
    want, have = info.input_shape, get_info(cfg.dataset).shape
    if have is not None and not info.series and len(have) == 3:
        if cfg.resize is None and have[1:] != want[1:]:
            cfg.resize = want[1]
        if cfg.channels is None and have[0] != want[0]:
            cfg.channels = want[0]
    return cfg


def build(cfg: TrainConfig, log: Log = lambda _m: None, fresh: bool = True) -> Built:
    """Resolve a copy of ``cfg`` and build the run's parts. ``fresh`` is False when resuming:
    data-dependent init is then skipped, since the checkpoint brings the weights."""
    cfg = dataclasses.replace(cfg)
    set_threads(cfg.threads)
    dist, device = setup(resolve_device(cfg.device), cfg.dist_backend)  # under torchrun: join
    if cfg.sync_bn and device.type != "cuda":
        raise CnnlabError("--sync-bn needs CUDA GPUs: PyTorch's SyncBatchNorm has no CPU "
                          "kernels; drop --sync-bn (each process then keeps its own statistics)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    cfg.device = device.type
    cfg.precision = resolve_precision(cfg.precision, device)
    if cfg.dataset.lower().startswith("ucr:"):
        cfg.dataset = get_info(cfg.dataset).name  # ucr:gunpoint -> ucr:GunPoint, as aeon spells it

    # rank 0 decodes and caches first, the others then read the cache; a bad option found
    # on the way (an input shape that does not fit, a missing file) stops every rank with
    # rank 0's one-line error, instead of the others failing in a barrier it never reaches
    local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))

    decided: list[bool] = []

    def streamed(size: int) -> bool:  # decided once: adapting the split in memory would
        if not decided:               # lower the free memory a second look would see
            decided.append(streams(cfg.data_memory, size, device, local))
        return decided[0]

    if dist.enabled and not dist.is_main:
        dist.agree(None)
        train, test = load_train_test(cfg, log, streamed)
    else:
        failure = None
        try:
            train, test = load_train_test(cfg, log, streamed)
        except CnnlabError as e:
            failure = e
        dist.agree(failure)  # raises rank 0's error, on rank 0 and (as a note) on the others
    augment = Augment(cfg.crop_padding, cfg.flip, cfg.crop_pad_mode, cfg.alternate_flip,
                      cfg.cutout)
    augment.check_fits(train.shape[1:])

    torch.manual_seed(cfg.seed)
    channels = {"in_channels": train.shape[0]} if train.is_series else {}  # the data's C
    model = create_model(cfg.model, num_classes=len(train.classes), **channels)
    init_weights(model, cfg.init)
    tune = prepare(cfg, model, train.classes, fresh, tuple(train.shape), log)  # --freeze
    model.to(device)
    if cfg.channels_last is None:
        cfg.channels_last = auto_channels_last(model, device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    info = get_info(cfg.dataset)
    if train.is_series:  # each series z-normalised once, here, as every later command does
        preprocess = SeriesPreprocess.from_train(train.images, cfg.normalize)
        train, test = (Split(preprocess.adapt(s.images), s.labels, s.classes)
                       for s in (train, test))
    else:
        published = (info.mean, info.std) if info.mean is not None and info.std is not None \
            else None
        preprocess = Preprocess.from_train(train.images, cfg.normalize, published,
                                           channels_last=cfg.channels_last)
    if len(train) < max(dist.world, 1) or (cfg.drop_last and len(train) < cfg.batch_size):
        if len(train) < max(dist.world, 1):
            fix = f"use at most {len(train)} processes, or give more examples"
        else:
            fix = f"lower --batch-size to {len(train)} or less, or add --no-drop-last"
        if cfg.limit_train:
            fix += f", or raise --limit-train (now {cfg.limit_train})"
        raise CnnlabError(f"the training split has {len(train)} example(s): too few for one "
                          f"step (batch {cfg.batch_size}, {dist.world} process(es)); {fix}")
    if dist.enabled and cfg.batch_size < dist.world:
        raise CnnlabError(f"--batch-size {cfg.batch_size} is the global batch, shared by "
                          f"{dist.world} processes; make it at least {dist.world}")
    stream = streamed(train.images.numel() * train.images.element_size())
    if stream:
        mib = train.images.numel() * train.images.element_size() / 2**20
        shown = f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.1f} MiB"
        log(f"streaming the training split from the host ({shown}, memory-mapped): each "
            "batch is gathered as it is needed")
    images = train.images
    if not stream and cfg.data_memory != "all" and device.type == "cpu":
        images = images.clone()  # mapped while deciding; into memory now (.to(cuda) copies)
    loader_class = HostLoader if stream else DeviceLoader
    train_loader = loader_class(images, train.labels, cfg.batch_size, device, preprocess,
                                shuffle=True, drop_last=cfg.drop_last, augment=augment,
                                seed=cfg.seed, dist=dist)
    # every test example on exactly one rank, no padding; evaluate() sums over ranks
    test_loader = DeviceLoader(test.images, test.labels, cfg.eval_batch_size, device,
                               preprocess, dist=dist, shard="split")

    init_from_data = getattr(model, "init_from_data", None)
    if init_from_data is not None and fresh and not cfg.init_from:  # airbench's whitening
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(
            cfg.seed))[:5000].to(device)  # a random sample: stored order may be by class
        init_from_data(train_loader.examples(pick))
    if cfg.sync_bn and dist.enabled:
        model = to_sync_batchnorm(model)
    optimizer = build_optimizer(cfg, model, tune.head_params(model))
    step_model = stepped(model, cfg, dist, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    return Built(cfg, device, train.classes, preprocess, train_loader, test_loader, model,
                 step_model, optimizer, criterion, dist)
