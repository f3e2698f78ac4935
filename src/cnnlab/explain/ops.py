"""The tutorials' operations drawn as grids of numbers: convolution with padding and stride,
max and average pooling, and a convolution over several channels.

Each ``explain_*`` function writes a PNG (the whole operation at once) or a GIF (one frame per
output number: the window, the arithmetic, the output filling up) and returns the path. The
numbers come from PyTorch (``F.conv2d``, ``F.max_pool2d``, ``F.avg_pool2d``, ``nn.Conv2d``)
through :mod:`cnnlab.inspect.conv`, the code behind `cnnlab conv` and `cnnlab pool`, so the
pictures show exactly what those commands print. The ``*_figure`` functions draw one picture
(``step=None``) or one animation frame (``step=n``) as a matplotlib figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.explain.grids import (
    DONE_FILL,
    HI_EDGE,
    HI_FILL,
    KERNEL_FILL,
    LAST_FRAME_MS,
    NEXT_EDGE,
    PAD_FILL,
    PAD_TEXT,
    PICK_EDGE,
    PNG_DPI,
    UNUSED_TEXT,
    WINDOW_FILLS,
    Canvas,
    check_out,
    is_gif,
    text_width,
    write_gif,
)
from cnnlab.inspect import conv as C

MAX_SIDE = 12     # numbers stop being readable beyond this
MAX_FRAMES = 64   # an animation's frames take about a second each to draw

Matrix = torch.Tensor | str | None


def _matrix(value: Matrix, default: str, what: str) -> torch.Tensor:
    if value is None or isinstance(value, str):
        return C.parse_matrix(value or default, what)[0]
    t = torch.as_tensor(value, dtype=torch.float32)
    if t.dim() != 2 or t.numel() == 0:
        raise CnnlabError(f"{what} must be a 2-D matrix of numbers, got shape {list(t.shape)}")
    return t


def _check_side(h: int, w: int, what: str) -> None:
    if max(h, w) > MAX_SIDE:
        raise CnnlabError(f"{what} is {h}x{w}; explain draws every number, so at most "
                          f"{MAX_SIDE}x{MAX_SIDE}: give a smaller one")


def _signed(text: str) -> str:
    return f"({text})" if text.startswith("-") else text


def _formula(size: tuple[int, int], kernel: tuple[int, int], padding: int, stride: int) -> str:
    """The output-size arithmetic with the numbers in, as mathtext."""
    def one(n: int, k: int) -> str:
        pad = f" + 2\\cdot{padding}"
        return (f"$\\lfloor({n}{pad} - {k})\\,/\\,{stride}\\rfloor + 1 = "
                f"{C.output_size(n, k, stride, padding)}$")

    rule = "$\\lfloor(H + 2p - k)\\,/\\,s\\rfloor + 1$"
    if size[0] == size[1] and kernel[0] == kernel[1]:
        return f"output size = {rule} = {one(size[0], kernel[0])}"
    return (f"output size = {rule}:  height {one(size[0], kernel[0])},  "
            f"width {one(size[1], kernel[1])}")


def _texts(t: torch.Tensor, fmt: Any = None) -> list[list[str]]:
    fmt = fmt or C.number_format(t)
    return [[fmt(v) for v in row] for row in t.tolist()]


def _cell_width(fmt: Any, t: torch.Tensor) -> float:
    """A cell wide enough for the longest number of ``t`` at the usual font size."""
    return max(1.0, 0.22 * max(len(fmt(v)) for v in t.flatten().tolist()) + 0.25)


def _reached(size: int, kernel: int, stride: int, out: int) -> set[int]:
    """The rows (or columns) some window reaches: not those past the last window (the output
    size rounds down) nor those a stride larger than the window steps over."""
    return {start + d for start in range(0, out * stride, stride) for d in range(kernel)
            if start + d < size}


# ---------------------------------------------------------------- convolution


class _Conv:
    """One single-channel convolution and everything its pictures need."""

    def __init__(self, x: torch.Tensor, k: torch.Tensor, padding: int, stride: int) -> None:
        self.out = C.conv2d(x, k, stride=stride, padding=padding)   # checks the sizes
        self.x, self.k, self.p, self.s = x, k, padding, stride
        self.xp = F.pad(x, (padding,) * 4)
        self.ph, self.pw = self.xp.shape
        self.kh, self.kw = k.shape
        self.oh, self.ow = self.out.shape
        self.fx = C.number_format(x)
        self.fk = C.number_format(k)
        self.fo = C.number_format(self.out)
        self.cw = _cell_width(self.fo, self.out)   # output cell width: 0.125 needs more room

    def window(self, i: int, j: int) -> torch.Tensor:
        r, c = i * self.s, j * self.s
        return self.xp[r:r + self.kh, c:c + self.kw]

    def products(self, i: int, j: int) -> torch.Tensor:
        return self.window(i, j) * self.k

    def title(self) -> str:
        return (f"input {self.x.shape[0]}x{self.x.shape[1]}, kernel {self.kh}x{self.kw}, "
                f"padding {self.p}, stride {self.s}  →  output {self.oh}x{self.ow}")

    def formula(self) -> str:
        return _formula(tuple(self.x.shape), (self.kh, self.kw), self.p, self.s)

    def draw_input(self, cv: Canvas, x0: float, y0: float) -> None:
        """The padded input: padding cells grey with 0, cells no window reaches faint."""
        rows, cols = (_reached(self.ph, self.kh, self.s, self.oh),
                      _reached(self.pw, self.kw, self.s, self.ow))
        texts, fills, colors = [], [], []
        for r in range(self.ph):
            t_row, f_row, c_row = [], [], []
            for c in range(self.pw):
                pad = not (self.p <= r < self.ph - self.p and self.p <= c < self.pw - self.p)
                t_row.append("0" if pad else self.fx(float(self.xp[r, c])))
                f_row.append(PAD_FILL if pad else "white")
                c_row.append(PAD_TEXT if pad else UNUSED_TEXT if r not in rows or c not in cols
                             else "black")
            texts.append(t_row)
            fills.append(f_row)
            colors.append(c_row)
        cv.cells(x0, y0, texts, name="input", fill=fills, color=colors)

    def highlight_window(self, cv: Canvas, x0: float, y0: float, i: int, j: int,
                         color: str = HI_EDGE, fill: str | None = HI_FILL,
                         ls: str = "-") -> None:
        cv.box(x0 + j * self.s, y0 + i * self.s, self.kw, self.kh, color, fill=fill, ls=ls)

    def unused(self) -> bool:
        """Whether some input cells (not padding) are in no window."""
        real_rows, real_cols = range(self.p, self.ph - self.p), range(self.p, self.pw - self.p)
        return not (set(real_rows) <= _reached(self.ph, self.kh, self.s, self.oh)
                    and set(real_cols) <= _reached(self.pw, self.kw, self.s, self.ow))

    def output_texts(self, upto: int | None = None) -> list[list[str | None]]:
        """The output numbers; with ``upto``, only the first ``upto + 1`` in reading order."""
        return [[self.fo(float(self.out[i, j])) if upto is None or i * self.ow + j <= upto
                 else None for j in range(self.ow)] for i in range(self.oh)]


def _conv_op(input: Matrix, kernel: Matrix, padding: int, stride: int) -> _Conv:
    op = _Conv(_matrix(input, C.TUTORIAL_INPUT_5x5, "--input"),
               _matrix(kernel, C.TUTORIAL_KERNEL_3x3, "--kernel"), padding, stride)
    _check_side(op.ph, op.pw, "the padded input")
    return op


def conv_figure(input: Matrix = None, kernel: Matrix = None, padding: int = 0, stride: int = 1,
                step: int | None = None) -> Any:
    """The convolution as a matplotlib figure: the whole operation (``step=None``) or the
    animation frame that computes output number ``step`` (in reading order, from 0)."""
    op = _conv_op(input, kernel, padding, stride)
    if step is None:
        return _conv_picture(op)
    if not 0 <= step < op.out.numel():
        raise CnnlabError(f"step {step} is not an output cell (0 to {op.out.numel() - 1})")
    return _conv_frame(op, *divmod(step, op.ow), _frame_widths(op))


def _notes(stride: int | None, unused: bool) -> list[tuple[str, str]]:
    """The legend lines under a picture: the dashed next window, the cells no window reaches."""
    notes = []
    if stride is not None:
        notes.append((f"dashed: the window of output[0, 1], {stride} column{'s' * (stride > 1)} "
                      f"to the right (stride {stride})", NEXT_EDGE))
    if unused:
        notes.append(("light grey numbers: no window reaches them", "#888888"))
    return notes


def _example_lines(terms: list[str], per_line: int) -> list[str]:
    """``a×k`` terms joined by '+', at most ``per_line`` to a line (a kernel row each when
    there are many)."""
    if len(terms) > 25:
        return [f"the sum of the {len(terms)} products window × kernel"]
    if len(terms) <= 9:
        return [" + ".join(terms)]
    return [" + ".join(terms[n:n + per_line]) for n in range(0, len(terms), per_line)]


def _conv_picture(op: _Conv) -> Any:
    gap, top, margin = 1.6, 3.2, 0.8
    tall = max(op.ph, op.kh, op.oh)
    terms = [f"{op.fx(float(a))}×{_signed(op.fk(float(b)))}"
             for a, b in zip(op.window(0, 0).flatten().tolist(), op.k.flatten().tolist(),
                             strict=True)]
    lines = _example_lines(terms, op.kw)
    content = op.pw + gap + op.kw + gap + op.ow * op.cw
    width = max(content + 2 * margin, 22.0)
    x0 = (width - content) / 2
    xk = x0 + op.pw + gap
    xo = xk + op.kw + gap
    legend = op.ow > 1
    notes = _notes(op.s if legend else None, op.unused())
    height = top + tall + 0.7 + 0.75 * (len(lines) + len(notes)) + 0.5
    cv = Canvas(width, height)
    cv.write(width / 2, 0.7, op.title(), size=0.5, weight="bold")
    cv.write(width / 2, 1.6, op.formula(), size=0.46)
    y_in, y_k, y_o = (top + (tall - h) / 2 for h in (op.ph, op.kh, op.oh))
    cv.write(x0 + op.pw / 2, y_in - 0.45, f"input, padding {op.p}" if op.p else "input",
             size=0.4)
    cv.write(xk + op.kw / 2, y_k - 0.45, "kernel", size=0.4)
    cv.write(xo + op.ow * op.cw / 2, y_o - 0.45, "output", size=0.4)
    op.draw_input(cv, x0, y_in)
    if legend:   # where the next window sits: the stride
        op.highlight_window(cv, x0, y_in, 0, 1, color=NEXT_EDGE, fill=None, ls="--")
    op.highlight_window(cv, x0, y_in, 0, 0)
    cv.cells(xk, y_k, _texts(op.k, op.fk), name="kernel", fill=KERNEL_FILL)
    fills = [[DONE_FILL] * op.ow for _ in range(op.oh)]
    fills[0][0] = HI_FILL
    cv.cells(xo, y_o, op.output_texts(), name="output", fill=fills, cell_w=op.cw)
    cv.box(xo, y_o, op.cw, 1, HI_EDGE)
    if legend:
        cv.box(xo + op.cw, y_o, op.cw, 1, NEXT_EDGE, ls="--", lw=2.0)
    mid = top + tall / 2
    cv.write(xk - gap / 2, mid, "∗", size=0.9)
    cv.write(xo - gap / 2, mid, "=", size=0.8)
    y = top + tall + 1.0
    total = op.fo(float(op.products(0, 0).sum()))
    for n, line in enumerate(lines):
        head = "output[0, 0] = " if n == 0 else ""
        tail = f" = {total}" if n == len(lines) - 1 else " +"
        cv.write(width / 2, y + 0.75 * n, head + line + tail, size=0.42, color=HI_EDGE,
                 gid="example" if n == len(lines) - 1 else None)
    for n, (note, color) in enumerate(notes):
        cv.write(width / 2, y + 0.75 * (len(lines) + n), note, size=0.38, color=color)
    return cv.fig


def _pairs(op: _Conv, i: int, j: int) -> list[list[str]]:
    """The ``a×b`` texts of output (i, j)'s window and the kernel."""
    return [[f"{op.fx(float(a))}×{_signed(op.fk(float(b)))}" for a, b in zip(ra, rb, strict=True)]
            for ra, rb in zip(op.window(i, j).tolist(), op.k.tolist(), strict=True)]


