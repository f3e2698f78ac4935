"""Fine-tuning: --init-from RUN, --freeze / --freeze-until, --head-lr-scale."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.engine.build import build
from cnnlab.engine.finetune import head_keys
from cnnlab.engine.train import fit
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model

BASE = {"dataset": "digits", "resize": 28, "limit_train": 256, "limit_test": 64,
        "batch_size": 64, "threads": 1}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """fastnet (convs with BatchNorm, a linear head) after 2 epochs on the digits."""
    out = tmp_path_factory.mktemp("ft") / "source"
    fit(build_config(None, {**BASE, "model": "fastnet", "epochs": 2, "out": str(out)}),
        log=lambda _m: None)
    return out


@pytest.fixture(scope="module")
def letters(tmp_path_factory) -> Path:
    """An image folder with three other classes (digit images 0/1/2 renamed a/b/c, 28x28)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("letters")
    for split, rows in (("train", slice(0, 900)), ("test", slice(900, 1300))):
        for i, (img, y) in enumerate(zip(d.images[rows], d.target[rows], strict=True)):
            if y > 2:
                continue
            folder = root / split / "abc"[y]
            folder.mkdir(parents=True, exist_ok=True)
            arr = np.kron(np.round(img * 255 / 16).astype(np.uint8), np.ones((3, 3), np.uint8))
            Image.fromarray(np.pad(arr, 2)).save(folder / f"{i}.png")
    return root


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_head_is_found_by_shape_for_any_design():
    assert head_keys("fastnet", create_model("fastnet", 10), 10) == ["13.weight", "13.bias"]
    lenet = create_model("lenet5", 7)
    keys = head_keys("lenet5", lenet, 7)
    assert len(keys) == 2 and all(lenet.state_dict()[k].shape[0] == 7 for k in keys)


def test_new_classes_get_a_new_head_and_keep_every_other_weight(source, letters):
    logs = []
    cfg = build_config(None, {"model": "fastnet", "dataset": "folder", "data_dir": str(letters),
                              "init_from": str(source), "epochs": 1, "threads": 1})
    built = build(cfg, logs.append)
    src = _weights(source)
    state = built.model.state_dict()
    assert built.classes == ("a", "b", "c") and state["13.weight"].shape[0] == 3
    for k, v in state.items():
        if not k.startswith("13."):
            assert torch.equal(v.cpu(), src[k]), k
    assert any("new classifier head fc (10 -> 3 classes)" in m for m in logs)


def test_same_classes_keep_the_head_too(source):
    logs = []
    cfg = build_config(None, {**BASE, "model": "fastnet", "init_from": str(source)})
    built = build(cfg, logs.append)
    src = _weights(source)
    assert all(torch.equal(v.cpu(), src[k]) for k, v in built.model.state_dict().items())
    assert any("same classes" in m for m in logs)


def test_frozen_layers_and_their_batchnorm_statistics_do_not_move(source, letters, tmp_path):
    out = tmp_path / "tuned"
    fit(build_config(None, {"model": "fastnet", "dataset": "folder", "data_dir": str(letters),
                            "init_from": str(source), "freeze": "conv1,bn1", "epochs": 2,
                            "threads": 1, "out": str(out)}), log=lambda _m: None)
    src, tuned = _weights(source), _weights(out)
    frozen = [k for k in src if k.split(".")[0] in ("0", "2")]  # conv1, bn1
    assert frozen and any("running_mean" in k for k in frozen)
    for k in frozen:
        assert torch.equal(tuned[k], src[k]), k
    assert not torch.equal(tuned["4.weight"], src["4.weight"])  # conv2
    assert not torch.equal(tuned["6.running_mean"], src["6.running_mean"])  # bn2


def test_freeze_until_freezes_every_layer_up_to_the_named_one(source):
    cfg = build_config(None, {**BASE, "model": "fastnet", "init_from": str(source),
                              "freeze_until": "bn2"})
    model = build(cfg).model
    grads = {n.split(".")[0]: p.requires_grad for n, p in model.named_parameters()}
    assert grads == {"0": False, "2": False, "4": False, "6": False,  # conv1 bn1 conv2 bn2
                     "8": True, "10": True, "13": True}


def test_head_lr_scale_gives_the_head_its_own_group(source):
    from cnnlab.engine.optim import set_lr

    cfg = build_config(None, {**BASE, "model": "fastnet", "init_from": str(source),
                              "head_lr_scale": 10, "lr": 0.01})
    built = build(cfg)
    set_lr(built.optimizer, 0.01)
    head = {id(p) for p in built.model[13].parameters()}
    for group in built.optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["lr"] == pytest.approx(0.1 if in_head == {True} else 0.01)


