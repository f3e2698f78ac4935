"""GPU figures for the fast recipes, one command per data group (for a lent GPU machine).

    python benchmarks/gpu.py mnist --data-dir DATA [--seeds 5]   # mnist-fast, d2l LeNet ex/s
    python benchmarks/gpu.py cifar --data-dir DATA [--seeds 5]   # cifar-fast on the JPEG zip
    python benchmarks/gpu.py cifar --data-dir DATA --recipe cifar-res [--variant epochs=31]
    python benchmarks/gpu.py cifar --data-dir DATA --reference   # the public airbench94 first,
                                               # then cifar-fast, in one process on one GPU

Each recipe (and variant) runs one untimed epoch first (cuDNN autotuning, graph capture,
allocator warm-up), then once per seed. "train s" is the time in training steps only
(synchronised at the end of each epoch); "eval s" the per-epoch evaluations (the last one
with TTA where the recipe asks for it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sides  # noqa: E402

from cnnlab.config import build_config  # noqa: E402
from cnnlab.engine.train import fit  # noqa: E402
from cnnlab.errors import CnnlabError  # noqa: E402


def run_recipe(recipe: str, data_dir: str, seed: int, **over) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config(recipe, {"data_dir": data_dir, "device": "cuda", "seed": seed,
                                    "out": str(Path(tmp) / "run"), **over})
        t = time.perf_counter()
        r = fit(cfg, log=lambda _m: None)
        wall = time.perf_counter() - t
    h = r.history
    train_s = sum(m.train_time for m in h)
    eval_s = sum(m.epoch_time - m.train_time for m in h)
    return {"recipe": recipe, "seed": seed, "acc": h[-1].test_acc, "train_s": train_s,
            "eval_s": eval_s, "last_eval_s": h[-1].epoch_time - h[-1].train_time,
            "wall_s": wall, "examples_per_sec": statistics.mean(m.examples_per_sec for m in h[1:] or h),
            "precision": (r.config or cfg).precision,  # resolved: auto -> bf16 or fp32
            "curve": [None if m.test_acc is None else round(m.test_acc, 4) for m in h]}


def many(recipe: str, data_dir: str, seeds: int, **over) -> list[dict]:
    if seeds < 1:
        return []
    run_recipe(recipe, data_dir, 1000, **{**over, "epochs": 1})  # warm-up (cuDNN autotuning)
    runs = []
    for s in range(seeds):
        runs.append(run_recipe(recipe, data_dir, s, **over))
        r = runs[-1]
        print(f"  {recipe} seed {s}: acc {r['acc']:.4f}  train {r['train_s']:.2f} s  "
              f"eval {r['eval_s']:.2f} s  wall {r['wall_s']:.2f} s  {r['examples_per_sec']:,.0f} ex/s "
              f"({r['precision']}) curve {r['curve']}", flush=True)
    accs = [r["acc"] for r in runs]
    print(f"{recipe}: mean acc {statistics.mean(accs):.4f} (min {min(accs):.4f}, n={len(accs)}), "
          f"mean train {statistics.mean(r['train_s'] for r in runs):.2f} s, mean train + final "
          f"eval {statistics.mean(r['train_s'] + r['last_eval_s'] for r in runs):.2f} s", flush=True)
    return runs


def graphs_check(data_dir: str) -> dict:
    """Eager vs CUDA-graph steps, fp32, same seed: per-step losses must agree closely."""
    curves = {}
    for graphs in (False, True):
        losses: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            cfg = build_config("mnist-fast", {"data_dir": data_dir, "device": "cuda", "seed": 0,
                                              "precision": "fp32", "log_every": 1,
                                              "cuda_graphs": graphs, "out": str(Path(tmp) / "r")})
            r = fit(cfg, log=lambda _m: None,
                    progress=lambda _s, _n, loss, out=losses: out.append(loss))
        curves[graphs] = (losses, r.history[-1].test_acc)
    (a, acc_a), (b, acc_b) = curves[False], curves[True]
    rel = [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b, strict=True)]
    print(f"graphs-check: {len(a)} steps; first 5 eager {[round(x, 5) for x in a[:5]]} graphed "
          f"{[round(x, 5) for x in b[:5]]}; max rel diff first 20 steps {max(rel[:20]):.2e}, "
          f"all steps {max(rel):.2e}; test acc eager {acc_a:.4f} graphed {acc_b:.4f}", flush=True)
    return {"rel_first20": max(rel[:20]), "rel_all": max(rel), "acc": [acc_a, acc_b]}


def airbench_final_row(text: str) -> tuple[float, float]:
    """(TTA accuracy, seconds) from the final row airbench's ``train94`` prints: its own
    timer (whitening init + training steps + the final TTA evaluation, CUDA events)."""
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith("|")]
    final = [r for r in rows if len(r) == 7 and r[1] == "eval"]
    if not final:
        raise CnnlabError("airbench printed no final 'eval' row; its log format has changed")
    return float(final[-1][5]), float(final[-1][6])


def airbench_reference(data_dir: str, seeds: int) -> list[dict]:
    """The public airbench package's airbench94, its own code and timer, fed the decoded
    JPEG copy: cnnlab writes the uint8 tensors as the ``cifar10/{train,test}.pt`` files its
    ``CifarLoader`` reads (NHWC, as torchvision's CIFAR10.data), in a temporary folder."""
    import contextlib
    import io

    try:
        import airbench
    except ImportError as e:
        raise CnnlabError(f"--reference needs the airbench package ({e}); pip install "
                          "airbench (it imports torchvision)") from None
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("airbench")
    except PackageNotFoundError:
        package = "?"
    from cnnlab.data import load_split

    runs = []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cifar10").mkdir()
        for split in ("train", "test"):
            d = load_split("cifar10-jpeg", split, data_dir)
            images, labels = d.images, d.labels
            if split == "train":  # the zip is sorted by class, and airbench whitens from its
                # first 5,000 images: shuffle once (fixed), as torchvision's CIFAR10 order is
                order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
                images, labels = images[order], labels[order]
            torch.save({"images": images.permute(0, 2, 3, 1).contiguous(),
                        "labels": labels.long(), "classes": list(d.classes)},
                       Path(tmp) / "cifar10" / f"{split}.pt")
        os.chdir(tmp)  # airbench reads ./cifar10/
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                airbench.warmup94()
            for seed in range(seeds):
                torch.manual_seed(seed)
                log = io.StringIO()
                with contextlib.redirect_stdout(log):
                    airbench.train94(run=seed)
                acc, secs = airbench_final_row(log.getvalue())
                runs.append({"seed": seed, "acc": acc, "seconds": secs})
                print(f"  airbench94 (package {package}) seed {seed}: tta acc "
                      f"{acc:.4f}  {secs:.2f} s (its timer: init + train + TTA eval)", flush=True)
        finally:
            os.chdir(cwd)
    print(f"airbench94 reference: mean acc {statistics.mean(r['acc'] for r in runs):.4f}, mean "
          f"{statistics.mean(r['seconds'] for r in runs):.2f} s (n={len(runs)})", flush=True)
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["mnist", "cifar", "graphs-check"])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--recipe", action="append", default=[],
                   help="cifar: the recipe(s) to run (default cifar-fast); variants use the first")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--variant", action="append", default=[],
                   help="also run the recipe with overrides KEY=VALUE[,KEY=VALUE] (--variant-seeds seeds)")
    p.add_argument("--variant-seeds", type=int, default=2)
    p.add_argument("--reference", action="store_true",
                   help="cifar: run the public airbench package's airbench94 first and print "
                        "the time ratio of the first recipe to it")
    a = p.parse_args()
    recipes = a.recipe or ["cifar-fast"]
    print(f"gpu benchmark: {_sides.machine()}, cudnn {torch.backends.cudnn.version()}", flush=True)
    results: dict = {"machine": _sides.machine()}
    if a.what == "graphs-check":
        results["graphs-check"] = graphs_check(a.data_dir)
    elif a.what == "mnist":
        results["mnist-fast"] = many("mnist-fast", a.data_dir, a.seeds)
        for prec in ("fp32", "auto"):
            r = run_recipe("d2l-lenet-fashion", a.data_dir, 0, precision=prec)
            results[f"d2l-{prec}"] = r
            print(f"d2l-lenet-fashion ({r['precision']}): {r['examples_per_sec']:,.0f} examples/s "
                  f"(d2l's figure on its GPU: 82k), acc {r['acc']:.4f}, curve {r['curve']}",
                  flush=True)
        r = run_recipe("seed-mnist", a.data_dir, 0)
        results["seed-mnist"] = r
        print(f"seed-mnist: {r['examples_per_sec']:,.0f} examples/s, acc {r['acc']:.4f}", flush=True)
    else:
        t = time.perf_counter()
        from cnnlab.data import load_split

        load_split("cifar10-jpeg", "train", a.data_dir)
        load_split("cifar10-jpeg", "test", a.data_dir)
        print(f"decoded the CIFAR-10 JPEG zip in {time.perf_counter() - t:.1f} s", flush=True)
        if a.reference:
            try:  # a failing reference must not cost the cnnlab figures of this one GPU run
                results["airbench94"] = airbench_reference(a.data_dir, a.seeds)
            except Exception as e:  # noqa: BLE001 - reported, then the recipes run
                print(f"airbench94 reference failed: {type(e).__name__}: {e}", flush=True)
        for recipe in recipes:
            results[recipe] = many(recipe, a.data_dir, a.seeds)
        if results.get("airbench94") and a.seeds > 0:
            ref, ours = results["airbench94"], results[recipes[0]]
            ref_s = statistics.mean(r["seconds"] for r in ref)
            ours_s = statistics.mean(r["train_s"] + r["last_eval_s"] for r in ours)
            print(f"{recipes[0]} vs airbench94: acc {statistics.mean(r['acc'] for r in ours):.4f}"
                  f" vs {statistics.mean(r['acc'] for r in ref):.4f}; time (train + final eval) "
                  f"{ours_s:.2f} s vs {ref_s:.2f} s = {ours_s / ref_s:.2f}x (target <= 0.8x)",
                  flush=True)
    if a.what == "graphs-check":
        return
    recipe = "mnist-fast" if a.what == "mnist" else recipes[0]
    for v in a.variant:
        over = dict(kv.split("=", 1) for kv in v.split(","))
        print(f"variant {recipe} {over}:", flush=True)
        results[f"{recipe} {v}"] = many(recipe, a.data_dir, a.variant_seeds, **over)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"gpu-{a.what}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    try:
        main()
    except CnnlabError as e:  # bad recipe, variant or data dir: one line, not a traceback
        raise SystemExit(f"gpu.py: {e}") from None
