"""Transfer learning, end to end: a CIFAR-10 model fine-tuned on a small folder of another
data set's images, against the same network trained from scratch on that folder.

    python benchmarks/finetune.py --data-dir ../shared/data [--source RUN] [--seeds 3]

1. The source: ``cnnlab train --recipe cifar-fast --model airbench-small`` (airbench's design,
   narrower, so that it trains in minutes on a CPU) on the JPEG CIFAR-10 copy, for
   ``--source-epochs`` (on ``--source-limit`` training images if given), unless ``--source``
   names a trained run.
2. The folder: ``--per-class`` training images (and 200 test images) of five Fashion-MNIST
   classes, written as 28x28 grey PNGs under WORK/fashion5/{train,test}/<class>/: the kind of
   small, different data set a user brings.
3. For each seed, with the ``finetune`` recipe (30 epochs, batch 32, SGD + Nesterov, cosine):
   - from scratch: the source's model (its whitening layer computed from the folder);
   - fine-tuned: ``--init-from SOURCE`` (new 5-class head, every layer trained);
   - fine-tuned with the first conv group frozen: ``--freeze-until group1``;
   and, to be fair to training from scratch, scratch again at lr x 0.25 and x 4.
   The folder's grey images are fitted to the source's input (3x32x32) in every run.

Every run is the real command line; accuracies are read from each run's metrics. Prints a
table: mean and per-seed test accuracy of each arm, and training time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

CLASSES = {0: "tshirt", 2: "pullover", 3: "dress", 7: "sneaker", 8: "bag"}  # Fashion-MNIST ids


def cnnlab(*args: str) -> float:
    """Run ``cnnlab ARGS``; return its wall time (fail loudly with its output)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"cnnlab {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return time.perf_counter() - t0


def final(run: Path) -> tuple[float, float]:
    """(final test accuracy, training seconds) from a run's metrics."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["test_acc"], sum(r["train_time"] for r in rows)


def make_folder(root: Path, data_dir: str, per_class: int, test_per_class: int = 200) -> None:
    """Five Fashion-MNIST classes: the first ``per_class`` training images of each, and the
    first ``test_per_class`` test images, as PNG files."""
    from PIL import Image

    from cnnlab.data import load_split

    if (root / "DONE").is_file() and (root / "DONE").read_text() == str(per_class):
        return
    for split, n in (("train", per_class), ("test", test_per_class)):
        data = load_split("fashion-mnist", split, data_dir)
        for label, name in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for f in folder.glob("*.png"):
                f.unlink()
            idx = (data.labels == label).nonzero().flatten()[:n]
            for i in idx.tolist():
                Image.fromarray(data.images[i, 0].numpy()).save(folder / f"{i:05d}.png")
    (root / "DONE").write_text(str(per_class))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                   help="the data root [../shared/data next to the repository]")
    p.add_argument("--work", type=Path, default=Path("runs/finetune-demo"))
    p.add_argument("--source", type=Path, help="a trained CIFAR-10 run (skips step 1)")
    p.add_argument("--source-epochs", type=int, default=5)
    p.add_argument("--source-limit", type=int, default=None)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    threads = ["--threads", str(a.threads)] if a.threads else []
    a.work.mkdir(parents=True, exist_ok=True)

    source = a.source
    if source is None:
        source = a.work / "source"
        if not (source / "model.safetensors").is_file():
            print(f"1. source: cifar-fast's recipe with airbench-small on cifar10-jpeg, "
                  f"{a.source_epochs} epochs ...", flush=True)
            limit = ["--limit-train", str(a.source_limit)] if a.source_limit else []
            secs = cnnlab("train", "--recipe", "cifar-fast", "--model", "airbench-small",
                          "--data-dir", a.data_dir, "--epochs", str(a.source_epochs), *limit,
                          "--ema-start-epoch", "1", "--out", str(source), *threads)
            print(f"   done in {secs:.0f} s", flush=True)
    acc, secs = final(source)
    model = yaml.safe_load((source / "config.yaml").read_text())["model"]
    print(f"   source {source}: CIFAR-10 test accuracy {acc:.4f} ({secs:.0f} s of training)")

    folder = a.work / "fashion5"
    make_folder(folder, a.data_dir, a.per_class)
    print(f"2. folder {folder}: {len(CLASSES)} Fashion-MNIST classes "
          f"({', '.join(CLASSES.values())}), {a.per_class} training and 200 test images each")

    common = ["--recipe", "finetune", "--dataset", "folder", "--data-dir", str(folder),
              "--channels", "3", "--resize", "32", *threads]
    arms = {
        "scratch": ["--model", model],
        "scratch, lr x 0.25": ["--model", model, "--lr", "0.005"],
        "scratch, lr x 4": ["--model", model, "--lr", "0.08"],
        "fine-tuned": ["--init-from", str(source)],
        "fine-tuned, group1 frozen": ["--init-from", str(source), "--freeze-until", "group1"],
    }
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in arms}
    print("3. runs (finetune recipe: 30 epochs, batch 32, SGD + Nesterov, cosine)", flush=True)
    for seed in range(a.seeds):
        for arm, extra in arms.items():
            out = a.work / f"{arm.replace(' ', '').replace(',', '-')}-seed{seed}"
            if not (out / "model.safetensors").is_file():
                cnnlab("train", *common, *extra, "--seed", str(seed), "--out", str(out))
            results[arm].append(final(out))
            print(f"   seed {seed} {arm:<27} {results[arm][-1][0]:.4f}", flush=True)

    print(f"\n| arm | test accuracy, mean of {a.seeds} | per seed | training time |")
    print("|---|---|---|---|")
    for arm, rows in results.items():
        accs = [r[0] for r in rows]
        print(f"| {arm} | {statistics.mean(accs):.4f} | {' '.join(f'{x:.4f}' for x in accs)} | "
              f"{statistics.mean(r[1] for r in rows):.1f} s |")


if __name__ == "__main__":
    main()