def _frame_widths(op: _Conv) -> tuple[float, int]:
    """The product cell width and the longest sum's length over every frame: one layout for
    the whole animation, so that nothing moves from frame to frame but the window."""
    cells = [(i, j) for i in range(op.oh) for j in range(op.ow)]
    longest = max(len(t) for i, j in cells for row in _pairs(op, i, j) for t in row)
    return (max(1.5, 0.22 * longest + 0.5),
            max(len(op.fo(float(op.out[i, j]))) for i, j in cells))


def _conv_frame(op: _Conv, i: int, j: int, widths: tuple[float, int]) -> Any:
    gap, top = 1.6, 3.2
    prods = op.products(i, j)
    fp = C.number_format(prods)
    pair = _pairs(op, i, j)
    pw, total_len = widths   # product cell width, room for the longest sum
    mid_w = max(op.kw * pw, op.kw)
    mid_h = op.kh + 1.2 + op.kh
    tall = max(op.ph, mid_h, op.oh)
    total = op.fo(float(op.out[i, j]))
    xm = 0.6 + op.pw + gap
    xs = xm + mid_w + 0.4              # "= sum"
    xo = xs + 0.45 * (total_len + 2) + gap
    width = max(xo + op.ow * op.cw + 0.6, 22.0)
    cv = Canvas(width, top + tall + 0.6)
    cv.write(width / 2, 0.7, op.title(), size=0.5, weight="bold")
    cv.write(width / 2, 1.6, f"output[{i}, {j}] = sum of window × kernel = {total}"
             f"     (step {i * op.ow + j + 1} of {op.out.numel()})", size=0.46)
    y_in, y_m, y_o = (top + (tall - h) / 2 for h in (op.ph, mid_h, op.oh))
    cv.write(0.6 + op.pw / 2, y_in - 0.45, f"input, padding {op.p}" if op.p else "input",
             size=0.4)
    op.draw_input(cv, 0.6, y_in)
    op.highlight_window(cv, 0.6, y_in, i, j)
    xk = xm + (mid_w - op.kw) / 2
    cv.write(xm + mid_w / 2, y_m - 0.45, "kernel", size=0.4)
    cv.cells(xk, y_m, _texts(op.k, op.fk), name="kernel", fill=KERNEL_FILL)
    yp = y_m + op.kh + 1.2
    cv.write(xm + mid_w / 2, yp - 0.45, "window × kernel", size=0.4, color=HI_EDGE)
    fs = cv.font([t for row in pair for t in row], pw, size=0.34)
    cv.cells(xm, yp, _texts(prods, fp), name="product", fill=HI_FILL, cell_w=pw,
             size=cv.font([t for row in _texts(prods, fp) for t in row], pw, size=0.4),
             text_y=0.7)
    for r, row in enumerate(pair):   # the factors, small, above each product
        for c, t in enumerate(row):
            cv.ax.text(xm + (c + 0.5) * pw, yp + r + 0.28, t, ha="center", va="center",
                       fontsize=fs, color="#444444", zorder=5)
    cv.write(xs, yp + op.kh / 2, f"= {total}", size=0.55, ha="left", color=HI_EDGE,
             weight="bold", gid="sum")
    cv.write(xm - gap / 2, top + tall / 2, "→", size=0.7)
    cv.write(xo - gap / 2, top + tall / 2, "→", size=0.7)
    cv.write(xo + op.ow * op.cw / 2, y_o - 0.45, "output", size=0.4)
    n = i * op.ow + j
    fills = [[HI_FILL if (r, c) == (i, j) else DONE_FILL if r * op.ow + c < n else "white"
              for c in range(op.ow)] for r in range(op.oh)]
    cv.cells(xo, y_o, op.output_texts(upto=n), name="output", fill=fills, bold={(i, j)},
             cell_w=op.cw)
    cv.box(xo + j * op.cw, y_o + i, op.cw, 1, HI_EDGE)
    return cv.fig


