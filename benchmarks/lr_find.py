"""Are lr-find's suggestions good learning rates? fastai's rule against cnnlab's, checked
against real training.

    python benchmarks/lr_find.py --data-dir ../shared/data [--configs default,seed-mnist]

For each configuration (a recipe or a model on a data set):

1. Two sweeps (seeds 0 and 1) of ``lr_find_config``: 100 steps from 1e-7 to 10.
2. Both rules read suggestions off the same raw losses:
   - fastai's: the bias-corrected moving average (beta 0.98), valley = halfway along the
     longest descent of the whole trimmed curve;
   - cnnlab's (``cnnlab.engine.lr_find.suggest``): the centred smoothing, the valley's descent
     starting a tenth of the way down.
3. The truth: the same configuration trained for 300 steps at each of ten constant lrs
   (3e-5 .. 1, half-decade steps); the mean training loss of the last 60 steps. A suggestion
   is scored by that loss at its lr (interpolated in log lr between the grid points).

Prints, per configuration and seed, the best grid lr and its loss, and each rule's valley,
steep and minimum/10 with the loss they lead to. Slow on purpose (about 25 minutes for the
default set on 2 CPU cores): the truth is 300 real training steps per lr.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from cnnlab.api import train_config
from cnnlab.engine.build import build, model_config
from cnnlab.engine.lr_find import _batches, _longest_descent, centred, lr_find_config, suggest, trim
from cnnlab.engine.optim import set_lr
from cnnlab.engine.train import training_step

GRID = [10 ** (k / 2) for k in range(-9, 1)]  # 3e-5 .. 1


def configs(data_dir: str) -> dict:
    """Cheap on a CPU, and spread over optimizers, depths and data sets."""
    d = {"data_dir": data_dir}
    return {
        "default": lambda: train_config("default", None),
        "mnist-net-adam": lambda: model_config("mnist-net", {"dataset": "digits",
                                                             "optimizer": "adam"}),
        "seed-mnist": lambda: train_config("seed-mnist", None, **d, limit_train=20000),
        "seed-mnist-resnet": lambda: train_config("seed-mnist-resnet", None, **d,
                                                  limit_train=20000),
        "lenet5-relu-fashion": lambda: model_config("lenet5-relu", {
            "dataset": "fashion-mnist", **d, "batch_size": 256, "limit_train": 30000}),
        "d2l-lenet-fashion": lambda: train_config("d2l-lenet-fashion", None, **d,
                                                  limit_train=30000),
    }


def fastai_rule(lrs: list[float], losses: list[float], steps: int) -> dict[str, float]:
    """fastai's suggestions: read off the moving average, valley over the whole curve."""
    avg, sm = 0.0, []
    for i, v in enumerate(losses):
        avg = 0.98 * avg + 0.02 * v
        sm.append(avg / (1 - 0.98 ** (i + 1)))
    ok = np.isfinite(sm)
    n = len(sm) if ok.all() else int(np.argmin(ok))
    head, tail = trim(steps)
    lr, loss = np.asarray(lrs[head:n - tail]), np.asarray(sm[head:n - tail])
    first, last = _longest_descent(loss)
    third = (last - first) / 3
    slope = np.diff(loss) / np.diff(np.log(lr))
    return {"valley": float(lr[first + int(third) + int(third / 2)]),
            "steep": float(lr[int(np.argmin(slope))]),
            "minimum/10": float(lr[int(np.argmin(loss))] / 10)}


def truth(make) -> dict[float, float]:
    """Mean training loss of steps 240-300 at each constant lr (inf if it diverged)."""
    out = {}
    for lr in GRID:
        built = build(make(), lambda _m: None)
        if hasattr(built.model, "on_epoch_start"):
            built.model.on_epoch_start(0)
        built.step_model.train()
        batches, losses = _batches(built.train), []
        for _ in range(300):
            x, y = next(batches)
            set_lr(built.optimizer, lr)
            loss, _ = training_step(built.step_model, built.optimizer, built.criterion, x, y,
                                    built.cfg.precision)
            losses.append(float(loss))
            if not math.isfinite(losses[-1]):
                break
        out[lr] = float(np.mean(losses[-60:])) if len(losses) == 300 else math.inf
    return out


def loss_at(table: dict[float, float], lr: float) -> float:
    grid = np.log(list(table))
    values = np.array([v if math.isfinite(v) else 10.0 for v in table.values()])
    return float(np.interp(math.log(lr), grid, values))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--configs", help="comma-separated subset of: " + ", ".join(configs("")))
    args = ap.parse_args()
    table = configs(args.data_dir)
    names = args.configs.split(",") if args.configs else list(table)
    print("config               seed  best lr (loss) | rule    valley (loss)   steep (loss)"
          "    minimum/10 (loss)")
    for name in names:
        t0 = time.time()
        make = table[name]
        sweeps = []
        for seed in (0, 1):
            cfg = make()
            cfg.seed = seed
            sweeps.append(lr_find_config(cfg, 1e-7, 10.0, 100))
        real = truth(make)
        best = min(real, key=real.get)
        for seed, r in enumerate(sweeps):
            rules = {"fastai": fastai_rule(r.lrs, r.losses, 100),
                     "cnnlab": suggest(r.lrs, centred(r.losses, 100), *trim(100))}
            for rule, got in rules.items():
                cells = "  ".join(f"{got[k]:8.2g} ({loss_at(real, got[k]):.3f})"
                                  for k in ("valley", "steep", "minimum/10"))
                print(f"{name:20s} {seed:4d}  {best:7.0e} ({real[best]:.3f}) | {rule:6s} {cells}")
        print(f"  {name}: grid " + " ".join(f"{k:.0e}:{v:.3f}" for k, v in real.items())
              + f"  [{time.time() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
