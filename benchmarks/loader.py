"""Examples/sec of one training epoch: the tutorials' DataLoader pipelines vs cnnlab.

    python benchmarks/loader.py [--data-dir ../shared/data] [--device cpu]

- seed-mnist: seed 003's pipeline (PIL -> ToTensor -> Normalize, DataLoader batch 64,
  shuffle, 0 workers) vs `cnnlab train --recipe seed-mnist` (same model, SGD, batch 64).
- d2l-lenet-fashion: d2l's pipeline (ToTensor only, batch 256, 4 workers) vs the recipe.

Each side runs one warm-up epoch fraction, then one full timed epoch, in its own process.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sides  # noqa: E402
import baselines as B  # noqa: E402

from cnnlab.config import build_config  # noqa: E402
from cnnlab.data.load import Split  # noqa: E402
from cnnlab.data.loader import DeviceLoader  # noqa: E402
from cnnlab.engine.setup import setup_run  # noqa: E402
from cnnlab.engine.train import train_one_epoch  # noqa: E402
from cnnlab.models import create_model  # noqa: E402


def _opts(rest: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default=None)
    return p.parse_args(rest)


class _Take:
    def __init__(self, loader, n):
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def baseline_seed(rest):
    o = _opts(rest)
    dev = torch.device(o.device)
    torch.manual_seed(0)
    train, _ = B.seed_loaders(o.data_dir)
    model = create_model("mnist-net").to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    B.seed_train_epoch(model, _Take(train, 50), opt, dev)  # warm-up
    return {"examples_per_sec": B.seed_train_epoch(model, train, opt, dev)}


def baseline_d2l(rest):
    o = _opts(rest)
    dev = torch.device(o.device)
    torch.manual_seed(0)
    train, _ = B.d2l_loaders(o.data_dir)
    net = create_model("lenet5")
    B.xavier(net)
    net.to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.9)
    B.d2l_train_epoch(net, _Take(train, 20), opt, dev)
    return {"examples_per_sec": B.d2l_train_epoch(net, train, opt, dev)[2]}


def _cnnlab(recipe: str, rest) -> dict:
    o = _opts(rest)
    over = {"data_dir": o.data_dir, "device": o.device, "precision": o.precision}
    cfg = build_config(recipe, over)
    run = setup_run(cfg)
    device, data, opt, cl = run.device, run.data, run.optimizer, cfg.channels_last
    t = data.train  # warm up on a view of the first 30 batches: no second copy of the data
    n = cfg.batch_size * 30
    warm = DeviceLoader(Split(t.images[:n], t.labels[:n], data.classes), cfg.batch_size, device,
                        data.mean, data.std, shuffle=True, channels_last=cl)
    train_one_epoch(run.step_model, warm, opt, cfg, 0, 0)
    r = train_one_epoch(run.step_model, data.train, opt, cfg, 1, len(data.train))
    return {"examples_per_sec": r.examples / r.seconds, "precision": cfg.precision,
            "channels_last": cl}


SIDES = {
    "seed-baseline": baseline_seed,
    "seed-cnnlab": lambda rest: _cnnlab("seed-mnist", rest),
    "d2l-baseline": baseline_d2l,
    "d2l-cnnlab": lambda rest: _cnnlab("d2l-lenet-fashion", rest),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", choices=["seed", "d2l"], help="run one comparison")
    a = p.parse_args()
    args = ["--data-dir", a.data_dir, "--device", a.device]
    print(f"loader benchmark: {_sides.machine()}")
    pairs = [("seed", "seed-mnist"), ("d2l", "d2l-lenet-fashion")]
    rows = []
    for key, label in pairs:
        if a.only and a.only != key:
            continue
        base = _sides.run_side(__file__, f"{key}-baseline", args)
        ours = _sides.run_side(__file__, f"{key}-cnnlab", args)
        ratio = ours["examples_per_sec"] / base["examples_per_sec"]
        rows.append((label, base, ours, ratio))
        print(f"{label:<18} baseline {base['examples_per_sec']:>9,.0f} ex/s "
              f"(peak {base['peak_rss_mb']:,.0f} MB + workers {base['workers_peak_rss_mb']:,.0f} MB)"
              f" | cnnlab {ours['examples_per_sec']:>9,.0f} ex/s ({ours['precision']}, "
              f"{'channels_last' if ours['channels_last'] else 'contiguous'}, peak "
              f"{ours['peak_rss_mb']:,.0f} MB) | ratio {ratio:.2f}x", flush=True)


if __name__ == "__main__":
    if not _sides.dispatch(SIDES):
        main()
