"""`cnnlab lr-find`: the sweep, its suggestions, the plot, and that nothing is left changed."""

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.data import load_split
from cnnlab.engine.lr_find import centred, disagreement, lr_find, lr_find_config, plot_lr_find, suggest, trim
from cnnlab.errors import CnnlabError

PNG = b"\x89PNG\r\n\x1a\n"


def _digits_loader(batch_size=32):
    split = load_split("digits", "train")
    data = torch.utils.data.TensorDataset(split.images.float() / 255, split.labels)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)


def _tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Dropout(0.1), nn.Linear(32, 10))


class _StatefulLoader:
    """A loader with its own position (like torchdata's StatefulDataLoader)."""

    def __init__(self, loader):
        self.loader, self.served = loader, 0

    def __iter__(self):
        for batch in self.loader:
            self.served += 1
            yield batch

    def state_dict(self):
        return {"served": self.served}

    def load_state_dict(self, state):
        self.served = state["served"]


def test_model_optimizer_rng_and_loader_are_left_as_found():
    loader = _digits_loader()
    net = _tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    crit = nn.CrossEntropyLoss()
    for x, y in list(loader)[:2]:  # momentum buffers, BN running stats and grads exist
        opt.zero_grad()
        crit(net(x), y).backward()
        opt.step()
    net.eval()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    grads = [p.grad.clone() for p in net.parameters()]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in net.parameters()]
    wrapped = _StatefulLoader(loader)
    wrapped.served = 7

    torch.manual_seed(123)
    expect_batch = next(iter(loader))
    expect_rand = torch.rand(3)
    torch.manual_seed(123)
    result = lr_find(net, opt, crit, wrapped, start_lr=1e-4, end_lr=1.0, steps=60)
    batch = next(iter(loader))
    rand = torch.rand(3)

    assert len(result.lrs) > 50  # it did train (the sweep ran over more than one epoch)
    for k, v in net.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for p, g, m in zip(net.parameters(), grads, momentum, strict=True):
        assert torch.equal(p.grad, g) and torch.equal(opt.state[p]["momentum_buffer"], m)
    assert opt.param_groups[0]["lr"] == 0.1 and not net.training
    assert wrapped.served == 7
    assert torch.equal(batch[0], expect_batch[0]) and torch.equal(batch[1], expect_batch[1])
    assert torch.equal(rand, expect_rand)


def test_fresh_optimizer_stays_empty_and_state_is_restored_after_an_error():
    net = _tiny_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def broken():
        yield from list(_digits_loader())[:3]
        raise RuntimeError("disk gone")

    class Broken:
        def __iter__(self):
            return broken()

    with pytest.raises(RuntimeError, match="disk gone"):
        lr_find(net, opt, nn.CrossEntropyLoss(), Broken(), steps=10)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert opt.state_dict()["state"] == {} and all(p.grad is None for p in net.parameters())


def test_sweep_is_exponential_and_stops_when_the_loss_diverges():
    net = _tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    r = lr_find(net, opt, nn.CrossEntropyLoss(), _digits_loader(), start_lr=1e-3, end_lr=1e4,
                steps=100, classes=10)
    assert r.lrs[0] == 1e-3 and r.chance == pytest.approx(math.log(10)) and r.learned
    ratios = np.diff(np.log(r.lrs))
    np.testing.assert_allclose(ratios, math.log(1e7) / 99, rtol=1e-9)
    assert r.stopped_early and len(r.lrs) < 100 and "step" in r.stop_reason
    last, before = r.smoothed[-1], r.smoothed[:-1]
    assert not math.isfinite(last) or last > 4 * min(before)
    for i, s in enumerate(before):  # it stopped at the first point past 4x the best so far
        assert s <= 4 * min(before[:i + 1])
    # the smoothed loss is the bias-corrected moving average of the raw losses
    avg = 0.0
    for i, raw in enumerate(r.losses[:10]):
        avg = 0.98 * avg + 0.02 * raw
        assert r.smoothed[i] == pytest.approx(avg / (1 - 0.98 ** (i + 1)))


def _curve(lrs, steep_at, rise_at):
    """A made-up U: flat at 2.3, falls fastest at ``steep_at``, climbs after ``rise_at``."""
    x = np.log10(lrs)
    return 2.3 - 2 / (1 + np.exp(-2.5 * (x - np.log10(steep_at)))) + \
        0.5 * np.exp(4 * (x - np.log10(rise_at)))


