"""The Python API for notebooks and scripts: ``cnnlab.train``, ``cnnlab.load_run``,
``cnnlab.evaluate``. Each is the library call the matching command makes, so a notebook and
the command line give the same runs.

    import cnnlab
    result = cnnlab.train(recipe="seed-mnist", epochs=2, data_dir="../shared/data")
    run = cnnlab.load_run(result.run_dir)
    print(cnnlab.evaluate(result.run_dir).accuracy)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnlab.config import TrainConfig
from cnnlab.engine.evaluate import EvalResult
from cnnlab.engine.train import TrainResult
from cnnlab.errors import CnnlabError
from cnnlab.run import EpochMetrics, LoadedRun


def train_config(recipe: str | None = None, resume: str | Path | None = None,
                 **overrides: Any) -> TrainConfig:
    """The config `cnnlab train` runs: defaults < recipe < overrides, or a run's saved
    config (plus overrides such as a larger ``epochs``) when resuming."""
    from cnnlab.config import build_config, load_recipe
    from cnnlab.run import RunDir
    from cnnlab.safety import refuse_pickled_weights

    if resume is not None:
        if recipe:
            raise CnnlabError("--resume continues a run with its saved config; drop --recipe")
        run = RunDir(resume)
        saved = run.read_config()
        cfg = build_config(None, overrides, base=saved)
        _refuse_changed_training(build_config(None, {}, base=saved), cfg)
        stem = run.latest_checkpoint()
        if stem is not None:  # before the data is loaded: a pickled checkpoint is one line
            refuse_pickled_weights(stem.with_suffix(".safetensors"))
            done = _epochs_done(stem)
            if done is not None and done >= cfg.epochs:
                raise CnnlabError(f"{run} already finished {done} epoch{'s' * (done != 1)}; "
                                  "pass a larger --epochs to train further")
        cfg.out = str(resume)
        return cfg
    if overrides.get("init_from") is not None:
        overrides = _fit_to_source(recipe, overrides)
    if recipe == "finetune" and overrides.get("init_from") is None \
            and overrides.get("model") is None:  # (with --model: the recipe from scratch)
        raise CnnlabError("the finetune recipe continues from a trained run: add --init-from "
                          "RUN (and --dataset/--data-dir for the new data)")
    main_job = load_recipe("default")  # `cnnlab train --epochs 3` is still the main job,
    if recipe is None and all(overrides.get(k) in (None, main_job[k])  # and so is typing
                              for k in ("model", "dataset")):          # its own defaults
        recipe = "default"
    cfg = build_config(recipe, overrides)
    _check_new_run(cfg, overrides)
    return cfg


def refuse_existing_out(cfg: TrainConfig) -> None:
    """A new run's ``--out`` that holds a run already, refused before the data is loaded
    (`cnnlab train`; fit refuses it too, later)."""
    from cnnlab.run import RunDir

    if cfg.out and RunDir(cfg.out).latest_checkpoint() is not None:
        raise CnnlabError(f"{cfg.out} already holds a run; use --resume {cfg.out} or pick "
                          "another --out")


def _epochs_done(stem: Path) -> int | None:
    """The epoch a checkpoint was saved after (its JSON side file), or None if unreadable."""
    import json

    try:
        return int(json.loads(stem.with_suffix(".json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_new_run(cfg: TrainConfig, typed: dict[str, Any]) -> None:
    """What a new run is refused for, in one line, before anything is printed or loaded: an
    unknown model or data set name (with a did-you-mean), and options that would do nothing
    (``typed``: the options given, as opposed to a recipe's). (Not in
    :meth:`TrainConfig.validate`, which also reads the configs of runs saved before these
    checks existed.)"""
    from cnnlab.data.registry import get_info
    from cnnlab.models import get_model_info

    get_model_info(cfg.model)
    info = get_info(cfg.dataset)
    cfg.dataset = info.name  # ucr:gunpoint is ucr:GunPoint in the header, as in config.yaml
    if typed.get("test_fraction") is not None and not info.image_tree:
        raise CnnlabError(f"--test-fraction splits an image folder that has no test split; "
                          f"{info.name} has its own test split: drop --test-fraction")
    check_typed_options(cfg, typed)
    if cfg.init_from and (cfg.freeze is not None or cfg.freeze_until):
        from cnnlab.engine.finetune import check_freeze_names

        check_freeze_names(cfg)


def check_typed_options(cfg: TrainConfig, typed: dict[str, Any]) -> None:
    """Refuse options given (``typed``, as opposed to a recipe's, which may not all apply
    once another option is given) that would do nothing with the rest of ``cfg``: one line
    that says what to add or drop. `train` and `lr-find` check alike."""
    def given(name: str) -> bool:
        return typed.get(name) not in (None, False)

    sgd = cfg.optimizer == "sgd"
    refusals = [
        (given("momentum") and not sgd,
         f"--momentum is SGD's; {cfg.optimizer} keeps its own moving averages (betas 0.9, "
         "0.999): drop --momentum, or use --optimizer sgd"),
        (given("nesterov") and not sgd,
         f"--nesterov is SGD's momentum variant; drop it with --optimizer {cfg.optimizer}"),
        (given("cuda_graphs") and (not sgd or cfg.compile),
         "--cuda-graphs captures plain SGD steps: use --optimizer sgd without --compile, or "
         "drop --cuda-graphs"),
        ((given("gamma") or given("step_size")) and cfg.schedule != "step",
         f"--gamma and --step-size shape the step schedule, not {cfg.schedule}: add "
         "--schedule step, or drop them"),
        (given("triangle") and cfg.schedule != "triangle",
         f"--triangle shapes the triangle schedule, not {cfg.schedule}: add --schedule "
         "triangle, or drop --triangle"),
        (given("warmup_epochs") and cfg.schedule in ("onecycle", "triangle"),
         f"{cfg.schedule} rises to its peak by itself: drop --warmup-epochs (it applies to "
         "constant, step and cosine)"),
        (given("ema_start_epoch") and not cfg.ema_every,
         "--ema-start-epoch says when --ema-every's averaging starts: add --ema-every N"),
        (given("crop_pad_mode") and not cfg.crop_padding,
         "--crop-pad-mode says how --crop-padding pads: add --crop-padding N"),
    ]
    for refused, why in refusals:
        if refused:
            raise CnnlabError(why)
    if cfg.head_lr_scale != 1.0 and not cfg.init_from:
        raise CnnlabError("--head-lr-scale speeds up a new head on trained layers: add "
                          "--init-from RUN (or leave it at 1)")
    if cfg.alternate_flip and not cfg.flip:
        raise CnnlabError("--alternate-flip chooses which images --flip mirrors: add --flip")


# what a resumed run may change: how long it trains, where and how fast it runs, what it
# writes; not what it trains on or how (the checkpoint's weights and optimizer state belong
# to those, and metrics.csv would mix two runs)
RESUMABLE = frozenset({
    "epochs", "data_dir", "data_memory", "device", "precision", "threads", "compile",
    "cuda_graphs", "sync_bn", "dist_backend", "keep_checkpoints", "checkpoint_every",
    "log_every", "tensorboard", "eval_every", "eval_batch_size", "out", "channels_last"})


def _refuse_changed_training(saved: Any, given: Any) -> None:
    """One line naming every setting a resume would change that it must not."""
    from dataclasses import fields

    from cnnlab.data.registry import get_info

    def same(name: str, a: Any, b: Any) -> bool:
        if name == "dataset" and a != b:  # ucr:gunpoint is ucr:GunPoint
            try:
                return get_info(a).name == get_info(b).name
            except CnnlabError:
                return False
        return a == b

    def shown(value: Any) -> str:
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value)

    changed = [f"--{f.name.replace('_', '-')} {shown(getattr(given, f.name))} (the run has "
               f"{shown(getattr(saved, f.name))})" for f in fields(saved)
               if f.name not in RESUMABLE
               and not same(f.name, getattr(saved, f.name), getattr(given, f.name))]
    if changed:
        raise CnnlabError(f"--resume continues a run as it was trained, so it cannot change "
                          f"{'; '.join(changed)}; only --epochs and where and how it runs may "
                          "change. Start a new run, or fine-tune from this one with --init-from")


def _fit_to_source(recipe: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """With ``--init-from RUN``: the source's model unless one is named, and the data fitted
    to the source's input (``channels``, ``resize``) unless those are given."""
    from cnnlab.config import load_recipe
    from cnnlab.engine.finetune import refuse_other_model, source_input_shape

    src_model, shape = source_input_shape(overrides["init_from"])
    named = load_recipe(recipe) if recipe else {}
    dataset = overrides.get("dataset") or named.get("dataset")
    if dataset:  # an image run cannot learn series, nor a series run images: say so first
        from cnnlab.data import get_info

        source_series, target_series = len(shape) == 2, get_info(dataset).series
        if source_series != target_series:
            kinds = ("1-D series", "images") if source_series else ("images", "1-D series")
            raise CnnlabError(f"{overrides['init_from']} was trained on {kinds[0]} ({src_model})"
                              f" and '{dataset}' holds {kinds[1]}; --init-from needs a run "
                              f"trained on {kinds[1]} too (or train from scratch without it)")
    out = dict(overrides)
    if out.get("model") is None and "model" not in named:
        out["model"] = src_model
    # before any input-shape advice, which would fit the other model
    refuse_other_model(overrides["init_from"], src_model, out.get("model") or named.get("model"))
    if len(shape) == 3:
        for key, value in (("channels", shape[0]), ("resize", shape[1])):
            if out.get(key) is None and key not in named:
                out[key] = value
    return out