def test_resume_needs_no_source(source, letters, tmp_path):
    import shutil

    src_copy = tmp_path / "src"
    shutil.copytree(source, src_copy)
    over = {"model": "fastnet", "dataset": "folder", "data_dir": str(letters), "threads": 1,
            "init_from": str(src_copy), "freeze_until": "bn1",
            "schedule": "constant"}  # the same lr in epoch 1 whatever --epochs
    whole = fit(build_config(None, {**over, "epochs": 2, "out": str(tmp_path / "a")}),
                log=lambda _m: None)
    fit(build_config(None, {**over, "epochs": 1, "out": str(tmp_path / "b")}),
        log=lambda _m: None)
    shutil.rmtree(src_copy)  # the checkpoint has the weights; the source is not read again
    from cnnlab.api import train

    resumed = train(resume=tmp_path / "b", epochs=2)
    assert resumed.history[-1].test_acc == whole.history[-1].test_acc
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_takes_the_source_model_and_fits_the_data_to_it(source, letters, tmp_path):
    out = tmp_path / "cli"
    r = CliRunner().invoke(cli, ["train", "--init-from", str(source), "--dataset", "folder",
                                 "--data-dir", str(letters), "--epochs", "1", "--threads", "1",
                                 "--head-lr-scale", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "new classifier head fc (10 -> 3 classes)" in r.output
    assert "classifier head fc: lr x 5" in r.output
    saved = (out / "config.yaml").read_text()
    assert "model: fastnet" in saved and f"init_from: {source}" in saved


@pytest.mark.parametrize("args, message", [
    (["--freeze", "conv1"], "add --init-from RUN"),
    (["--init-from", "SRC", "--freeze", "conv1", "--freeze-until", "bn1"], "not both"),
    (["--init-from", "SRC", "--freeze", "fc"], "freezes the classifier head"),
    (["--init-from", "SRC", "--freeze", "conv9"], "has no layer 'conv9'"),
    (["--init-from", "SRC", "--freeze", ""], "--freeze needs layer names"),  # froze nothing
    (["--init-from", "SRC", "--model", "lenet5"], "pass --model fastnet"),
    # said before the input-shape advice that fits the other model (--channels 3 --resize 32)
    (["--init-from", "SRC", "--model", "airbench-small"], "holds a 'fastnet' model"),
    (["--init-from", "nowhere"], "does not exist"),
    (["--init-from", "SRC", "--head-lr-scale", "0"], "--head-lr-scale must be positive"),
    (["--head-lr-scale", "10"], "--head-lr-scale speeds up a new head on trained layers: add "
                                "--init-from RUN"),
    (["--alternate-flip"], "add --flip"),
    (["--recipe", "finetune", "--init-from", "SRC"],  # 1 epoch, the recipe's 2-epoch warm-up
     "(--warmup-epochs 2 comes from the recipe 'finetune'; give --warmup-epochs to change it)"),
])
def test_bad_fine_tuning_options_are_one_line_and_write_nothing(source, tmp_path, args, message):
    args = [str(source) if a == "SRC" else a for a in args]
    out = tmp_path / "never"
    r = CliRunner().invoke(cli, ["train", *args, "--dataset", "digits", "--resize", "28",
                                 "--epochs", "1", "--out", str(out)])
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_a_pickled_source_is_refused_unread(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CnnlabError, match="pickle"):
        build(build_config(None, {**BASE, "model": "fastnet", "init_from": str(bad)}))


def test_frozen_layers_and_the_head_are_named_as_summary_names_them():
    """--freeze-until lists every module inside the layers it covers; the log shows the
    layers' aliases (b1, b2, b3) instead, and a frozen head is named fc, not 7.weight."""
    from cnnlab.engine.finetune import _shown_frozen, freeze_layers, head_keys
    from cnnlab.models import create_model

    model = create_model("resnet18-small", num_classes=10)
    head = head_keys("resnet18-small", model, 10)
    frozen = freeze_layers("resnet18-small", model, None, "b3", head, (1, 28, 28))
    assert len(frozen) > 3  # the modules one by one ...
    assert _shown_frozen("resnet18-small", model, frozen) == "b1, b2, b3"  # ... shown as layers
    with pytest.raises(CnnlabError, match=r"freezes the classifier head \(fc\) too"):
        freeze_layers("resnet18-small", create_model("resnet18-small", num_classes=10), "fc",
                      None, head, (1, 28, 28))


def test_freeze_until_follows_the_forward_pass_not_registration_order():
    """mnist-resnet registers conv1, conv2, rblock1, rblock2 but runs conv1, rblock1, conv2,
    rblock2: up to rblock1 is conv1 and rblock1, not conv2. A module that runs twice (the
    shared ReLU) has no single place; a layer without weights has nothing to freeze."""
    from cnnlab.engine.finetune import forward_calls, freeze_layers

    def fresh(name="mnist-resnet"):
        return create_model(name, num_classes=10)

    model = fresh()
    registered = [n for n, _ in model.named_modules() if n and "." not in n]
    assert registered.index("conv2") < registered.index("rblock1")
    calls = [n for n in forward_calls(model, (1, 28, 28)) if "." not in n]
    assert calls.index("rblock1") < calls.index("conv2")
    frozen = freeze_layers("mnist-resnet", model, None, "rblock1", [], (1, 28, 28))
    assert "conv2" not in frozen and "conv1" in frozen and "rblock1.conv2" in frozen
    assert model.conv1.weight.requires_grad is False and model.conv2.weight.requires_grad
    with pytest.raises(CnnlabError, match=r"--freeze-until relu: that layer runs \d+ times"):
        freeze_layers("mnist-net", fresh("mnist-net"), None, "relu", [], (1, 28, 28))
    with pytest.raises(CnnlabError, match=r"--freeze relu: no weights to freeze there; name "
                                          r"layers with weights \(conv1, conv2, fc"):
        freeze_layers("mnist-net", fresh("mnist-net"), "relu", None, [], (1, 28, 28))


def test_lr_find_sweeps_from_the_trained_run(source, letters, tmp_path, monkeypatch):
    """fastai's lr_find is mostly run on a pretrained net: `cnnlab lr-find finetune
    --init-from RUN` sweeps the fine-tuning config and hands back the train command."""
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["lr-find", "finetune", "--init-from", str(source), "--dataset",
                                 "folder", "--data-dir", str(letters), "--steps", "20",
                                 "--start-lr", "1e-4", "--threads", "1", "--freeze", "conv1"])
    assert r.exit_code == 0, r.output
    assert "new classifier head fc (10 -> 3 classes)" in r.output
    assert "lr-find-fastnet-folder.png" in r.output and "valley" in r.output
    assert f"cnnlab train --recipe finetune --init-from {source} --dataset folder" in r.output
    assert "--freeze conv1" in r.output
    assert not (tmp_path / "runs").exists()


def test_sync_batchnorm_keeps_frozen_norms_frozen_and_their_own_lr():
    """--sync-bn (CUDA under DDP) swaps every BatchNorm for a new SyncBatchNorm. The swap used
    to drop the hook that keeps a frozen BatchNorm in inference mode (it then overwrote its
    trained statistics), and SyncBatchNorm is no BatchNorm2d, so the norm biases lost their
    own lr (airbench's 64x). Both are checked here on the CPU, with no process group (a
    SyncBatchNorm then normalises like a BatchNorm)."""
    from cnnlab.engine.finetune import freeze_layers, to_sync_batchnorm
    from cnnlab.engine.optim import param_groups

    model = create_model("fastnet", num_classes=10)
    freeze_layers("fastnet", model, "bn1", None, head_keys("fastnet", model, 10), (1, 28, 28))
    model = to_sync_batchnorm(model)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == 3
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.train()
    model(torch.randn(16, 1, 28, 28))
    after = model.state_dict()
    moved = sorted(k.split(".")[0] for k in before if not torch.equal(before[k], after[k]))
    assert moved == ["10", "10", "6", "6"]  # bn2, bn3 learn statistics; bn1 (2.) keeps its own
    cfg = build_config(None, {"model": "fastnet", "bias_lr_scale": 64.0})
    groups = param_groups(cfg, model)
    scaled = {id(p) for g in groups if g["lr_scale"] == 64.0 for p in g["params"]}
    assert scaled == {id(m.bias) for m in model.modules()
                      if isinstance(m, torch.nn.SyncBatchNorm) and m.bias.requires_grad}


def test_an_image_run_cannot_seed_a_series_run_and_says_so_first(source, tmp_path):
    """The advice went in a circle (pass --model fastnet; fastnet takes images; pick a series
    model; ... holds a 'fastnet' model): now one line naming both kinds."""
    out = tmp_path / "never"
    r = CliRunner().invoke(cli, ["train", "--init-from", str(source), "--dataset",
                                 "ucr:GunPoint", "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 1 and not out.exists()
    assert "was trained on images (fastnet) and 'ucr:GunPoint' holds 1-D series; --init-from " \
        "needs a run trained on 1-D series too" in r.output


def test_freeze_names_are_checked_before_the_data_is_read(source, tmp_path, monkeypatch):
    """A typo in --freeze was found only after the data set's (maybe long) decode."""
    import cnnlab.engine.build as build_module

    monkeypatch.setattr(build_module, "load_train_test",
                        lambda *a, **k: pytest.fail("the data was read first"))
    for flag in ("--freeze", "--freeze-until"):
        r = CliRunner().invoke(cli, ["train", "--init-from", str(source), flag, "conv9",
                                     "--dataset", "digits", "--out", str(tmp_path / "x")])
        assert r.exit_code == 1 and "has no layer 'conv9'" in r.output, r.output
