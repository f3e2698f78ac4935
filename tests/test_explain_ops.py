"""`cnnlab explain conv|pool|channels`: the numbers drawn are PyTorch's, an animation has one
frame per output number, and bad input is a one-line error that writes nothing."""

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from cnnlab.cli import cli
from cnnlab.errors import CnnlabError
from cnnlab.explain import ops
from cnnlab.explain.grids import LAST_FRAME_MS, drawn_texts
from cnnlab.inspect import conv as C

X5 = C.parse_matrix(C.TUTORIAL_INPUT_5x5, "input")[0]
K3 = C.parse_matrix(C.TUTORIAL_KERNEL_3x3, "kernel")[0]
X4 = C.parse_matrix(C.TUTORIAL_INPUT_4x4, "input")[0]


def drawn(fig) -> dict[str, str]:
    import matplotlib.pyplot as plt  # the library has chosen the Agg backend by now

    texts = drawn_texts(fig)
    plt.close(fig)
    return texts


def grid(texts: dict[str, str], name: str, rows: int, cols: int) -> list[list[float | None]]:
    """The numbers a picture shows in grid ``name``; None where a cell is empty."""
    return [[float(texts[f"{name}:{i},{j}"]) if f"{name}:{i},{j}" in texts else None
             for j in range(cols)] for i in range(rows)]


def printed(t: torch.Tensor) -> list[list[float]]:
    """``t`` as `cnnlab conv` and `cnnlab pool` print it (whole numbers, or 4 digits)."""
    fmt = C.number_format(t)
    return [[float(fmt(v)) for v in row] for row in t.tolist()]


def gif_frames(path) -> tuple[int, list[int]]:
    with Image.open(path) as im:
        durations = []
        for n in range(im.n_frames):
            im.seek(n)
            durations.append(im.info["duration"])
        return im.n_frames, durations


@pytest.mark.parametrize("padding,stride", [(1, 1), (0, 2), (0, 1), (2, 3)])
def test_conv_picture_draws_pytorchs_numbers(padding, stride):
    texts = drawn(ops.conv_figure(padding=padding, stride=stride))
    out = F.conv2d(X5[None, None], K3[None, None], padding=padding, stride=stride)[0, 0]
    assert grid(texts, "output", *out.shape) == out.tolist()
    assert grid(texts, "kernel", 3, 3) == K3.tolist()
    padded = F.pad(X5, (padding,) * 4)
    assert grid(texts, "input", *padded.shape) == padded.tolist()   # padding drawn as 0
    assert texts["example"].endswith(f"= {int(out[0, 0])}")
    if (padding, stride) == (1, 1):
        assert grid(texts, "output", 5, 5)[0] == [91, 168, 224, 215, 127]
    if (padding, stride) == (0, 2):
        assert grid(texts, "output", 2, 2) == [[211, 262], [251, 169]]


def test_conv_frames_show_each_windows_products_and_sum():
    out = F.conv2d(X5[None, None], K3[None, None], padding=1)[0, 0]
    padded = F.pad(X5, (1, 1, 1, 1))
    for n in range(out.numel()):
        i, j = divmod(n, 5)
        texts = drawn(ops.conv_figure(padding=1, step=n))
        products = padded[i:i + 3, j:j + 3] * K3
        assert grid(texts, "product", 3, 3) == products.tolist()
        assert texts["sum"] == f"= {int(out[i, j])}" == f"= {int(products.sum())}"
        shown = grid(texts, "output", 5, 5)   # the output so far, in reading order
        assert [v for row in shown for v in row if v is not None] == out.flatten()[:n + 1].tolist()
    with pytest.raises(CnnlabError, match="not an output cell"):
        ops.conv_figure(padding=1, step=25)


def test_conv_frames_share_one_layout():
    """Every frame of the animation has the same size, so nothing moves but the window (the
    widest products, 9x9, and the widest sum set it for all)."""
    import matplotlib.pyplot as plt

    sizes = set()
    for n in range(25):
        fig = ops.conv_figure(padding=1, step=n)
        sizes.add(tuple(fig.get_size_inches().round(4)))
        plt.close(fig)
    assert len(sizes) == 1


def test_conv_of_fractions_and_a_rectangle():
    x = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0], [2.0, 1.0, 0.0, -2.0]])
    k = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    texts = drawn(ops.conv_figure(x, k, padding=0, stride=1))
    out = F.conv2d(x[None, None], k[None, None])[0, 0]
    assert grid(texts, "output", 2, 3) == printed(out)
    assert torch.allclose(torch.tensor(grid(texts, "output", 2, 3)), out)


