"""`cnnlab predict`: own image files in any mode and size are seen exactly as in training."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnnlab.cli import cli
from cnnlab.data import load_split
from cnnlab.data.images import frame_digit, model_view, read_image
from cnnlab.data.preprocess import Preprocess
from cnnlab.engine.predict import collect_files, predict, predict_files
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
    assert collect_files([tmp_path / "rgb.jpg", tmp_path]) == [tmp_path / "rgb.jpg"] + [
        f for f in files if f.name != "rgb.jpg"]  # a file given twice is classified once
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
    r = CliRunner().invoke(cli, ["predict", str(lenet_run), str(tmp_path / "notes.txt")])
    assert r.exit_code == 1 and "is not an image file" in r.output
    assert r.output.strip().splitlines()[-1] == ("Error: 1 of 1 file(s) could not be read "
                                                  "(marked above)")
    for args, msg in [([str(tmp_path / "missing.png")], "does not exist"),
                      ([str(tmp_path / "grey.png"), "--top-k", "0"], "--top-k must be a whole number"),
                      ([str(tmp_path / "grey.png"), "--top-k", "x"], "got 'x'")]:
        r = CliRunner().invoke(cli, ["predict", str(lenet_run), *args])
        assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["predict", str(tmp_path), str(tmp_path / "grey.png")])
    assert r.exit_code == 1 and "not a cnnlab run directory" in r.output


def test_one_bad_file_does_not_stop_the_others(lenet_run, digit, tmp_path):
    """A truncated PNG and a huge declared canvas in a folder: rows for them, answers for
    the rest, then a non-zero exit."""
    _write_variants(digit, tmp_path)
    good = (tmp_path / "grey.png").read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cut.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (15000, 15000)).save(tmp_path / "sub" / "huge.png")  # 225 MP > Pillow's cap
    r = CliRunner().invoke(cli, ["predict", str(lenet_run), str(tmp_path), "--json"])
    assert r.exit_code == 1
    rows = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    by_name = {row["file"].rsplit("/", 1)[1]: row for row in rows}
    assert "corrupt or truncated" in by_name["cut.png"]["error"]
    assert "too many pixels" in by_name["huge.png"]["error"]
    assert all("top" in row for name, row in by_name.items() if name not in ("cut.png", "huge.png"))
    assert len(rows) == 8 and "2 of 8 file(s) could not be read" in r.output
    assert "Traceback" not in r.output


def test_file_names_with_brackets_print_as_they_are(lenet_run, digit, tmp_path, monkeypatch):
    """The console reads no rich markup: `[red]` in a name is part of the name."""
    monkeypatch.chdir(tmp_path)  # short names: the table shortens long paths
    Image.fromarray(digit).save("scan[red].png")
    Path("notes[bold].png").write_text("not an image")
    r = CliRunner().invoke(cli, ["predict", str(lenet_run), "scan[red].png", "notes[bold].png"])
    assert r.exit_code == 1
    assert "scan[red].png" in r.output and "notes[bold].png" in r.output, r.output
    assert "unreadable:" in r.output

    from cnnlab.data.sources import ucr
    from cnnlab.errors import CnnlabError

    def missing():
        raise CnnlabError("no aeon")

    monkeypatch.setattr(ucr, "classification_names", missing)
    r = CliRunner().invoke(cli, ["datasets"])
    assert "needs the series extra" in r.output and "'cnnlab[series]'" in r.output, r.output


def test_probabilities_never_round_to_0_or_100_percent():
    from cnnlab.viz.plots import percent

    assert [percent(p) for p in (0.9999, 0.995, 0.5, 0.094, 0.003, 0.0004)] == \
        ["99.9%", "99.5%", "50%", "9.4%", "0.3%", "<0.1%"]


def test_top_k_all_one_path_and_frame_from_python_and_the_cli(lenet_run, digit, tmp_path):
    _write_variants(digit, tmp_path)
    grey = tmp_path / "grey.png"
    r = CliRunner().invoke(cli, ["predict", str(lenet_run), str(grey), "--json", "--top-k", "all"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)["top"]) == 10
    [one] = predict(lenet_run, str(grey), top_k=None, device="cpu")  # one path, not a list
    assert len(one.classes) == 10 and one.file == str(grey)
    Image.fromarray(np.full((30, 30), 250, np.uint8)).save(tmp_path / "empty.png")
    r = CliRunner().invoke(cli, ["predict", str(lenet_run), str(grey), str(tmp_path / "empty.png")])
    assert r.exit_code == 0 and "empty.png (inverted) (blank)" in r.output
    assert "grey.png (blank)" not in r.output and "1 image(s) marked blank" in r.output
    [framed] = predict(lenet_run, grey, frame=True, device="cpu")
    r = CliRunner().invoke(cli, ["predict", str(lenet_run), str(grey), "--json", "--frame"])
    assert r.exit_code == 0 and json.loads(r.output)["top"][0]["class"] == framed.classes[0]


def _corner_digit(ink_value: int = 0) -> np.ndarray:
    """A 7-like stroke, 60 pixels tall, dark on a white 300x400 page, near a corner."""
    page = np.full((300, 400), 255, np.uint8)
    page[20:26, 300:340] = ink_value  # the bar
    for i in range(60):  # the slanted stem
        page[26 + i, 334 - i // 3:340 - i // 3] = ink_value
    return page


def test_framing_scales_the_drawing_into_20x20_centred_on_its_mass():
    page = torch.from_numpy(_corner_digit())[None]
    out = frame_digit(page, (28, 28))
    assert out.shape == (1, 28, 28) and out.dtype == torch.uint8
    ink = 255 - out[0].float()
    assert out[0, 0, 0] == 255 and out[0, -1, -1] == 255  # still dark on clean white paper
    ys, xs = (ink > 30).nonzero(as_tuple=True)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 in (19, 20, 21)
    cy = float((ink.sum(1) * torch.arange(28)).sum() / ink.sum())
    cx = float((ink.sum(0) * torch.arange(28)).sum() / ink.sum())
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert torch.equal(frame_digit(255 - page, (28, 28)), 255 - out)  # either polarity
    blank = torch.full((1, 50, 50), 255, dtype=torch.uint8)
    assert torch.equal(frame_digit(blank, (28, 28)), torch.full((1, 28, 28), 255,
                                                                dtype=torch.uint8))
    colour = Preprocess(channels=3, size=(32, 32))
    with pytest.raises(Exception, match=r"framing a digit like MNIST \(--frame\) is for grey"):
        model_view(page.expand(3, -1, -1), colour, frame=True)


def test_pictures_are_read_as_a_person_sees_them(tmp_path):
    """EXIF orientation applied; white ink on transparency lands on black, dark ink on white;
    a big JPEG decodes at reduced scale."""
    tall = np.zeros((40, 20), np.uint8)
    tall[:5] = 255  # a bright band at the top of the upright picture
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(tall))).save(tmp_path / "side.jpg",
                                                               exif=exif, quality=95)
    upright = read_image(tmp_path / "side.jpg")[0].numpy()
    assert upright.shape == (40, 20) and upright[:5].mean() > 200 and upright[5:].mean() < 30
    for ink, paper in ((255, 0), (0, 255)):
        rgba = np.zeros((30, 30, 4), np.uint8)
        rgba[10:20, 10:20] = (ink, ink, ink, 255)  # opaque ink, transparent elsewhere
        Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
        img = read_image(tmp_path / "a.png").float().mean(0)
        assert img[0, 0] == paper and img[15, 15] == ink
    Image.fromarray(np.full((1600, 2000, 3), 128, np.uint8)).save(tmp_path / "big.jpg")
    assert tuple(read_image(tmp_path / "big.jpg").shape) == (3, 800, 1000)


def test_frame_on_a_run_that_does_not_read_digits_is_noted_on_stderr(lenet_run, digit, tmp_path):
    """--frame is made for MNIST-like digits; on other grey runs it is allowed with a note,
    which goes to stderr so that --json's lines stay parseable."""
    import shutil

    run = shutil.copytree(lenet_run, tmp_path / "run")
    (run / "classes.json").write_text(json.dumps({"classes": list("abcdefghij")}))
    _write_variants(digit, tmp_path)
    r = CliRunner().invoke(cli, ["predict", str(run), str(tmp_path / "grey.png"), "--frame",
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["top"][0]["class"] in "abcdefghij"
    assert "--frame centres and scales a drawing as MNIST's digits were" in r.stderr
    r = CliRunner().invoke(cli, ["predict", str(lenet_run), str(tmp_path / "grey.png"), "--frame"])
    assert r.exit_code == 0 and "MNIST's digits were" not in r.stderr
