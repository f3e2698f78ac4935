"""The modern CNN family on Fashion-MNIST: d2l's recipes and their CPU-sized ``-small`` ones.

    python benchmarks/modern.py --data-dir ../shared/data [--only small|d2l] [--d2l-images N]
                                [--recipes fashion-nin-small,d2l-nin-fashion]

- ``small``: every ``fashion-*-small`` recipe, trained in full with ``cnnlab train -r RECIPE``:
  final test accuracy and training time.
- ``d2l``: every ``d2l-*-fashion`` recipe (d2l's model, input size, lr and batch) for one
  epoch. On 2 CPU cores a full epoch at 224x224 takes hours, so unless ``--d2l-images`` is 0
  the epoch runs on the first N training images (``--limit-train``): the examples/sec is
  measured and the time of a full 60,000-image epoch is that rate extrapolated; the accuracy
  after N images is printed too, but it is not a full epoch's. ``lenet-bn`` always runs the
  full epoch. d2l's own figures (GPU) are in each recipe's description.

Every run is the real command line; numbers are read back from the run's metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parents[1] / "src" / "cnnlab" / "recipes"
SMALL = ["fashion-alexnet-small", "fashion-vgg11-small", "fashion-nin-small",
         "fashion-googlenet-small", "fashion-resnet18-small", "fashion-densenet-small"]
D2L = ["d2l-lenet-bn-fashion", "d2l-alexnet-fashion", "d2l-vgg-fashion", "d2l-nin-fashion",
       "d2l-googlenet-fashion", "d2l-resnet-fashion", "d2l-densenet-fashion"]


def run(recipe: str, out: Path, *extra: str) -> tuple[list[dict], float]:
    if (out / "config.yaml").is_file():  # this script's own earlier run of the recipe
        print(f"(replacing the earlier run in {out})", flush=True)
        shutil.rmtree(out)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "-r", recipe, "--out", str(out),
                        *extra], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{recipe} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                   help="where Fashion-MNIST is [../shared/data next to the repository]")
    p.add_argument("--work", type=Path, default=Path("runs/modern-bench"),
                   help="where the runs go (a rerun replaces a recipe's earlier run there)")
    p.add_argument("--only", choices=["small", "d2l"],
                   help="only the -small recipes, or only the d2l ones [both]")
    p.add_argument("--d2l-images", type=int, default=2560,
                   help="training images for the d2l recipes' epoch (0: all 60,000)")
    p.add_argument("--recipes", help="comma-separated recipe names: run only these")
    a = p.parse_args()
    chosen = set(a.recipes.split(",")) if a.recipes else None
    unknown = chosen - set(SMALL + D2L) if chosen else set()
    if unknown:
        sys.exit(f"unknown recipe(s) {', '.join(sorted(unknown))}: pick from {', '.join(SMALL + D2L)}")
    data = ["--data-dir", a.data_dir]
    if a.only != "d2l" and (chosen is None or chosen & set(SMALL)):
        print("| recipe | model | epochs | test accuracy | training time | wall time |")
        print("|---|---|---|---|---|---|")
        for recipe in (r for r in SMALL if chosen is None or r in chosen):
            cfg = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())
            rows, wall = run(recipe, a.work / recipe, *data)
            train = sum(r["train_time"] for r in rows)
            print(f"| `{recipe}` | {cfg['model']} | {len(rows)} | {rows[-1]['test_acc']:.4f} | "
                  f"{train:.0f} s | {wall:.0f} s |", flush=True)
    if a.only != "small" and (chosen is None or chosen & set(D2L)):
        print("\n| recipe | model | input | images trained | examples/s | epoch of 60,000 | "
              "test acc after them |")
        print("|---|---|---|---|---|---|---|")
        for recipe in (r for r in D2L if chosen is None or r in chosen):
            cfg = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())
            n = 60000 if a.d2l_images == 0 or cfg["model"] == "lenet-bn" else a.d2l_images
            limit = [] if n == 60000 else ["--limit-train", str(n)]
            rows, _ = run(recipe, a.work / recipe, *data, "--epochs", "1", *limit,
                          "--limit-test", "2000")
            rate = rows[0]["examples_per_sec"]
            epoch = 60000 / rate
            shown = f"{epoch:.0f} s" if epoch < 600 else f"{epoch / 60:.0f} min"
            print(f"| `{recipe}` | {cfg['model']} | {cfg.get('resize') or 28} | {n:,} | "
                  f"{rate:,.0f} | {shown}{'' if n == 60000 else ' (extrapolated)'} | "
                  f"{rows[0]['test_acc']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
