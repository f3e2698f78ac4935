"""Grad-CAM and saliency: the maps point where the planted evidence is, hooks never stay."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.engine.train import fit
from cnnlab.errors import CnnlabError
from cnnlab.run import load_run
from cnnlab.viz.attribution import _scaled, attribute, grad_cam_maps, saliency_maps


class TopLeftOnly(nn.Module):
    """A CNN whose logits depend only on the top-left quadrant of its input: the input is
    masked before a bias-free conv, so no other pixel can matter."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(1, 1, 16, 16)
        mask[..., :8, :8] = 1
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)  # the trap for full backward hooks
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.head(self.relu(self.conv(x * self.mask)))


@pytest.fixture
def planted():
    torch.manual_seed(0)
    model = TopLeftOnly().eval()
    with torch.no_grad():
        model.conv.weight.abs_()  # positive evidence everywhere it looks
        model.head[2].weight.fill_(1.0)
    return model, torch.rand(5, 1, 16, 16)


def test_grad_cam_lights_the_planted_quadrant(planted):
    model, x = planted
    cam, logits, targets, calls = grad_cam_maps(model, x, model.conv)
    assert calls == 1
    assert cam.shape == (5, 16, 16) and torch.isfinite(cam).all()
    assert targets.tolist() == logits.argmax(1).tolist()
    # the 3x3 conv sees the quadrant from one pixel beyond it; nothing further lights up
    assert cam[:, 9:, :].abs().max() == 0 and cam[:, :, 9:].abs().max() == 0
    assert (cam[:, :8, :8].sum((1, 2)) / cam.sum((1, 2)) > 0.8).all()
    assert not any(m._forward_hooks for m in model.modules())


def test_grad_cam_matches_a_hand_computation(planted):
    """w_k = mean of d logit / dA_k; cam = relu(sum_k w_k A_k): checked with autograd.grad,
    despite the in-place ReLU after the captured layer."""
    model, x = planted
    cam, _, _, _ = grad_cam_maps(model, x, model.conv, target=1)
    a = model.conv(x * model.mask).detach().requires_grad_(True)
    logit = model.head(torch.relu(a))[:, 1].sum()
    (g,) = torch.autograd.grad(logit, a)
    expect = torch.relu((g.mean((2, 3), keepdim=True) * a.detach()).sum(1))
    torch.testing.assert_close(cam, expect)  # 16x16 in, 16x16 maps: no resampling


def test_saliency_is_zero_outside_the_quadrant(planted):
    model, x = planted
    sal, _, _ = saliency_maps(model, x, target=2)
    assert sal.shape == (5, 16, 16)
    assert sal[:, 8:, :].abs().max() == 0 and sal[:, :, 8:].abs().max() == 0
    assert (sal[:, :8, :8] > 0).float().mean() > 0.9


def test_hooks_are_removed_when_the_pass_fails(planted):
    model, _ = planted
    with pytest.raises(RuntimeError):
        grad_cam_maps(model, torch.rand(2, 3, 16, 16), model.conv)  # wrong channel count
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_flat_maps_are_zeros_not_nan_and_raw_keeps_values():
    raw = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    scaled, flat = _scaled(raw, "image")
    assert flat == [True, False] and torch.isfinite(scaled).all()
    assert scaled[0].abs().max() == 0 and scaled[1].min() == 0 and scaled[1].max() == 1
    kept, _ = _scaled(raw, "raw")
    torch.testing.assert_close(kept[1], raw[1])


def test_attribute_on_a_run_has_the_input_size(lenet_run):
    run = load_run(lenet_run, device="cpu")
    images = run.preprocess.adapt(torch.randint(0, 255, (3, 1, 8, 8), dtype=torch.uint8))
    for method in ("gradcam", "saliency"):
        res = attribute(run, images, method, target="7")
        assert res.maps.shape == (3, 28, 28) and torch.isfinite(res.maps).all()
        assert res.targets == [7, 7, 7] and len(res.probability) == 3
    assert attribute(run, images).layer == "pool2"  # the last feature maps before the head
    with pytest.raises(CnnlabError, match="no class 'cat' in digits; choose one of: 0, 1"):
        attribute(run, images, target="cat")
    with pytest.raises(CnnlabError, match="feature maps"):
        attribute(run, images, layer="fc1")