def explain_conv(input: Matrix = None, kernel: Matrix = None, padding: int = 0,
                 stride: int = 1, path: str | Path = "explain-conv.png",
                 frame_seconds: float | None = None) -> Path:
    """Draw a single-channel convolution (the tutorial's 5x5 input and 3x3 kernel unless
    given, as matrices or `cnnlab conv`'s text) to ``path``: a .png with the padded input,
    the kernel and the output, or a .gif with one frame per output number. Returns ``path``."""
    path = check_out(path)
    op = _conv_op(input, kernel, padding, stride)
    widths = _frame_widths(op)
    return _write(path, lambda: _conv_picture(op),
                  [lambda n=n: _conv_frame(op, *divmod(n, op.ow), widths)
                   for n in range(op.out.numel())], frame_seconds)


def _write(path: Path, picture: Any, frames: list[Any],
           frame_seconds: float | None = None) -> Path:
    """``path`` as a .gif of ``frames`` (``frame_seconds`` each, for a class that reads each
    step aloud; the last frame stays longer) or a .png of ``picture``."""
    if frame_seconds is not None:
        if not is_gif(path):
            raise CnnlabError("--frame-seconds sets the pace of an animation: give --out "
                              "NAME.gif, or drop it for a .png")
        if not 0.05 <= frame_seconds <= 60:
            raise CnnlabError(f"--frame-seconds must be between 0.05 and 60, got "
                              f"{frame_seconds:g}")
    if is_gif(path):
        if len(frames) > MAX_FRAMES:
            raise CnnlabError(f"the animation would have {len(frames)} frames, one per output "
                              f"number; at most {MAX_FRAMES}: give a smaller input or a larger "
                              "stride, or write a .png")
        if frame_seconds is None:
            return write_gif(frames, path)
        ms = round(frame_seconds * 1000)
        return write_gif(frames, path, frame_ms=ms, last_ms=max(ms, LAST_FRAME_MS))
    from cnnlab.viz.plots import save_png

    return save_png(picture(), path, dpi=PNG_DPI)


