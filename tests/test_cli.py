"""The catalogue and speed commands, run as a user would."""

import pytest
import torch
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.engine.evaluate import tta_logits
from cnnlab.models import create_model


def test_bench_reports_speed_and_memory():
    res = CliRunner().invoke(cli, ["bench", "mnist-net", "--steps", "3", "--warmup", "1"])
    assert res.exit_code == 0, res.output
    assert "channels_last" in res.output and "examples/s" in res.output and "MB" in res.output
    # the data is fitted to the model: 1x8x8 digits become 3x32x32 for simple-cnn
    rgb = CliRunner().invoke(cli, ["bench", "simple-cnn", "--steps", "2", "--warmup", "0"])
    assert rgb.exit_code == 0, rgb.output
    bad = CliRunner().invoke(cli, ["bench", "mnist-net", "--steps", "0"])
    assert bad.exit_code != 0 and "--steps" in bad.output


def test_datasets_and_recipes_list_everything():
    res = CliRunner().invoke(cli, ["datasets"])
    assert res.exit_code == 0
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "cifar10-jpeg", "folder"):
        assert name in res.output
    assert "embedded" in res.output and "searched, in order" in res.output
    res = CliRunner().invoke(cli, ["recipes"])
    for name in ("default", "seed-mnist", "d2l-lenet-fashion", "seed-cifar", "mnist-fast",
                 "fashion-fast", "cifar-fast"):
        assert name in res.output
    res = CliRunner().invoke(cli, ["recipes", "mnist-fast"])  # one recipe's settings
    assert res.exit_code == 0 and "model: fastnet-white" in res.output and "nesterov: true" \
        in res.output
    res = CliRunner().invoke(cli, ["recipes", "mnist-fst"])
    assert res.exit_code == 1 and "did you mean 'mnist-fast'?" in res.output


def test_every_recipe_builds_a_valid_config():
    from cnnlab.config import build_config, recipe_names

    for name in recipe_names():
        cfg = build_config(name)
        create_model(cfg.model)  # the recipe names a real model


def test_tta_levels_average_views():
    torch.manual_seed(0)
    net = create_model("simple-cnn").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain, mirror, full = (tta_logits(net, x, k) for k in (0, 1, 2))
        torch.testing.assert_close(mirror, 0.5 * net(x) + 0.5 * net(x.flip(3)))
    assert not torch.allclose(plain, full)
    # a mirror-symmetric input gives the same logits with and without the mirror view
    sym = torch.cat([x[..., :16], x[..., :16].flip(3)], dim=3)
    with torch.no_grad():
        torch.testing.assert_close(tta_logits(net, sym, 1), net(sym), rtol=1e-5, atol=1e-5)


def test_tta_without_mirror_averages_translations_only():
    """A net trained without flips (digits) gets no mirror views: level 1 is plain, level 2
    the plain view (1/2) and the two 1-pixel translations (1/4 each)."""
    torch.manual_seed(0)
    net = create_model("simple-cnn").eval()
    x = torch.randn(4, 3, 32, 32)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(tta_logits(net, x, 1, mirror=False), net(x))
        expect = 0.5 * net(x) + 0.25 * net(padded[..., :32, :32]) + 0.25 * net(padded[..., 2:, 2:])
        torch.testing.assert_close(tta_logits(net, x, 2, mirror=False), expect)


def test_ctrl_c_anywhere_exits_130_with_one_word(monkeypatch, capsys):
    """The console script: Ctrl-C outside a command's own handler is "interrupted" and 130
    (click alone says "Aborted!" and exits 1); a usage error keeps click's 2."""
    from cnnlab.cli import main

    @cli.command("test-sleep")
    def sleep() -> None:
        raise KeyboardInterrupt

    import signal

    before = signal.getsignal(signal.SIGTERM)  # main() sets it for the process it runs
    try:
        for argv, code, said in ((["cnnlab", "test-sleep"], 130, "interrupted"),
                                 (["cnnlab", "nonsense"], 2, "No such command 'nonsense'"),
                                 (["cnnlab", "--version"], 0, "cnnlab")):
            monkeypatch.setattr("sys.argv", argv)
            with pytest.raises(SystemExit) as e:
                main()
            out = capsys.readouterr()
            assert e.value.code == code and said in out.err + out.out
            assert "Traceback" not in out.err and "Aborted!" not in out.err
    finally:
        cli.commands.pop("test-sleep")
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("args, says", [
    (["train", "--recipe", "missing.yaml"], "recipe file missing.yaml does not exist"),
    (["train", "--model", "simplecnn"], "did you mean 'simple-cnn'?"),
    (["train", "--dataset", "fashion"], "did you mean 'fashion-mnist'?"),
    (["train", "--optimizer", "adam", "--momentum", "0.5"], "--momentum is SGD's; adam keeps"),
])
def test_train_names_fail_in_one_line_before_the_header(args, says):
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and says in r.output
    assert len(r.output.strip().splitlines()) == 1 and "cnnlab train:" not in r.output


def test_python_settings_and_class_names_suggest_the_right_one(lenet_run):
    import cnnlab
    from cnnlab.errors import CnnlabError, did_you_mean

    with pytest.raises(CnnlabError, match="unknown setting 'epoch'; did you mean 'epochs'"):
        cnnlab.train("default", epoch=2)
    assert did_you_mean("T-shirt", ["T-shirt/top", "Trouser"]) == "did you mean 'T-shirt/top'? "
    r = CliRunner().invoke(cli, ["visualize", "activations", str(lenet_run), "--layer", "conv3"])
    assert r.exit_code == 1 and "has no layer 'conv3'" in r.output  # not "give --index"


def test_summary_says_where_the_padding_is():
    r = CliRunner().invoke(cli, ["summary", "mnist-resnet", "--receptive-field"])
    assert r.exit_code == 0 and "outside 0..27 / 0..27 lie in the zero padding" in r.output
    r = CliRunner().invoke(cli, ["summary", "mnist-net", "--receptive-field"])
    assert r.exit_code == 0 and "zero padding" not in r.output


def test_cache_shows_and_clears_only_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))
    (tmp_path / "digits-train-0123abcd-0123456789abcdef.safetensors").write_bytes(b"x" * 2048)
    (tmp_path / "notes.txt").write_text("the user's own file")
    (tmp_path / "model.safetensors").write_bytes(b"weights")  # not a cache file
    r = CliRunner().invoke(cli, ["cache"])
    assert r.exit_code == 0 and "1 cached split(s)" in r.output
    assert "digits-train-0123abcd-0123456789abcdef.safetensors" in r.output
    r = CliRunner().invoke(cli, ["cache", "--clear"])
    assert r.exit_code == 0 and "deleted 1 cached split(s)" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "notes.txt"]