def test_gradcam_cli_with_an_image_file_and_bad_input(lenet_run, tmp_path):
    drawing = np.full((40, 30, 3), 255, np.uint8)  # a black stroke on white paper
    drawing[5:35, 14:17] = 0
    Image.fromarray(drawing).save(tmp_path / "one.png")
    out = tmp_path / "cam.png"
    r = CliRunner().invoke(cli, ["visualize", "gradcam", str(lenet_run), "--image",
                                 str(tmp_path / "one.png"), "--index", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert Image.open(out).size[1] > 300  # two rows
    (tmp_path / "notes.png").write_text("not a picture")
    for args, msg in [(["--image", str(tmp_path / "notes.png")], "notes.png is not an image file"),
                      (["--index", "99999"], "out of range"),
                      (["--class", "Coat"], "no class 'Coat'"),
                      (["--index", "0", "--layer", "nope"], "no layer 'nope'; choose one of"),
                      (["--index", "0", "--target", "cat"], "no class 'cat'"),
                      ([], "choose inputs with --index")]:
        bad = tmp_path / "bad.png"
        r = CliRunner().invoke(cli, ["visualize", "gradcam", str(lenet_run), *args,
                                     "--out", str(bad)])
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
        assert __import__("re").search(msg, r.output), r.output
        assert not bad.exists()
    r = CliRunner().invoke(cli, ["visualize", "saliency", str(tmp_path), "--index", "0"])
    assert r.exit_code == 1 and "not a cnnlab run directory" in r.output


def test_image_files_are_inverted_for_light_on_dark_models(tmp_path):
    from cnnlab.data.images import load_images
    from cnnlab.data.preprocess import Preprocess

    paper = np.full((28, 28), 250, np.uint8)
    paper[10:18, 12:15] = 5
    Image.fromarray(paper).save(tmp_path / "d.png")
    pre = Preprocess(channels=1, size=(28, 28), light_on_dark=True)
    images, labels = load_images([tmp_path / "d.png"], pre)
    assert labels == ["d.png (inverted)"] and images[0, 0, 0, 0] == 5 and images[0, 0, 12, 13] == 250
    images, labels = load_images([tmp_path / "d.png"], pre, invert="no")
    assert labels == ["d.png"] and images[0, 0, 0, 0] == 250


def test_default_layer_is_the_last_feature_map_and_a_reused_module_is_read_at_its_last_use(
        tmp_path):
    """The tutorial's Net applies one `relu` after both convs: Grad-CAM's default reads the
    last feature maps before the head (that relu's second call, 20x4x4), as the hooks of
    the second call, not the first, give the activation and the gradient."""
    cfg = build_config(None, {"model": "mnist-net", "dataset": "digits", "resize": 28,
                              "limit_train": 256, "epochs": 2, "out": str(tmp_path / "r")})
    fit(cfg, log=lambda _m: None)
    run = load_run(tmp_path / "r", device="cpu")
    images = run.preprocess.adapt(load_split_images())
    res = attribute(run, images)
    assert res.layer == "relu (the last of its 2 uses)"
    model = run.model.float().eval()
    x = run.preprocess(images).float()
    cam, _, _, calls = grad_cam_maps(model, x, model.relu)
    a = model.relu(model.pooling(model.conv2(model.relu(model.pooling(model.conv1(x))))))
    a = a.detach().requires_grad_(True)
    logits = model.fc(model.flatten(a))
    (g,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), a)
    expect = torch.relu((g.mean((2, 3), keepdim=True) * a.detach()).sum(1, keepdim=True))
    expect = torch.nn.functional.interpolate(expect, size=(28, 28), mode="bilinear")[:, 0]
    assert calls == 2
    torch.testing.assert_close(cam, expect)


def load_split_images():
    from cnnlab.data import load_split

    return load_split("digits", "test").images[:4]


def test_a_drawing_on_a_transparent_ground_is_read_as_on_white_paper(tmp_path):
    from cnnlab.data.images import read_image

    rgba = np.zeros((20, 20, 4), np.uint8)  # transparent everywhere...
    rgba[5:15, 9:11] = (0, 0, 0, 255)  # ...but an opaque black stroke
    Image.fromarray(rgba, "RGBA").save(tmp_path / "canvas.png")
    img = read_image(tmp_path / "canvas.png")
    assert img.shape == (3, 20, 20)
    assert int(img[:, 0, 0].min()) == 255 and int(img[:, 10, 10].max()) == 0
