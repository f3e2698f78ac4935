"""`cnnlab predict`: own image files in any mode and size are seen exactly as in training."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnnlab.cli import cli
from cnnlab.data import load_split
from cnnlab.engine.predict import collect_files, predict_files
from cnnlab.run import load_run


@pytest.fixture(scope="module")
def digit():
    """A real digit from the test split, light on dark as the model was trained, 0..255."""
    return load_split("digits", "test").images[0, 0].numpy()  # 8x8, label 7


def _write_variants(digit: np.ndarray, where):
    big = np.asarray(Image.fromarray(digit).resize((37, 37), Image.NEAREST))
    Image.fromarray(big).save(where / "grey.png")
    Image.fromarray(big).convert("RGB").save(where / "rgb.jpg", quality=95)
    rgba = np.zeros((37, 37, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[..., :3] = big[..., None]
    Image.fromarray(rgba, "RGBA").save(where / "rgba.png")
    Image.fromarray(big).convert("P").save(where / "palette.png")
    Image.fromarray(big.astype(np.uint16) * 257).save(where / "sixteen.png")  # I;16
    Image.fromarray(255 - big).save(where / "ink-on-paper.png")  # dark on light
    (where / "notes.txt").write_text("not an image")
    return big


def test_every_mode_and_size_gives_the_training_view(lenet_run, digit, tmp_path):
    run = load_run(lenet_run, device="cpu")
    big = _write_variants(digit, tmp_path)
    files = collect_files([tmp_path])
    assert [f.name for f in files] == ["grey.png", "ink-on-paper.png", "palette.png",
                                       "rgb.jpg", "rgba.png", "sixteen.png"]  # no .txt
    preds = {p.file.rsplit("/", 1)[1]: p for p in predict_files(run, files, top_k=3,
                                                                  batch_size=4)}
    expect = run.logits(torch.from_numpy(big.copy())[None, None]).softmax(1)[0]
    for name, p in preds.items():
        assert p.classes[0] == run.classes[int(expect.argmax())], name
        assert p.probabilities[0] == pytest.approx(float(expect.max()), abs=0.02), name
    assert preds["ink-on-paper.png"].inverted and not preds["grey.png"].inverted
    assert len(preds["grey.png"].classes) == 3
    assert preds["grey.png"].probabilities == sorted(preds["grey.png"].probabilities, reverse=True)


def test_cli_table_json_and_bad_input(lenet_run, digit, tmp_path):
    _write_variants(digit, tmp_path)
    r = CliRunner().invoke(cli, ["predict", str(lenet_run), str(tmp_path / "grey.png"),
                                 str(tmp_path / "ink-on-paper.png"), "--json", "--top-k", "2"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["inverted"] for row in rows] == [False, True] and len(rows[0]["top"]) == 2
    r = CliRunner().invoke(cli, ["predict", str(lenet_run), str(tmp_path)])
    assert r.exit_code == 0 and "(inverted)" in r.output and "were inverted" in r.output
    for args, msg in [([str(tmp_path / "notes.txt")], "cannot read"),
                      ([str(tmp_path / "missing.png")], "does not exist"),
                      ([str(tmp_path / "grey.png"), "--top-k", "0"], "--top-k must be at least 1")]:
        r = CliRunner().invoke(cli, ["predict", str(lenet_run), *args])
        assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["predict", str(tmp_path), str(tmp_path / "grey.png")])
    assert r.exit_code == 1 and "not a cnnlab run directory" in r.output