def train(recipe: str | TrainConfig | None = None, *, resume: str | Path | None = None,
          log: Callable[[str], None] | None = None,
          on_epoch_end: Callable[[EpochMetrics], None] | None = None,
          **overrides: Any) -> TrainResult:
    """Train as `cnnlab train` does and return the result (``run_dir``, ``history``,
    ``model``, ``config``).

    ``recipe`` is a recipe's name or file (`cnnlab recipes`), or a :class:`TrainConfig`;
    ``overrides`` are its fields, as `cnnlab train --help` lists them with ``_`` for ``-``:
    ``train("seed-mnist", epochs=3, lr=0.02, out="runs/a")``. Without ``out`` the run goes to
    ``runs/MODEL-DATASET-TIME``. ``log`` receives notes and one line per epoch (default:
    silent, like Keras' ``verbose=0``); ``on_epoch_end`` receives each epoch's metrics."""
    from dataclasses import asdict

    from cnnlab.engine.train import fit

    if isinstance(recipe, TrainConfig):  # the base, as a saved config is; then the overrides
        from cnnlab.config import build_config

        if resume is not None:
            raise CnnlabError("resume= continues a run with its saved config; give "
                              "train(resume=RUN) without a TrainConfig")
        cfg = build_config(None, overrides, base=asdict(recipe))
        _check_new_run(cfg, overrides)  # only what is typed here is checked as typed
    else:
        cfg = train_config(recipe, resume, **overrides)
    say = log or (lambda _m: None)

    def epoch_done(m: EpochMetrics) -> None:
        if log is not None:
            test = (f", test loss {m.test_loss:.4f}, test acc {m.test_acc:.4f}"
                    if m.test_acc is not None else "")
            log(f"epoch {m.epoch}/{cfg.epochs}: train loss {m.train_loss:.4f}, train acc "
                f"{m.train_acc:.4f}{test} ({m.epoch_time:.2f} s)")
        if on_epoch_end is not None:
            on_epoch_end(m)

    return fit(cfg, Path(resume) if resume is not None else None, log=say,
               on_epoch_end=epoch_done)


def evaluate(run_dir: str | Path | LoadedRun, dataset: str | None = None,
             data_dir: str | None = None, split: str = "test", batch_size: int = 1024,
             device: str = "auto") -> EvalResult:
    """Evaluate a run's final weights on a split (``accuracy``, ``loss``, ``confusion``);
    also writes eval-SPLIT.json into the run directory, as `cnnlab eval` does."""
    from cnnlab.engine.evaluate import evaluate_run

    return evaluate_run(run_dir, dataset, data_dir, split, batch_size, device)[0]