# ---------------------------------------------------------------- pooling

_POOL_NAMES = {"max": "max pooling", "avg": "average pooling"}


class _Pool:
    """Max and/or average pooling of one matrix and everything its pictures need."""

    def __init__(self, x: torch.Tensor, kernel_size: int, stride: int | None,
                 modes: list[str]) -> None:
        self.outs = {m: C.pool2d(x, kernel_size, stride, 0, m) for m in modes}   # checks sizes
        self.x, self.k, self.modes = x, kernel_size, modes
        self.s = kernel_size if stride is None else stride
        self.h, self.w = x.shape
        self.oh, self.ow = self.outs[modes[0]].shape
        self.fx = C.number_format(x)
        self.fo = {m: C.number_format(o) for m, o in self.outs.items()}
        self.cw = max(_cell_width(self.fo[m], o) for m, o in self.outs.items())   # 3.25: wider
        # the cell max pooling keeps in each window (PyTorch's choice among equal numbers)
        _, idx = F.max_pool2d(x[None, None], kernel_size, self.s, return_indices=True)
        self.picks = [divmod(int(v), self.w) for v in idx[0, 0].flatten()]

    def window(self, i: int, j: int) -> torch.Tensor:
        r, c = i * self.s, j * self.s
        return self.x[r:r + self.k, c:c + self.k]

    def title(self) -> str:
        return (f"input {self.h}x{self.w}, window {self.k}x{self.k}, stride {self.s}  →  "
                f"output {self.oh}x{self.ow}")

    def example(self, mode: str, i: int, j: int) -> str:
        nums = [self.fx(v) for v in self.window(i, j).flatten().tolist()]
        value = self.fo[mode](float(self.outs[mode][i, j]))
        if mode == "max":
            inner = ", ".join(nums) if len(nums) <= 9 else f"the {len(nums)} numbers"
            return f"max({inner}) = {value}"
        inner = " + ".join(nums) if len(nums) <= 9 else f"sum of the {len(nums)} numbers"
        return f"({inner}) / {len(nums)} = {value}"

    def unused(self) -> bool:
        return (len(_reached(self.h, self.k, self.s, self.oh)) < self.h
                or len(_reached(self.w, self.k, self.s, self.ow)) < self.w)

    def block_size(self) -> tuple[float, float]:
        return self.w + 2.4 + self.ow * self.cw, self.h + 1.6   # input, arrow, output; example

    def draw(self, cv: Canvas, mode: str, x0: float, y0: float, step: int | None) -> None:
        """One mode's input -> output, top left at (x0, y0): every window in its own colour
        (``step=None``) or window ``step`` and the output so far."""
        bw, _ = self.block_size()
        xo, yo = x0 + self.w + 2.4, y0 + (self.h - self.oh) / 2
        rows = _reached(self.h, self.k, self.s, self.oh)
        cols = _reached(self.w, self.k, self.s, self.ow)
        cv.write(x0 + bw / 2, y0 - 1.05, _POOL_NAMES[mode], size=0.46, weight="bold")
        cv.write(x0 + self.w / 2, y0 - 0.4, "input", size=0.38)
        cv.write(xo + self.ow * self.cw / 2, yo - 0.4, "output", size=0.38)
        cv.write(x0 + self.w + 1.2, y0 + self.h / 2 - 0.1, "→", size=0.8)
        cv.write(x0 + self.w + 1.2, y0 + self.h / 2 + 0.55, f"{mode} {self.k}x{self.k}",
                 size=0.3, color="#555555")
        n_out = self.oh * self.ow
        cells = [(n, *divmod(n, self.ow)) for n in range(n_out)]
        apart = self.s >= self.k    # the windows do not overlap: each gets its own colour
        out_fill = [["white"] * self.ow for _ in range(self.oh)]
        shown = []   # (n, i, j, colour) of the windows drawn
        if step is None:
            for n, i, j in cells:
                out_fill[i][j] = WINDOW_FILLS[n % len(WINDOW_FILLS)] if apart else DONE_FILL
            out_fill[0][0] = HI_FILL
            shown = ([(n, i, j, WINDOW_FILLS[n % len(WINDOW_FILLS)]) for n, i, j in cells]
                     if apart else [(0, 0, 0, HI_FILL)])
        else:
            for _n, i, j in cells[:step]:
                out_fill[i][j] = DONE_FILL
            si, sj = divmod(step, self.ow)
            out_fill[si][sj] = HI_FILL
            shown = [(step, si, sj, HI_FILL)]
        colors = [["black" if r in rows and c in cols else UNUSED_TEXT for c in range(self.w)]
                  for r in range(self.h)]
        picks = {self.picks[n] for n, *_ in shown} if mode == "max" else set()
        cv.cells(x0, y0, _texts(self.x, self.fx), name=f"input-{mode}", color=colors, bold=picks)
        for _n, i, j, fill in shown:
            edge = HI_EDGE if fill == HI_FILL else "#777777"
            cv.box(x0 + j * self.s, y0 + i * self.s, self.k, self.k, edge, fill=fill,
                   lw=2.6 if fill == HI_FILL else 1.6)
        for r, c in picks:
            cv.box(x0 + c, y0 + r, 1, 1, PICK_EDGE, lw=2.0, inset=0.12)
        if step is None and not apart and self.ow > 1:
            cv.box(x0 + self.s, y0, self.k, self.k, NEXT_EDGE, ls="--")
        upto = n_out - 1 if step is None else step
        texts = [[self.fo[mode](float(self.outs[mode][i, j])) if i * self.ow + j <= upto
                  else None for j in range(self.ow)] for i in range(self.oh)]
        ci, cj = (0, 0) if step is None else divmod(step, self.ow)
        cv.cells(xo, yo, texts, name=mode, fill=out_fill, cell_w=self.cw,
                 bold={(ci, cj)} if step is not None else None)
        cv.box(xo + cj * self.cw, yo + ci, self.cw, 1, HI_EDGE)
        cv.write(x0 + bw / 2, y0 + self.h + 0.75, f"output[{ci}, {cj}] = "
                 f"{self.example(mode, ci, cj)}", size=0.4, color=HI_EDGE, gid=f"example-{mode}",
                 room=bw + 1.8)  # its half of the gap to the other mode's block


