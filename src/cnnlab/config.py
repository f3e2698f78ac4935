"""Training configuration: one dataclass, filled from defaults < recipe YAML < command line.

Every field carries its help text, and the CLI generates one ``--option`` per field from
it, so every field of a recipe can be overridden on the command line by construction.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from cnnlab.errors import CnnlabError, did_you_mean

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "step", "cosine", "onecycle", "triangle"]
PadMode = Literal["zeros", "reflect"]
Init = Literal["default", "xavier"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["fp32", "bf16", "auto"]
DataMemory = Literal["auto", "all", "stream"]
BadFiles = Literal["fail", "skip"]
DistBackend = Literal["auto", "nccl", "gloo"]


def _f(default: Any, help: str) -> Any:  # noqa: A002 - mirrors click's name
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved as config.yaml in the run directory."""

    model: str = _f("mnist-net", "model name (see `cnnlab models`)")
    dataset: str = _f("digits", "data set name (see `cnnlab datasets`)")
    data_dir: str | None = _f(None, "data root searched first (then $CNNLAB_DATA, user data dir)")
    resize: int | None = _f(None, "resize images to SIZE x SIZE once, before training")
    channels: int | None = _f(None, "convert images to 1 (grey) or 3 (RGB) channels")
    normalize: bool = _f(True, "normalise with the training split's per-channel mean/std")
    crop_padding: int = _f(0, "augment: random crop after padding by this many pixels")
    crop_pad_mode: PadMode = _f("zeros", "padding for the random crop")
    flip: bool = _f(False, "augment: random horizontal flip")
    alternate_flip: bool = _f(False, "flip a fixed random half in even epochs, the other half in "
                              "odd epochs (airbench) instead of fresh coin flips")
    cutout: int = _f(0, "augment: zero a random SIZE x SIZE square in each image (0: off)")
    drop_last: bool = _f(False, "drop the last incomplete training batch")
    bad_files: BadFiles = _f("fail", "image folders: fail on unreadable files (naming the "
                             "first few) or skip them (saying how many)")
    test_fraction: float = _f(0.2, "image folders laid out ROOT/<class>/*.png (no train/ and "
                              "test/): the share of each class held out as the test split "
                              "(the same files every time)")
    data_memory: DataMemory = _f("auto", "all: the training split on the device; stream: "
                                 "memory-mapped on the host, each batch gathered from it; "
                                 "auto: stream when the split exceeds half the free memory")
    limit_train: int | None = _f(None, "use N training examples, the same fixed random "
                                  "subset in every run (quick runs; the whole split is still "
                                  "decoded and cached once)")
    limit_test: int | None = _f(None, "use N test examples (a fixed random subset, as "
                                 "--limit-train)")
    epochs: int = _f(10, "number of epochs")
    batch_size: int = _f(64, "training batch size")
    eval_batch_size: int = _f(1024, "evaluation batch size")
    eval_every: int = _f(1, "evaluate on the test split every N epochs (always after the "
                         "last one)")
    optimizer: Optimizer = _f("sgd", "optimizer")
    lr: float = _f(0.05, "peak learning rate")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(False, "SGD Nesterov momentum")
    weight_decay: float = _f(0.0, "weight decay (L2 for SGD/Adam, decoupled for AdamW)")
    schedule: Schedule = _f("cosine", "learning-rate schedule (per step)")
    triangle: tuple[float, float, float] | list | None = _f(
        None, "triangle schedule: (start factor, peak position 0..1, end factor) "
        "[default (0.2, 0.23, 0.07)]")
    step_size: int = _f(5, "step schedule: epochs between decays")
    gamma: float = _f(0.1, "step schedule: decay factor")
    warmup_epochs: float = _f(0.0, "linear warm-up length in epochs (constant/step/cosine)")
    init: Init = _f("default", "weight init: default (PyTorch's) or xavier (d2l's)")
    bias_lr_scale: float = _f(1.0, "lr multiplier for normalisation-layer biases; their weight "
                              "decay is divided by it (airbench: 64)")
    ema_every: int = _f(0, "lookahead EMA of the weights every N steps (0: off)")
    ema_start_epoch: int = _f(0, "first epoch (0-based) with the lookahead EMA")
    tta: int = _f(0, "test-time augmentation of the final evaluation: 0 none | 1 mirror | "
                  "2 mirror + 1-pixel translations (mirror views only if trained with --flip)")
    label_smoothing: float = _f(0.0, "label smoothing for the cross-entropy loss")
    init_from: str | None = _f(None, "fine-tune: start from this run directory's weights (a "
                               "new classifier head when the classes differ)")
    freeze: str | None = _f(None, "fine-tune: comma-separated layers whose weights stay fixed "
                            "(names from `cnnlab summary MODEL`)")
    freeze_until: str | None = _f(None, "fine-tune: fix every layer up to and including this one")
    head_lr_scale: float = _f(1.0, "fine-tune: lr multiplier for the classifier head")
    seed: int = _f(0, "random seed (init, shuffling, augmentation)")
    device: Device = _f("auto", "device (auto: cuda, then mps, then cpu)")
    precision: Precision = _f("fp32", "fp32, bf16 (autocast), or auto (bf16 where the device runs it fast)")
    threads: int | None = _f(None, "CPU threads for PyTorch (default: PyTorch's choice)")
    channels_last: bool | None = _f(None, "channels_last memory format (default: on for conv nets "
                                    "on CPU/CUDA, where it is faster)")
    compile: bool = _f(False, "torch.compile the model (pays off for larger nets on GPU)")
    cuda_graphs: bool = _f(False, "replay each training step as a CUDA graph (SGD on a GPU; "
                           "ignored on other devices)")
    sync_bn: bool = _f(False, "multi-GPU runs: synchronise BatchNorm statistics across "
                       "processes (SyncBatchNorm; CUDA only)")
    dist_backend: DistBackend = _f("auto", "DDP's process-group backend: auto (gloo on CPU; on "
                                   "GPUs NCCL, with gloo for host-side checks), nccl, or gloo "
                                   "(CUDA without NCCL, or processes sharing a GPU)")
    out: str | None = _f(None, "run directory (default runs/MODEL-DATASET-TIMESTAMP)")
    keep_checkpoints: int = _f(2, "how many epoch checkpoints to keep (0 keeps all)")
    checkpoint_every: int = _f(1, "write a checkpoint (and the weights) every N epochs, always "
                               "after the last; short epochs (small time-series sets) spend "
                               "more time writing than training at 1")
    log_every: int = _f(50, "steps between progress updates and NaN checks")
    tensorboard: bool = _f(False, "write TensorBoard scalars to RUN_DIR/tensorboard "
                           "(pip install 'cnnlab[tensorboard]')")

    def validate(self) -> TrainConfig:
        """Check values a user can get wrong; raise one clear error for the first bad one."""
        for name, allowed in choices().items():
            if getattr(self, name) not in allowed:
                raise CnnlabError(
                    f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                    f"got '{getattr(self, name)}'"
                )
        positive = ["epochs", "batch_size", "eval_batch_size", "eval_every", "step_size",
                    "log_every", "checkpoint_every"]
        for name in positive:
            if getattr(self, name) < 1:
                raise CnnlabError(f"--{name.replace('_', '-')} must be at least 1, "
                                  f"got {getattr(self, name)}")
        for name in ("limit_train", "limit_test", "resize", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise CnnlabError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
        if not 0 < self.lr < float("inf"):
            raise CnnlabError(f"--lr must be a positive number, got {self.lr}")
        checks = [
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "0 or more"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("test_fraction", 0 < self.test_fraction < 1, "above 0 and below 1"),
            ("gamma", 0 < self.gamma <= 1, "in (0, 1]"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, "between 0 and --epochs"),
            ("crop_padding", self.crop_padding >= 0, "0 or more"),
            ("cutout", self.cutout >= 0, "0 or more"),
            ("keep_checkpoints", self.keep_checkpoints >= 0, "0 or more"),
            ("channels", self.channels in (None, 1, 3), "1 or 3"),
            ("bias_lr_scale", self.bias_lr_scale > 0, "positive"),
            ("head_lr_scale", self.head_lr_scale > 0, "positive"),
            ("ema_every", self.ema_every >= 0, "0 or more"),
            ("tta", self.tta in (0, 1, 2), "0, 1 or 2"),
            # a split is one tensor of N x S x S pixels: 4096 is already 50 MB an image
            ("resize", self.resize is None or self.resize <= 4096, "at most 4096"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise CnnlabError(f"--{name.replace('_', '-')} must be {what}, "
                                  f"got {getattr(self, name)}")
        if self.triangle is not None:
            t = list(self.triangle)
            if len(t) != 3 or not (0 < float(t[1]) < 1) or min(float(t[0]), float(t[2])) < 0:
                raise CnnlabError("--triangle must be START,PEAK,END with 0 < PEAK < 1, "
                                  f"got {self.triangle}")
            self.triangle = (float(t[0]), float(t[1]), float(t[2]))
        if self.data_dir is not None:  # saved absolute: eval, resume and report may run elsewhere
            self.data_dir = str(Path(self.data_dir).expanduser().absolute())
        if self.freeze is not None and self.freeze_until:
            raise CnnlabError("give --freeze or --freeze-until, not both")
        if (self.freeze is not None or self.freeze_until) and not self.init_from:
            raise CnnlabError("--freeze/--freeze-until fix trained layers: add --init-from RUN "
                              "(frozen random weights would learn nothing)")
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            raise CnnlabError("--nesterov needs a --momentum above 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dataset_title(self) -> str:
        """The data set as titles name it: ``folder 'letters'`` for an image folder (whose
        name ``folder`` says nothing), else its name; ``dataset`` itself is unchanged."""
        from cnnlab.data.registry import dataset_title

        return dataset_title(self.dataset, self.data_dir)

    def folder_options(self) -> dict[str, Any]:
        """How an image folder is read for this run (training, eval and every later command
        must read it alike): resized, bad files, and a flat folder's test share."""
        return {"resize": self.resize, "bad_files": self.bad_files,
                "test_fraction": self.test_fraction}


def field_types() -> dict[str, Any]:
    """The fields' resolved type hints (``Literal[...]``, ``int | None``, ...)."""
    return get_type_hints(TrainConfig)


def literal_choices(hint: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` hint (also inside ``X | None``), else None."""
    if get_origin(hint) is Literal:
        return tuple(get_args(hint))
    for arg in get_args(hint):
        if get_origin(arg) is Literal:
            return tuple(get_args(arg))
    return None


def choices() -> dict[str, tuple[str, ...]]:
    """Field name -> allowed values, for every field typed as a ``Literal``."""
    out = {}
    for name, hint in field_types().items():
        allowed = literal_choices(hint)
        if allowed is not None:
            out[name] = allowed
    return out


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def recipes_dir() -> Path:
    return Path(__file__).parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def read_yaml_config(path: Path) -> dict[str, Any]:
    """Read a recipe or a run's config.yaml; reject unknown keys naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise CnnlabError(f"cannot read {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise CnnlabError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise CnnlabError(f"{path} must be a YAML mapping of config fields")
    data.pop("description", None)
    unknown = sorted(set(data) - set(field_names()))
    if unknown:
        raise CnnlabError(f"{path} has unknown field(s) {', '.join(unknown)}; "
                          f"{did_you_mean(unknown[0], field_names())}"
                          f"valid fields: {', '.join(field_names())}")
    return data


def load_recipe(name: str) -> dict[str, Any]:
    """A recipe by name (``recipes/NAME.yaml``) or by path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):  # a file: as given, else a bundled one ("x.yaml")
        if not path.is_file():
            if path.parent != Path(".") or not (recipes_dir() / path.name).is_file():
                what = "is a folder, not a recipe file" if path.is_dir() else "does not exist"
                raise CnnlabError(f"recipe file {name} {what}; give a .yaml file, or a recipe "
                                  f"name ({', '.join(recipe_names())})")
            path = recipes_dir() / path.name
    else:
        path = recipes_dir() / f"{name}.yaml"
        if not path.is_file():
            raise CnnlabError(f"unknown recipe '{name}'; {did_you_mean(name, recipe_names())}"
                              "choose one of: "
                              f"{', '.join(recipe_names())} or give a path to a .yaml file")
    return read_yaml_config(path)


def recipe_description(name: str) -> str:
    data = yaml.safe_load((recipes_dir() / f"{name}.yaml").read_text(encoding="utf-8")) or {}
    return str(data.get("description", ""))


def build_config(recipe: str | None = None, overrides: dict[str, Any] | None = None,
                 base: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then ``base`` (a saved config), then the recipe, then CLI overrides."""
    values: dict[str, Any] = dict(base or {})
    if recipe:
        values.update(load_recipe(recipe))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(given)
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise CnnlabError(f"unknown setting '{unknown[0]}'; {did_you_mean(unknown[0], known)}"
                          "see `cnnlab train --help` for every setting")
    try:
        cfg = TrainConfig(**values)
    except TypeError as e:
        raise CnnlabError(f"bad configuration: {e}") from e
    _coerce_types(cfg)
    try:
        return cfg.validate()
    except CnnlabError as e:  # a value the user never typed: say where it came from
        found = re.match(r"--([a-z-]+)", str(e))
        field = found[1].replace("-", "_") if found else None
        if recipe and field and field not in given and field in load_recipe(recipe):
            value = load_recipe(recipe)[field]
            fix = (f"--{'no-' * bool(value)}{found[1]}" if isinstance(value, bool)
                   else f"--{found[1]}")
            shown = (f"--{'no-' * (not value)}{found[1]}" if isinstance(value, bool)
                     else f"--{found[1]} {value}")
            raise CnnlabError(f"{e} ({shown} comes from the recipe '{recipe}'; give {fix} to "
                              "change it)") from None
        raise


def base_type(hint: Any) -> type:
    """The plain type behind a hint: ``int | None`` -> int, ``Literal['a']`` -> str,
    ``tuple[float, float, float] | list | None`` -> tuple."""
    if get_origin(hint) is Literal:
        return type(get_args(hint)[0])
    if hint in (int, float, bool, str):
        return hint
    if get_origin(hint) is tuple:
        return tuple
    for arg in get_args(hint):
        if arg is not type(None):
            return base_type(arg)
    return str


def _coerce_types(cfg: TrainConfig) -> None:
    """YAML may give ints for floats and vice versa; coerce and report impossible ones."""
    for name, hint in field_types().items():
        v = getattr(cfg, name)
        if v is None:
            continue
        t = base_type(hint)
        if t is tuple:
            if isinstance(v, str):  # from the command line: "0.2,0.23,0.07"
                try:
                    setattr(cfg, name, tuple(float(x) for x in v.split(",")))
                except ValueError as e:
                    raise CnnlabError(f"field '{name}' must be numbers like 0.2,0.23,0.07") from e
            continue
        try:
            if t is float:
                if isinstance(v, bool):
                    raise ValueError
                setattr(cfg, name, float(v))
            elif t is int:
                if isinstance(v, bool) or float(v) != int(float(v)):
                    raise ValueError
                setattr(cfg, name, int(float(v)))
            elif t is bool and not isinstance(v, bool):
                words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
                if str(v).lower() not in words:
                    raise ValueError
                setattr(cfg, name, words[str(v).lower()])
        except (TypeError, ValueError) as e:
            raise CnnlabError(f"field '{name}' must be {t.__name__}, got {v!r}") from e


def dump_config(cfg: TrainConfig) -> str:
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items()}
    return yaml.safe_dump(data, sort_keys=False)