def test_suggestions_on_a_made_up_curve():
    lrs = np.geomspace(1e-4, 1.0, 100)
    loss = _curve(lrs, steep_at=3e-3, rise_at=0.1)
    got = suggest(list(lrs), list(loss), 10, 5)
    assert got["steep"] == pytest.approx(3e-3, rel=0.15)  # grid step: 10**(4/99) = 1.1x
    i_min = int(np.argmin(loss[10:95])) + 10
    assert got["minimum/10"] == pytest.approx(lrs[i_min] / 10)
    # the descent starts where the loss is a tenth of the way down from its top to its minimum
    i_fall = int(np.nonzero(loss < loss[0] - 0.1 * (loss[0] - loss[i_min]))[0][0])
    assert lrs[i_fall] < got["valley"] < lrs[i_min]
    assert got["valley"] == pytest.approx(lrs[i_fall + (i_min - i_fall) // 2], rel=0.25)  # halfway
    assert disagreement(got) is None
    # a little noise moves the steepest point by a grid step or two at most
    noisy = loss + np.random.default_rng(0).normal(0, 1e-3, len(loss))
    assert suggest(list(lrs), list(noisy), 10, 5)["steep"] == pytest.approx(3e-3, rel=0.3)
    # the trimmed ends and a non-finite tail are ignored
    loss[-8:] = [np.inf, np.nan] * 4
    loss[:5] = 2.3
    assert suggest(list(lrs), list(loss), 10, 5) == got


def test_a_long_faintly_falling_start_is_not_the_valley():
    """A net trained from scratch: 60 steps of a barely falling loss (tiny lrs teach it next to
    nothing), then the real descent. fastai's longest-descent rule alone picked a point on the
    flat start (every sweep of ours put it 30-100x too low); the valley must sit in the fall."""
    lrs = np.geomspace(1e-7, 10, 100)
    x = np.log10(lrs)
    loss = 2.3 - 1e-4 * np.arange(100) - 1.5 / (1 + np.exp(-4 * (x + 1.5))) \
        + 3 * np.exp(4 * (x - 0.5))
    got = suggest(list(lrs), list(loss), *trim(100))
    i_min = int(np.argmin(loss[10:95])) + 10
    assert 10 ** -2.5 < got["valley"] < lrs[i_min]  # inside the fall, not on the flat start
    assert disagreement(got) is None
    # fastai's rule (the longest descent over the whole curve) starts on the flat part
    from cnnlab.engine.lr_find import _longest_descent

    first, _ = _longest_descent(loss[10:i_min + 1])
    assert lrs[10 + first] < 1e-5


def test_the_suggestion_curve_does_not_lag_the_lr():
    """The moving average the stop rule uses reaches half of a sudden fall ~35 steps late; the
    centred curve the suggestions are read from reaches it at the fall."""
    raw = [2.3] * 60 + [0.3] * 40
    ema, avg = [], 0.0
    for i, v in enumerate(raw):
        avg = 0.98 * avg + 0.02 * v
        ema.append(avg / (1 - 0.98 ** (i + 1)))
    half = lambda curve: int(np.nonzero(np.asarray(curve) < 1.3)[0][0])  # noqa: E731
    assert half(centred(raw, 100)) in (59, 60) and half(ema) > 80
    assert len(centred([2.3, 2.2, float("nan"), 2.0], 100)) == 2  # cut at the first non-finite


def test_a_sweep_that_never_beats_guessing_says_so():
    """d2l's sigmoid LeNet on Fashion-MNIST: in 100 steps its loss falls from 2.6 to 2.32, never
    below ln(10) = 2.30, the loss of a uniform guess. Its 'valley' (0.03) is then where it
    stopped being worse than a guess: 300 steps there leave it at 2.30; it learns near 0.9."""
    from cnnlab.engine.lr_find import LRFindResult, guessing

    lrs = list(np.geomspace(1e-7, 10, 100))
    x = np.log10(lrs)
    never = 2.6 - 0.28 / (1 + np.exp(-3 * (x + 1.5)))  # 2.6 down to 2.32
    r = LRFindResult(lrs, list(never), list(never), 100, skip=trim(100), chance=math.log(10))
    warning = guessing(r)
    assert warning and "never fell below 2.30 = ln(10)" in warning
    learned = never - 0.1  # the same curve, but it ends below 2.30
    r.losses = list(learned)
    assert guessing(r) is None
    r.chance = None  # not a classifier's loss: nothing to compare with
    r.losses = list(never)
    assert guessing(r) is None


def test_a_slow_fall_over_many_decades_is_said():
    """GunPoint (50 series, ~30 passes in one sweep): the loss fell over 3.2-3.9 decades of lr
    and the valley sat 20-45x below the recipe's lr; image sweeps fall over 1-2.2 decades."""
    from cnnlab.engine.lr_find import slow_fall

    lrs = np.geomspace(1e-7, 10, 100)
    x = np.log10(lrs)
    slow = 0.7 - 0.2 * np.clip((x + 6.5) / 4.5, 0, 1) + 0.5 * np.exp(4 * (x - 0.5))
    warning = slow_fall(list(lrs), list(slow), *trim(100))
    assert warning and "falls slowly over" in warning and "decades of lr" in warning
    cliff = _curve(lrs, steep_at=3e-2, rise_at=0.3)
    assert slow_fall(list(lrs), list(cliff), *trim(100)) is None


def test_bad_sweeps_are_refused():
    net = _tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for kwargs, needle in [({"start_lr": 1.0, "end_lr": 1.0}, "below --end-lr"),
                           ({"start_lr": -1.0}, "positive"), ({"steps": 4}, "at least 5")]:
        with pytest.raises(CnnlabError, match=needle):
            lr_find(net, opt, nn.CrossEntropyLoss(), _digits_loader(), **kwargs)
    other = torch.optim.SGD(_tiny_net().parameters(), lr=0.1)  # another model's optimizer
    with pytest.raises(CnnlabError, match="holds none of the model's parameters"):
        lr_find(net, other, nn.CrossEntropyLoss(), _digits_loader())
    dicts = [{"image": x, "label": y} for x, y in _digits_loader()]
    with pytest.raises(CnnlabError, match=r"must be \(inputs, labels\) pairs, got dict"):
        lr_find(net, opt, nn.CrossEntropyLoss(), dicts)


def test_config_sweep_and_plot(tmp_path, monkeypatch):
    cfg = build_config("default", {"limit_train": 256, "batch_size": 32})
    r = lr_find_config(cfg, start_lr=1e-4, end_lr=1.0, steps=20)
    assert len(r.lrs) == 20 and r.lrs[-1] == pytest.approx(1.0)  # cycles through epochs (8/epoch)
    assert set(r.suggestions) == {"valley", "steep", "minimum/10"}
    assert r.config.device == "cpu" and cfg.device == "auto"  # the caller's config is untouched
    assert r.skip == trim(20) == (2, 2) and r.chance == pytest.approx(math.log(10))

    from cnnlab.viz import plots

    drawn = {}
    real = plots.save_png

    def spy(fig, path, dpi=None):
        ax = fig.axes[0]
        drawn["xscale"] = ax.get_xscale()
        drawn["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        drawn["title"] = ax.get_title()
        return real(fig, path, dpi)

    monkeypatch.setattr(plots, "save_png", spy)
    path = plot_lr_find(r, tmp_path / "lr.png", title="mnist-net on digits",
                        reference=("recipe lr", 0.05))
    assert path.read_bytes()[:8] == PNG
    assert drawn["xscale"] == "log" and drawn["title"] == "mnist-net on digits"
    for name, lr in r.suggestions.items():
        assert f"{name}: {lr:.2g}" in drawn["legend"]
    assert "recipe lr: 0.05" in drawn["legend"] and "smoothed loss (centred)" in drawn["legend"]
    assert "guessing: ln(10) = 2.30" in drawn["legend"]


def test_cli_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["lr-find", "mnist-net", "--dataset", "digits", "--steps", "30",
                                   "--out", "tmp.png"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "tmp.png").read_bytes()[:8] == PNG
    for name in ("valley", "steep", "minimum/10", "wrote tmp.png",
                 "cnnlab train --model mnist-net --dataset digits --resize 28 --lr "):
        assert name in res.output, res.output
    res = CliRunner().invoke(cli, ["lr-find", "default", "--steps", "8", "--limit-train", "128",
                                   "--start-lr", "1e-3"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "lr-find-mnist-net-digits.png").is_file()
    assert "cnnlab train --recipe default --limit-train 128 --lr " in res.output


@pytest.mark.parametrize("args,needle", [
    (["mnist-net", "--start-lr", "1", "--end-lr", "0.1"], "--start-lr (1.0) must be below"),
    (["mnist-net", "--start-lr", "0"], "must be positive"),
    (["mnist-net", "--steps", "4"], "--steps must be at least 5"),
    (["resnet-9000"], "'resnet-9000' is neither a model nor a recipe; models: airbench"),
    (["default", "--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["lr-find", *args, "--out", "x.png"])
    assert res.exit_code == 1, res.output
    assert needle in res.output and res.output.count("\n") == 1, res.output
    assert "recipes: cifar-fast" in res.output or "neither" not in res.output
    assert list(tmp_path.iterdir()) == []