def _pool_op(input: Matrix, kernel_size: int, stride: int | None, mode: str | None) -> _Pool:
    if mode not in (None, "max", "avg"):
        raise CnnlabError(f"unknown pooling mode '{mode}'; choose max or avg (or neither: both)")
    op = _Pool(_matrix(input, C.TUTORIAL_INPUT_4x4, "--input"), kernel_size, stride,
               [mode] if mode else ["max", "avg"])
    _check_side(op.h, op.w, "the input")
    return op


def _pool_draw(op: _Pool, step: int | None) -> Any:
    bw, bh = op.block_size()
    top, gap, margin = 4.0, 2.2, 0.8
    across = len(op.modes) == 1 or op.w <= 8      # side by side, or one above the other
    n = len(op.modes)
    content_w = n * bw + (n - 1) * gap if across else bw
    content_h = bh if across else n * bh + (n - 1) * 1.6
    width = max(content_w + 2 * margin, 16.0)
    notes = (_notes(op.s if op.s < op.k and op.ow > 1 else None, op.unused())
             if step is None else [])
    width = max(width, 22.0 if notes else 0.0)
    height = top + content_h + 0.5 + 0.75 * len(notes)
    cv = Canvas(width, height)
    cv.write(width / 2, 0.7, op.title(), size=0.5, weight="bold")
    line2 = (_formula((op.h, op.w), (op.k, op.k), 0, op.s) if step is None else
             f"window {step + 1} of {op.oh * op.ow} → output[{step // op.ow}, {step % op.ow}]")
    cv.write(width / 2, 1.6, line2, size=0.46)
    x0 = (width - content_w) / 2
    for m, mode in enumerate(op.modes):
        if across:
            op.draw(cv, mode, x0 + m * (bw + gap), top, step)
        else:
            op.draw(cv, mode, x0, top + m * (bh + 1.6), step)
    for n, (note, color) in enumerate(notes):
        cv.write(width / 2, top + content_h + 0.75 * n, note, size=0.38, color=color)
    _same_size(cv.fig, [f"example-{mode}" for mode in op.modes])
    return cv.fig