def test_conv_gif_has_one_frame_per_output_number(tmp_path):
    runner = CliRunner()
    for args, cells in ((["--padding", "1"], 25), (["--stride", "2"], 4)):
        out = tmp_path / f"conv{cells}.gif"
        res = runner.invoke(cli, ["explain", "conv", *args, "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert res.output.strip() == f"wrote {out}"
        n, durations = gif_frames(out)
        assert n == cells                       # no extra frame: the last one is held longer
        assert durations[-1] == LAST_FRAME_MS and len(set(durations[:-1])) <= 1
        assert out.stat().st_size < 400_000
    png = tmp_path / "conv.png"
    res = runner.invoke(cli, ["explain", "conv", "--input", " ".join(str(v) for v in range(1, 26)),
                              "--out", str(png)])
    assert res.exit_code == 0 and "as 5x5" in res.output          # the note `cnnlab conv` prints
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp files


def _bold_cells(fig, name: str) -> set[tuple[int, int]]:
    from matplotlib.text import Text

    cells = set()
    for t in fig.findobj(Text):
        gid = t.get_gid() or ""
        if gid.startswith(f"{name}:") and t.get_fontweight() == "bold":
            i, j = gid.split(":")[1].split(",")
            cells.add((int(i), int(j)))
    return cells


@pytest.mark.parametrize("kernel_size,stride", [(2, None), (3, 1), (2, 1)])
def test_pool_picture_draws_pytorchs_numbers_and_the_max_picks(kernel_size, stride):
    fig = ops.pool_figure(kernel_size=kernel_size, stride=stride)
    picks = _bold_cells(fig, "input-max")
    texts = drawn(fig)
    s = stride or kernel_size
    mx = F.max_pool2d(X4[None, None], kernel_size, s)[0, 0]
    avg = F.avg_pool2d(X4[None, None], kernel_size, s)[0, 0]
    assert grid(texts, "max", *mx.shape) == mx.tolist()
    assert grid(texts, "avg", *avg.shape) == printed(avg)
    assert torch.allclose(torch.tensor(grid(texts, "avg", *avg.shape)), avg, atol=1e-3)
    if kernel_size == 2 and stride is None:
        assert mx.tolist() == [[4, 8], [9, 8]]
    # apart, every window has its colour and its max marked; overlapping, the first window
    oh, ow = mx.shape
    windows = [(i, j) for i in range(oh) for j in range(ow)] if s >= kernel_size else [(0, 0)]
    assert len(picks) == len(windows)
    for i, j in windows:
        window = {(r, c) for r in range(i * s, i * s + kernel_size)
                  for c in range(j * s, j * s + kernel_size)}
        (r, c), = picks & window
        assert X4[r, c] == mx[i, j]


def test_pool_frames_and_gif(tmp_path):
    mx = F.max_pool2d(X4[None, None], 2)[0, 0]
    for n in range(4):
        i, j = divmod(n, 2)
        fig = ops.pool_figure(mode="max", step=n)
        assert len(_bold_cells(fig, "input-max")) == 1
        texts = drawn(fig)
        assert texts["example-max"].endswith(f"= {int(mx[i, j])}")
        assert "avg:0,0" not in texts
    out = tmp_path / "pool.gif"
    res = CliRunner().invoke(cli, ["explain", "pool", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert gif_frames(out)[0] == 4
    res = CliRunner().invoke(cli, ["explain", "pool", "--mode", "avg", "--kernel-size", "3",
                                   "--stride", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert gif_frames(out)[0] == 4


def test_channels_picture_is_nn_conv2d():
    x, weight, bias = ops.channels_example(3, 2, 3, 5, seed=0)
    layer = torch.nn.Conv2d(3, 2, 3)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
        expected = layer(x[None])[0]
    texts = drawn(ops.channels_figure(3, 2, 3, 5, seed=0))
    for m in range(2):
        assert grid(texts, f"out{m}", 3, 3) == expected[m].tolist()
        for c in range(3):
            assert grid(texts, f"weight{m}.{c}", 3, 3) == weight[m, c].tolist()
    assert grid(texts, "total", 3, 3) == expected[0].tolist()
    partials = [F.conv2d(x[c][None, None], weight[0, c][None, None])[0, 0] for c in range(3)]
    for c in range(3):
        assert grid(texts, f"partial{c}", 3, 3) == partials[c].tolist()
        assert grid(texts, f"input{c}", 5, 5) == x[c].tolist()
    assert torch.equal(sum(partials) + bias[0], expected[0])
    assert "[out_channels, in_channels, k, k] = [2, 3, 3, 3]" in texts["rule"]
    tutorial = list(torch.nn.Conv2d(5, 10, 3).weight.shape)
    assert tutorial == [10, 5, 3, 3] and f"weight {tutorial}" in texts["tutorial"]


def test_channels_frames_and_gif(tmp_path):
    x, weight, bias = ops.channels_example(2, 3, 2, 3, seed=1)
    expected = F.conv2d(x[None], weight, bias)[0]     # [3, 2, 2]
    for n in (0, 5, 11):
        m, (i, j) = n // 4, divmod(n % 4, 2)
        texts = drawn(ops.channels_figure(2, 3, 2, 3, seed=1, step=n))
        assert texts["sum"].endswith(f"= {int(expected[m, i, j])}")
        assert grid(texts, "total", 2, 2)[i][j] == expected[m, i, j]
    out = tmp_path / "ch.gif"
    res = CliRunner().invoke(cli, ["explain", "channels", "--in-channels", "2", "--out-channels",
                                   "3", "--kernel-size", "2", "--size", "3", "--seed", "1",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert gif_frames(out)[0] == 3 * 2 * 2          # output channels x output height x width
    res = CliRunner().invoke(cli, ["explain", "channels", "--out", str(tmp_path / "ch.png")])
    assert res.exit_code == 0 and (tmp_path / "ch.png").stat().st_size > 0


@pytest.mark.parametrize("args,needle", [
    (["conv", "--input", "1 2; 3 4", "--padding", "0"], "kernel 3x3 does not fit input 2x2"),
    (["conv", "--kernel", " ".join(["1"] * 25), "--input", "1 2; 3 4",
      "--padding", "1"], "does not fit"),
    (["conv", "--stride", "0"], "stride must be at least 1"),
    (["conv", "--padding", "-1"], "padding"),
    (["conv", "--padding", "5"], "at most 12x12"),
    (["conv", "--input", " ".join(["1"] * 81), "--padding", "1"], "81 frames"),   # gif only
    (["channels", "--size", "8", "--out-channels", "2"], "72 frames"),
    (["pool", "--stride", "0"], "stride must be at least 1"),
    (["pool", "--kernel-size", "5"], "does not fit"),
    (["channels", "--kernel-size", "6"], "--kernel-size"),
    (["channels", "--in-channels", "0"], "--in-channels"),
    (["conv", "OUT=x.jpg"], ".png or .gif"),
    (["pool", "OUT=x.jpg"], ".png or .gif"),
    (["channels", "OUT=x.jpg"], ".png or .gif"),
    (["conv", "OUT=x"], ".png or .gif"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, needle):
    out = [str(tmp_path / a[4:]) if a.startswith("OUT=") else a for a in args]
    if not any(a.startswith("OUT=") for a in args):
        out += ["--out", str(tmp_path / "x.gif")]
    else:
        out = [*out[:-1], "--out", out[-1]]
    res = CliRunner().invoke(cli, ["explain", *out])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], res.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make", [
    lambda: ops.conv_figure(kernel=[[1, 2], [3, 4], [5, 6]]),  # two size formulas in a line
    lambda: ops.pool_figure(kernel_size=3),  # nine numbers in each mode's example
    lambda: ops.pool_figure(input=[[float(i + j) for j in range(6)] for i in range(6)],
                            kernel_size=3, stride=2),
])
def test_every_text_stays_on_the_picture_and_off_its_neighbours(make):
    """Long formulas are made smaller rather than run off the edge or into each other."""
    from matplotlib.text import Text

    fig = make()
    renderer = fig.canvas.get_renderer()
    width = fig.get_size_inches()[0] * fig.dpi
    texts = [t for t in fig.findobj(Text) if t.get_text().strip()]
    for t in texts:
        box = t.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width, (t.get_text(), box)
    boxes = {t.get_gid(): t.get_window_extent(renderer) for t in texts if t.get_gid()}
    if "example-max" in boxes and "example-avg" in boxes:
        assert boxes["example-max"].x1 < boxes["example-avg"].x0
        sizes = {t.get_fontsize() for t in fig.findobj(Text)
                 if t.get_gid() in ("example-max", "example-avg")}
        assert len(sizes) == 1  # side by side, alike


def test_frame_seconds_sets_the_pace_of_a_gif_and_is_refused_for_a_png(tmp_path):
    """0.7 s a frame reads too fast aloud in a class: --frame-seconds slows it down."""
    out = tmp_path / "c.gif"
    r = CliRunner().invoke(cli, ["explain", "conv", "--out", str(out), "--frame-seconds", "2"])
    assert r.exit_code == 0, r.output
    with Image.open(out) as im:
        assert im.info["duration"] == 2000
        im.seek(im.n_frames - 1)
        assert im.info["duration"] == LAST_FRAME_MS  # the whole output stays a while
    for args, says in ((["pool", "--out", str(tmp_path / "p.png"), "--frame-seconds", "2"],
                        "sets the pace of an animation"),
                       (["channels", "--out", str(tmp_path / "p.gif"), "--frame-seconds", "0"],
                        "between 0.05 and 60")):
        r = CliRunner().invoke(cli, ["explain", *args])
        assert r.exit_code == 1 and says in r.output, r.output
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "p.gif").exists()
