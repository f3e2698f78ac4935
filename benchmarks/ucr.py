"""UCR/UEA time series: fcn and resnet1d (Wang et al. 2017) against their published accuracies.

    python benchmarks/ucr.py [--seeds 3] [--budget 45] [--only GunPoint,OSULeaf]
                             [--models fcn,resnet1d] [--epochs N] [--threads N]

For each data set (aeon's bundled GunPoint, ItalyPowerDemand, ArrowHead, BasicMotions,
OSULeaf) and model, the recipe ``ucr-MODEL`` trains ``--seeds`` seeds, each in its own
process, through the library call `cnnlab train` makes (``fit``), and the final test accuracy
is compared with the published mean accuracy.

Epochs: the target is at most a minute of training per data set, and an epoch of OSULeaf
(200 series of 427 steps) costs 11x one of GunPoint (50 of 150). So, unless ``--epochs``
fixes them, each (data set, model) is first timed for a few seconds of training steps on this
machine (as ``cnnlab bench`` times them, in its own process), and gets as many epochs as fit in
``--budget`` seconds of training steps (at least 10, at most 1000); every seed then trains
that many epochs. The table gives the epochs, so a row can be re-run exactly with
``cnnlab train --recipe ucr-MODEL --dataset ucr:NAME --epochs N --seed S``.

Time: "fit s" is the whole ``fit()`` call (data from the decode cache, model set-up, every
training step, the recipe's test passes and checkpoints; not the one-off import of torch's
compiler stack that the first optimizer of a fresh process triggers, 3-9 s on 2 cores);
"steps s" the training steps alone. "met": mean accuracy >= the published mean - 0.01, and
mean fit time <= 60 s.

Published figures (mean accuracy; Wang et al. report one run's test error, given as 1 - error):

- Fawaz et al. 2019, "Deep learning for time series classification: a review" (DMKD), mean
  of 10 runs on the UCR/UEA 2015 archive: the table in the README of github.com/hfawaz/dl-4-tsc
  (commit e0233efd886df8c6ca18e6f1b545d15aaf423627), the same as results/results-uea-avg-std.csv
  for the rows present there: Gun_Point FCN 100.0 (0.0), ResNet 99.1 (0.7); ItalyPowerDemand
  96.1 (0.3), 96.3 (0.4); ArrowHead 84.3 (1.5), 84.5 (1.2); OSULeaf 97.7 (0.9), 97.9 (0.8).
- Wang, Yan & Oates 2017 (arXiv:1611.06455), test error of FCN / ResNet, from the table in the
  README of github.com/cauchyturing/UCR_Time_Series_Classification_Deep_Learning_Baseline
  (commit 3ecc8971fa768bd01ada7f3a613688255e6256c2): GunPoint 0 / 0.007, ItalyPower 0.03 /
  0.040, ArrowHead 0.120 / 0.183, OSULeaf 0.012 / 0.021.
- BasicMotions (UEA 2018 multivariate archive) is in neither paper (Fawaz et al.'s
  multivariate results use Baydogan's older MTS archive): no published FCN/ResNet figure is
  compared; the row only reports what cnnlab reaches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sides  # noqa: E402

DATASETS = ("GunPoint", "ItalyPowerDemand", "ArrowHead", "BasicMotions", "OSULeaf")
MODELS = ("fcn", "resnet1d")
# (Fawaz et al. 2019 mean of 10 runs, Wang et al. 2017 1 - error), by data set and model
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "GunPoint": {"fcn": (1.000, 1.000), "resnet1d": (0.991, 0.993)},
    "ItalyPowerDemand": {"fcn": (0.961, 0.970), "resnet1d": (0.963, 0.960)},
    "ArrowHead": {"fcn": (0.843, 0.880), "resnet1d": (0.845, 0.817)},
    "OSULeaf": {"fcn": (0.977, 0.988), "resnet1d": (0.979, 0.979)},
}
TOLERANCE = 0.01  # "met": mean accuracy at least the published mean minus this
TIME_LIMIT = 60.0  # seconds of fit() per run
MIN_EPOCHS, MAX_EPOCHS = 10, 1000


def _opts(rest: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int)
    p.add_argument("--threads", type=int)
    return p.parse_args(rest)


def _config(o: argparse.Namespace, out: str | None = None):
    from cnnlab.config import build_config

    over = {"dataset": f"ucr:{o.dataset}", "seed": o.seed, "epochs": o.epochs,
            "threads": o.threads, "device": "cpu", "out": out}
    return build_config(f"ucr-{o.model}", over)


def calibrate(rest: list[str]) -> dict:
    """Series per second in the recipe's training steps on this data set, timed as `cnnlab
    bench` times them (the real loader, optimizer and step), as the median of three windows
    of about 2 s each: one window is easily thrown off on a shared machine."""
    from cnnlab.engine.build import build
    from cnnlab.engine.train import training_step

    o = _opts(rest)
    run = build(_config(o))

    it = run.train.forever()
    run.model.train()

    def steps(n: int) -> tuple[float, int]:
        seen, t = 0, time.perf_counter()
        for _ in range(n):
            x, y = next(it)
            training_step(run.step_model, run.optimizer, run.criterion, x, y, run.cfg.precision)
            seen += len(y)
        return time.perf_counter() - t, seen

    steps(3)  # warm-up
    took, _ = steps(5)
    per_window = max(5, int(5 * 2.0 / max(took, 1e-3)))
    rates = sorted(seen / took for took, seen in (steps(per_window) for _ in range(3)))
    return {"examples_per_sec": rates[1], "rates": rates, "n_train": len(run.train.labels),
            "drop_last": run.cfg.drop_last, "batch_size": run.cfg.batch_size}


def train(rest: list[str]) -> dict:
    import torch

    from cnnlab.engine.train import fit

    o = _opts(rest)
    # building the first optimizer of a process imports torch's compiler stack (torch._dynamo,
    # 3-9 s here): interpreter start-up, paid by every fresh `cnnlab train`, not training
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(o, str(Path(tmp) / "run"))
        t = time.perf_counter()
        result = fit(cfg, log=lambda _m: None)
        seconds = time.perf_counter() - t
    h = result.history
    return {"accuracy": h[-1].test_acc, "fit_seconds": seconds, "epochs": len(h),
            "step_seconds": sum(m.train_time for m in h),
            "curve": [(m.epoch, m.test_acc) for m in h if m.test_acc is not None]}


SIDES = {"calibrate": calibrate, "train": train}


def _epochs(cal: dict, budget: float) -> int:
    per_epoch = cal["n_train"]
    if cal["drop_last"]:
        per_epoch = per_epoch // cal["batch_size"] * cal["batch_size"]
    n = int(budget * cal["examples_per_sec"] / max(per_epoch, 1))
    return max(MIN_EPOCHS, min(MAX_EPOCHS, n))


def _check(datasets: list[str], models: list[str]) -> list[str]:
    """The data sets as aeon spells them (``gunpoint`` -> ``GunPoint``, so the published
    figures are found); one line for a name that would otherwise fail inside the first
    timed process."""
    from cnnlab.data import get_info
    from cnnlab.errors import CnnlabError

    bad = [m for m in models if m not in MODELS]
    if bad:
        sys.exit(f"error: unknown model(s) {', '.join(bad)}: --models takes "
                 f"{', '.join(MODELS)}")
    names = []
    for ds in datasets:
        try:
            names.append(get_info(f"ucr:{ds}").name.split(":", 1)[1])
        except CnnlabError as e:
            sys.exit(f"error: --only {ds}: {e}")
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds per data set and model")
    p.add_argument("--budget", type=float, default=45.0,
                   help="seconds of training steps per run, for choosing the epochs")
    p.add_argument("--epochs", type=int, help="fixed epochs for every run (no timing)")
    p.add_argument("--only", help="comma-separated data sets [all five]")
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated models [{','.join(MODELS)}]")
    p.add_argument("--threads", type=int, help="CPU threads [PyTorch's choice]")
    a = p.parse_args()
    datasets = a.only.split(",") if a.only else list(DATASETS)
    models = a.models.split(",")
    datasets = _check(datasets, models)
    print(f"UCR/UEA benchmark: {_sides.machine()}; budget {a.budget:.0f} s of steps per run"
          if a.epochs is None else f"UCR/UEA benchmark: {_sides.machine()}; {a.epochs} epochs",
          flush=True)
    rows = []
    for ds in datasets:
        for model in models:
            common = ["--dataset", ds, "--model", model]
            if a.threads:
                common += ["--threads", str(a.threads)]
            epochs = a.epochs
            if epochs is None:
                cal = _sides.run_side(__file__, "calibrate", common)
                epochs = _epochs(cal, a.budget)
                spread = "/".join(f"{r:.0f}" for r in cal["rates"])
                print(f"{ds} {model}: {cal['examples_per_sec']:.0f} series/s in training "
                      f"steps (3 windows: {spread}) -> {epochs} epochs", flush=True)
            runs = []
            for seed in range(a.seeds):
                r = _sides.run_side(__file__, "train",
                                    [*common, "--epochs", str(epochs), "--seed", str(seed)])
                print(f"  seed {seed}: accuracy {r['accuracy']:.4f}, fit {r['fit_seconds']:.1f} s "
                      f"(steps {r['step_seconds']:.1f} s), test curve "
                      f"{[(e, round(acc, 3)) for e, acc in r['curve']]}", flush=True)
                runs.append(r)
            rows.append((ds, model, epochs, runs))
    print()
    print(_table(rows))


def _table(rows: list) -> str:
    head = ("| data set | model | epochs | accuracy per seed | mean | fit s (mean) | steps s | "
            "Fawaz 2019 | Wang 2017 | met |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for ds, model, epochs, runs in rows:
        accs = [r["accuracy"] for r in runs]
        mean = statistics.mean(accs)
        fit_s = statistics.mean(r["fit_seconds"] for r in runs)
        step_s = statistics.mean(r["step_seconds"] for r in runs)
        pub = PUBLISHED.get(ds, {}).get(model)
        if pub is None:
            fawaz = wang = "-"
            met = "no figure" + (" (time ok)" if fit_s <= TIME_LIMIT else " (over 60 s)")
        else:
            fawaz, wang = f"{pub[0]:.3f}", f"{pub[1]:.3f}"
            acc_ok, time_ok = mean >= pub[0] - TOLERANCE, fit_s <= TIME_LIMIT
            met = ("**met**" if acc_ok and time_ok else
                   "not met (" + ", ".join(w for w, ok in (("accuracy", acc_ok),
                                                         ("time", time_ok)) if not ok) + ")")
        lines.append(f"| {ds} | {model} | {epochs} | {' '.join(f'{x:.4f}' for x in accs)} | "
                     f"{mean:.4f} | {fit_s:.1f} | {step_s:.1f} | {fawaz} | {wang} | {met} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if not _sides.dispatch(SIDES):
        main()