def _same_size(fig: Any, gids: list[str]) -> None:
    """The texts ``gids`` at the smallest of their sizes: side by side, one was made
    smaller to fit its room, and the pair should read alike."""
    from matplotlib.text import Text

    texts = [t for t in fig.findobj(Text) if t.get_gid() in gids]
    if texts:
        size = min(t.get_fontsize() for t in texts)
        for t in texts:
            t.set_fontsize(size)


def pool_figure(input: Matrix = None, kernel_size: int = 2, stride: int | None = None,
                mode: str | None = None, step: int | None = None) -> Any:
    """Pooling as a matplotlib figure: ``mode`` max or avg, or both side by side (None); the
    whole operation (``step=None``) or the animation frame for output number ``step``."""
    op = _pool_op(input, kernel_size, stride, mode)
    if step is not None and not 0 <= step < op.oh * op.ow:
        raise CnnlabError(f"step {step} is not an output cell (0 to {op.oh * op.ow - 1})")
    return _pool_draw(op, step)


def explain_pool(input: Matrix = None, kernel_size: int = 2, stride: int | None = None,
                 mode: str | None = None, path: str | Path = "explain-pool.png",
                 frame_seconds: float | None = None) -> Path:
    """Draw max and/or average pooling (the tutorial's 4x4 input, 2x2 windows, stride 2
    unless given) to ``path``: a .png with every window and the number it keeps, or a .gif
    with one frame per output number. Returns ``path``."""
    path = check_out(path)
    op = _pool_op(input, kernel_size, stride, mode)
    return _write(path, lambda: _pool_draw(op, None),
                  [lambda n=n: _pool_draw(op, n) for n in range(op.oh * op.ow)], frame_seconds)


# ---------------------------------------------------------------- channels

MAX_CHANNELS = 4
MAX_CHANNEL_SIDE = 8


