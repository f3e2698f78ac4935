"""From a config to ready loaders: load splits, limit, adapt shape, check the model fits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnlab.config import TrainConfig
from cnnlab.data.load import Split, load_split, normalization
from cnnlab.data.loader import Augment, DeviceLoader, adapt_images
from cnnlab.errors import CnnlabError
from cnnlab.models import check_input_shape


@dataclass
class Prepared:
    train: DeviceLoader
    test: DeviceLoader
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


def _limit(split: Split, n: int | None) -> Split:
    """A fixed random subset of ``n`` examples (image folders are stored class by class, so
    the first n would be one class); the same for every run, kept in stored order."""
    if n is None or n >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return Split(split.images[idx], split.labels[idx], split.classes)


def adapt_split(split: Split, cfg: TrainConfig) -> Split:
    try:
        images = adapt_images(split.images, cfg.resize, cfg.channels)
    except ValueError as e:
        raise CnnlabError(f"{e}; use --channels 1 or 3") from e
    return Split(images, split.labels, split.classes)


def prepare_split(cfg: TrainConfig, split_name: str, log: Callable[[str], None],
                  dataset: str | None = None, data_dir: str | None = None) -> Split:
    """Load, limit and adapt one split, then check it fits the config's model."""
    name = dataset or cfg.dataset
    split = load_split(name, split_name, data_dir or cfg.data_dir, log=log)
    limit = cfg.limit_train if split_name == "train" else cfg.limit_test
    split = adapt_split(_limit(split, limit), cfg)
    check_input_shape(cfg.model, split.shape, f"data set '{name}'")
    return split


def _check_augment_fits(cfg: TrainConfig, size: tuple[int, ...]) -> None:
    """Crop reflection and cutout squares must fit inside the (adapted) images."""
    side = min(size)
    if cfg.cutout > side:
        raise CnnlabError(f"--cutout {cfg.cutout} is larger than the {side}-pixel images; "
                          f"use at most {side}")
    if cfg.crop_pad_mode == "reflect" and cfg.crop_padding >= side:
        raise CnnlabError(f"--crop-padding {cfg.crop_padding} with reflect padding needs "
                          f"images larger than that ({side} pixels); use at most {side - 1}")


def prepare(cfg: TrainConfig, device: torch.device,
            log: Callable[[str], None] = lambda _m: None) -> Prepared:
    train = prepare_split(cfg, "train", log)
    test = prepare_split(cfg, "test", log)
    _check_augment_fits(cfg, train.shape[1:])
    mean = std = None
    if cfg.normalize:
        mean, std = normalization(cfg.dataset, train)
    common = dict(device=device, mean=mean, std=std, channels_last=bool(cfg.channels_last))
    train_loader = DeviceLoader(
        train, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=cfg.drop_last,
        augment=Augment(cfg.crop_padding, cfg.flip, cfg.crop_pad_mode, cfg.alternate_flip,
                        cfg.cutout),
        **common,
    )
    test_loader = DeviceLoader(test, cfg.eval_batch_size, **common)
    return Prepared(train_loader, test_loader, train.classes, train.shape, mean, std)
