"""`cnnlab errors`: the streaming pass agrees with a brute-force pass over every output."""

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnnlab.cli import cli
from cnnlab.data import load_split
from cnnlab.engine.interpret import interpret_run
from cnnlab.run import load_run


def test_streaming_topk_and_confusion_match_brute_force(lenet_run):
    run = load_run(lenet_run, device="cpu")
    data = load_split("digits", "test")
    logits = run.logits(data.images)  # every output at once: only the test may do this
    probs = logits.softmax(1)
    pred = probs.argmax(1)
    k = len(run.classes)
    confusion = torch.bincount(data.labels * k + pred, minlength=k * k).view(k, k)
    wrong = (pred != data.labels).nonzero()[:, 0]
    assert len(wrong) > 20  # enough mistakes for top-k to matter
    conf = probs.max(1).values[wrong]
    expect = wrong[torch.argsort(-conf, stable=True)][:7].tolist()
    losses = torch.nn.functional.cross_entropy(logits, data.labels, reduction="none")
    expect_losses = torch.argsort(-losses, stable=True)[:7].tolist()

    res = interpret_run(run, top=7, batch_size=50, per_pair=3)  # many batches to merge
    assert torch.equal(res.confusion, confusion)
    # the same images, up to the order of near-ties (logits of one image differ by rounding
    # between a batch of 50 and the whole split)
    got = [m.index for m in res.mistakes]
    assert set(got) <= set(wrong.tolist()) and len(got) == 7
    assert [float(probs[i].max()) for i in got] == pytest.approx(
        [float(probs[i].max()) for i in expect], abs=1e-5)
    got_losses = [m.index for m in res.top_losses]
    assert [float(losses[i]) for i in got_losses] == pytest.approx(
        [float(losses[i]) for i in expect_losses], rel=1e-4)
    m = res.mistakes[0]
    assert m.true == int(data.labels[m.index]) and m.predicted == int(pred[m.index])
    assert m.probability == pytest.approx(float(probs[m.index].max()), abs=1e-5)
    assert res.top_losses[0].loss == pytest.approx(float(losses.max()), rel=1e-4)
    assert torch.equal(res.image(m), run.preprocess.adapt(data.images[m.index:m.index + 1])[0])
    off = confusion.clone().fill_diagonal_(0)
    i, j, n = res.most_confused_indices()[0]
    assert n == int(off.max()) and off[i, j] == n
    assert sum(c for _, _, c in res.most_confused_indices()) == len(wrong)
    # by name, as fastai's most_confused: the same pairs in the same order
    assert res.most_confused()[0] == (run.classes[i], run.classes[j], n)
    assert res.most_confused(2) == [(run.classes[t], run.classes[p], c)
                                    for t, p, c in res.most_confused_indices(2)]
    assert all(c >= 2 for _, _, c in res.most_confused(2))
    for (t, p), kept in res.pair_examples.items():  # the first three of each confusion
        cell = ((data.labels == t) & (pred == p)).nonzero()[:, 0][:3].tolist()
        assert t != p and kept == cell
    assert len(res.pair_examples) == int((off > 0).sum())


def test_errors_cli_writes_pictures_and_json(lenet_run):
    r = CliRunner().invoke(cli, ["errors", str(lenet_run), "--top", "5", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "most confident mistakes" in r.output and "most confused" in r.output
    saved = json.loads((lenet_run / "errors-test.json").read_text())
    assert len(saved["mistakes"]) == 5 and saved["examples"] == 360
    assert Image.open(lenet_run / "confusion-test.png").size[0] > 600
    assert Image.open(lenet_run / "errors-test.png").size[0] > 400
    for args, msg in [(["--top", "0"], "--top must be at least 1"),
                      (["--dataset", "fashion-mnist"], "has other classes"),  # not decoded
                      (["--dataset", "mnist", "--data-dir", str(lenet_run)], "not found")]:
        r = CliRunner().invoke(cli, ["errors", str(lenet_run), *args])
        assert r.exit_code == 1 and msg in r.output, r.output


def test_another_data_set_needs_the_same_classes_and_keeps_the_runs_own_files(lenet_run,
                                                                             tmp_path):
    """MNIST has digits' classes: accepted, with its own file names. Fashion-MNIST has ten
    classes too, but other ones: refused, naming both."""
    from conftest import write_idx_dataset

    write_idx_dataset(tmp_path / "mnist", 32, 40)
    write_idx_dataset(tmp_path / "fashion-mnist", 32, 40)
    own = (lenet_run / "errors-test.json").read_text() if (lenet_run / "errors-test.json").exists() \
        else None
    r = CliRunner().invoke(cli, ["errors", str(lenet_run), "--dataset", "mnist", "--data-dir",
                                 str(tmp_path), "--top", "3"])
    assert r.exit_code == 0, r.output
    assert json.loads((lenet_run / "errors-mnist-test.json").read_text())["examples"] == 40
    if own is not None:
        assert (lenet_run / "errors-test.json").read_text() == own
    r = CliRunner().invoke(cli, ["errors", str(lenet_run), "--dataset", "fashion-mnist",
                                 "--data-dir", str(tmp_path)])
    assert r.exit_code == 1 and "has other classes (T-shirt/top" in r.output, r.output
    assert not (lenet_run / "errors-fashion-mnist-test.json").exists()


@pytest.mark.parametrize("k", [3, 10, 40])
def test_confusion_title_sits_on_the_matrices(k, tmp_path, monkeypatch):
    """The square matrices fill the figure: no band between the title and the panels'
    titles, and each colour bar is as tall as its matrix."""
    from cnnlab.viz import interpretation

    drawn = {}
    real = interpretation.save_png

    def spy(fig, path, **kw):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        matrices = [ax for ax in fig.axes if ax.get_title()]
        bars = [ax for ax in fig.axes if not ax.get_title()]
        drawn["gap"] = (fig._suptitle.get_window_extent(r).y0
                        - max(ax.title.get_window_extent(r).y1 for ax in matrices)) / fig.dpi
        drawn["heights"] = [(m.get_window_extent(r).height, b.get_window_extent(r).height)
                            for m, b in zip(matrices, bars, strict=True)]
        return real(fig, path, **kw)

    monkeypatch.setattr(interpretation, "save_png", spy)
    confusion = torch.randint(0, 20, (k, k)) + 50 * torch.eye(k, dtype=torch.int64)
    path = interpretation.plot_confusion(confusion, [f"class{i}" for i in range(k)],
                                         tmp_path / "c.png", "digits test: accuracy 0.8")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0 <= drawn["gap"] < 0.15, drawn["gap"]  # inches: a line's spacing, not a band
    for matrix, bar in drawn["heights"]:
        assert bar == pytest.approx(matrix, rel=0.02)