def channels_example(in_channels: int = 3, out_channels: int = 2, kernel_size: int = 3,
                     size: int = 5, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Small whole numbers to convolve by hand: an input ``[in_channels, size, size]`` (0 to
    9), a weight ``[out_channels, in_channels, k, k]`` (-1 to 1) and a bias ``[out_channels]``
    (-2 to 2), the same for the same ``seed``."""
    for what, v, lo, hi in (("--in-channels", in_channels, 1, MAX_CHANNELS),
                            ("--out-channels", out_channels, 1, MAX_CHANNELS),
                            ("--size", size, 1, MAX_CHANNEL_SIDE),
                            ("--kernel-size", kernel_size, 1, size)):
        if not lo <= v <= hi:
            raise CnnlabError(f"{what} must be from {lo} to {hi} here, got {v}"
                              + (" (the kernel must fit the input)" if what == "--kernel-size"
                                 else ""))
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 10, (in_channels, size, size), generator=g).float()
    weight = torch.randint(-1, 2, (out_channels, in_channels, kernel_size, kernel_size),
                           generator=g).float()
    bias = torch.randint(-2, 3, (out_channels,), generator=g).float()
    return x, weight, bias


class _Channels:
    """A multi-channel convolution computed by a real ``nn.Conv2d`` and per channel."""

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.x, self.weight, self.bias = x, weight, bias
        self.m, self.c, self.k, _ = weight.shape
        self.size = x.shape[-1]
        layer = torch.nn.Conv2d(self.c, self.m, self.k)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
            self.out = layer(x[None])[0]                                   # [M, O, O]
        self.layer_shape = list(layer.weight.shape)
        # one kernel per input channel: partial[m, c] = input[c] * weight[m, c]
        self.partial = torch.stack([torch.stack([C.conv2d(x[c], weight[m, c])
                                                 for c in range(self.c)])
                                    for m in range(self.m)])             # [M, C, O, O]
        self.o = self.out.shape[-1]
        self.fx, self.fw, self.fb = (C.number_format(t) for t in (x, weight, bias))
        self.fp = C.number_format(self.partial)
        self.fo = C.number_format(self.out)

    def title(self) -> str:
        return (f"{self.c} input channel{'s' * (self.c > 1)} {self.size}x{self.size}, "
                f"{self.m} output channel{'s' * (self.m > 1)}, kernel {self.k}x{self.k}  →  "
                f"weight {self.layer_shape}, output [{self.m}, {self.o}, {self.o}]")

    def sum_text(self, m: int, i: int, j: int) -> str:
        parts = [_signed(self.fp(float(self.partial[m, c, i, j]))) for c in range(self.c)]
        return (" + ".join(parts) + f" + {_signed(self.fb(float(self.bias[m])))}"
                f" = {self.fo(float(self.out[m, i, j]))}")

    def out_texts(self, m: int, upto: int | None, fmt: Any, t: torch.Tensor
                  ) -> list[list[str | None]]:
        return [[fmt(float(t[i, j])) if upto is None or i * self.o + j <= upto else None
                 for j in range(self.o)] for i in range(self.o)]

    def fills(self, upto: int | None, current: tuple[int, int] | None) -> list[list[str]]:
        return [[HI_FILL if (i, j) == current else
                 DONE_FILL if upto is None or i * self.o + j < upto else "white"
                 for j in range(self.o)] for i in range(self.o)]

    def draw_sum(self, cv: Canvas, x0: float, y0: float, m: int, step: int | None) -> float:
        """Output channel ``m`` worked out: each input channel with its kernel and result,
        then their sum plus the bias. ``step`` is the output cell in progress (None: all)."""
        g1, g2 = 1.4, 1.4
        xk = x0 + self.size + g1
        xp = xk + self.k + g2
        xs = xp + self.o + 3.2
        cur = (0, 0) if step is None else divmod(step, self.o)
        row_h = self.size + 1.3
        for c in range(self.c):
            y = y0 + c * row_h
            ym = y + (self.size - self.o) / 2
            cv.write(x0 + self.size / 2, y - 0.4, f"input channel {c}", size=0.38)
            cv.cells(x0, y, _texts(self.x[c], self.fx), name=f"input{c}")
            cv.box(x0 + cur[1], y + cur[0], self.k, self.k, HI_EDGE, fill=HI_FILL)
            cv.write(xk + self.k / 2, y + (self.size - self.k) / 2 - 0.4, f"weight[{m}, {c}]",
                     size=0.38)
            cv.cells(xk, y + (self.size - self.k) / 2, _texts(self.weight[m, c], self.fw),
                     name=f"kernel{c}", fill=KERNEL_FILL)
            cv.write(xk - g1 / 2, y + self.size / 2, "∗", size=0.7)
            cv.write(xp - g2 / 2, y + self.size / 2, "=", size=0.6)
            cv.cells(xp, ym, self.out_texts(m, step, self.fp, self.partial[m, c]),
                     name=f"partial{c}", fill=self.fills(step, cur))
            cv.box(xp + cur[1], ym + cur[0], 1, 1, HI_EDGE)
            if c < self.c - 1:
                cv.write(xp + self.o / 2, y + self.size + 0.65, "+", size=0.6, weight="bold")
        total_h = self.c * row_h - 1.3
        ym = y0 + (total_h - self.o) / 2
        cv.write(xp + self.o + 1.6, ym + self.o / 2 - 0.1,
                 f"+ bias[{m}]\n= {self.fb(float(self.bias[m]))}\n→", size=0.4,
                 gid="bias" if step is not None else None)
        cv.write(xs + self.o / 2, ym - 0.4, f"output channel {m}", size=0.38)
        cv.cells(xs, ym, self.out_texts(m, step, self.fo, self.out[m]), name="total",
                 fill=self.fills(step, cur), bold={cur} if step is not None else None)
        cv.box(xs + cur[1], ym + cur[0], 1, 1, HI_EDGE)
        cv.write((x0 + xs + self.o) / 2, y0 + total_h + 0.9,
                 f"output[{m}][{cur[0]}, {cur[1]}] = {self.sum_text(m, *cur)}", size=0.42,
                 color=HI_EDGE, gid="sum")
        return xs + self.o - x0

    def sum_width(self) -> float:
        return self.size + 1.4 + self.k + 1.4 + self.o + 3.2 + self.o

    def sum_height(self) -> float:
        return self.c * (self.size + 1.3) - 1.3 + 1.5


def _channels_op(in_channels: int, out_channels: int, kernel_size: int, size: int,
                 seed: int) -> _Channels:
    return _Channels(*channels_example(in_channels, out_channels, kernel_size, size, seed))


def _tutorial_shape() -> list[int]:
    """The weight shape of the tutorial's ``nn.Conv2d(5, 10, 3)``, from a real layer."""
    return list(torch.nn.Conv2d(5, 10, 3).weight.shape)


def _channels_draw(op: _Channels, step: int | None) -> Any:
    top, gap, margin = 4.0, 2.6, 0.8
    wa, ha = op.sum_width(), op.sum_height()
    tut = _tutorial_shape()
    rule = [f"weight shape = [out_channels, in_channels, k, k] = {op.layer_shape}:",
            f"one {op.k}x{op.k} kernel per input channel ({op.c}), one set of {op.c} per "
            f"output channel ({op.m})",
            f"the tutorial's nn.Conv2d(5, 10, 3): weight {tut},",
            f"{tut[0]} sets of {tut[1]} kernels {tut[2]}x{tut[3]}"]
    if step is None:   # right: every output channel from its own set of kernels, the rule
        row_b = max(op.k, op.o) + 1.6
        wb = max(op.c * op.k + (op.c - 1) * 0.5 + 3.0 + op.o,
                 max(text_width(t, 0.42) for t in rule))
        hb = op.m * row_b + 0.6 + 0.8 * len(rule) + 0.6
    else:              # right: the output channels filling up
        wb, row_b = op.o, op.o + 1.4
        hb = op.m * row_b
    title = op.title()
    line2 = ("output channel m = Σ over input channels c of (input channel c ∗ weight[m, c]) "
             "+ bias[m]")
    if step is not None:
        line2 += f"     (step {step + 1} of {op.m * op.o * op.o})"
    width = max(margin + wa + gap + wb + margin, text_width(title, 0.5, bold=True) + 1,
                text_width(line2, 0.44) + 1)
    height = top + max(ha, hb) + 0.4
    cv = Canvas(width, height, inch=0.34)
    cv.write(width / 2, 0.7, title, size=0.5, weight="bold")
    cv.write(width / 2, 1.6, line2, size=0.44)
    m, cell = (0, None) if step is None else divmod(step, op.o * op.o)
    x0 = margin + (width - 2 * margin - wa - gap - wb) / 2
    op.draw_sum(cv, x0, top, m, cell)
    cv.write(x0 + wa / 2, top - 1.2, f"output channel {m}: one kernel per input channel, "
             "the results summed", size=0.42, weight="bold")
    xb = x0 + wa + gap
    cv.ax.plot([xb - gap / 2] * 2, [top - 1.4, top + max(ha, hb)], color="#cccccc", lw=1)
    if step is None:
        cv.write(xb + wb / 2, top - 1.2, f"{op.m} output channel{'s' * (op.m > 1)}: "
                 f"{op.m} set{'s' * (op.m > 1)} of {op.c} kernel{'s' * (op.c > 1)}",
                 size=0.42, weight="bold")
        xo = xb + wb - op.o
        for mm in range(op.m):
            y = top + 0.6 + mm * row_b
            for c in range(op.c):
                cv.cells(xb + c * (op.k + 0.5), y, _texts(op.weight[mm, c], op.fw),
                         name=f"weight{mm}.{c}", fill=KERNEL_FILL)
            cv.write(xb + (op.c * (op.k + 0.5) - 0.5) / 2, y - 0.4,
                     f"weight[{mm}]: {list(op.weight[mm].shape)}", size=0.38)
            cv.write(xo - 1.5, y + op.k / 2, f"+ bias[{mm}]\n= {op.fb(float(op.bias[mm]))}\n→",
                     size=0.38)
            cv.write(xo + op.o / 2, y - 0.4, f"output channel {mm}", size=0.38)
            cv.cells(xo, y, _texts(op.out[mm], op.fo), name=f"out{mm}", fill=DONE_FILL)
        y = top + 0.6 + op.m * row_b + 0.2
        for n, t in enumerate(rule):
            cv.write(xb, y + 0.8 * n + (0.4 if n >= 2 else 0), t, size=0.42, ha="left",
                     gid=("rule", None, "tutorial", None)[n])
    else:
        for mm in range(op.m):
            y = top + mm * row_b
            upto = -1 if mm > m else (None if mm < m else cell)
            cur = divmod(cell, op.o) if mm == m else None
            cv.write(xb + op.o / 2, y - 0.4, f"output channel {mm}", size=0.38)
            cv.cells(xb, y, op.out_texts(mm, upto, op.fo, op.out[mm]), name=f"out{mm}",
                     fill=op.fills(upto, cur))
            if cur:
                cv.box(xb + cur[1], y + cur[0], 1, 1, HI_EDGE)
    return cv.fig


def channels_figure(in_channels: int = 3, out_channels: int = 2, kernel_size: int = 3,
                    size: int = 5, seed: int = 0, step: int | None = None) -> Any:
    """A convolution over several channels as a matplotlib figure (the numbers from
    :func:`channels_example`): the whole of it (``step=None``) or the animation frame for
    output number ``step`` (output channel by output channel, each in reading order)."""
    op = _channels_op(in_channels, out_channels, kernel_size, size, seed)
    if step is not None and not 0 <= step < op.out.numel():
        raise CnnlabError(f"step {step} is not an output cell (0 to {op.out.numel() - 1})")
    return _channels_draw(op, step)


def explain_channels(in_channels: int = 3, out_channels: int = 2, kernel_size: int = 3,
                     size: int = 5, seed: int = 0, path: str | Path = "explain-channels.png",
                     frame_seconds: float | None = None) -> Path:
    """Draw a convolution over ``in_channels`` input channels into ``out_channels`` output
    channels (small random whole numbers, fixed by ``seed``) to ``path``: a .png with one
    output channel worked out and all of them with their kernels and the weight shape, or a
    .gif with one frame per output number. Returns ``path``."""
    path = check_out(path)
    op = _channels_op(in_channels, out_channels, kernel_size, size, seed)
    return _write(path, lambda: _channels_draw(op, None),
                  [lambda n=n: _channels_draw(op, n) for n in range(op.out.numel())],
                  frame_seconds)
