"""Grids of numbers on a matplotlib canvas measured in cells, and the two files `cnnlab
explain` writes: a PNG picture or a GIF animation.

A :class:`Canvas` is one figure whose axes span it exactly, with one data unit per grid cell
and y pointing down (row 0 on top), so panels of different sizes line up cell for cell.
Every number drawn in a grid carries a ``gid`` (``"output:0,1"``), so a test can read back
what a picture shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError

SUFFIXES = (".png", ".gif")
PNG_DPI = 110
GIF_DPI = 80
FRAME_MS = 700          # one step of an animation
LAST_FRAME_MS = 2500    # the last step, with the whole output, stays a while

# one colour per role, the same in every picture
EDGE = "#9e9e9e"
PAD_FILL, PAD_TEXT = "#e4e4e4", "#8c8c8c"
UNUSED_TEXT = "#c4c4c4"   # input cells no window reaches
KERNEL_FILL = "#fde7c4"
DONE_FILL = "#e2f0d9"     # output cells already computed
HI_EDGE, HI_FILL = "#1f6fb4", "#cfe2f6"    # the current window and its output cell
NEXT_EDGE = "#e07b00"                      # the next window (how far the stride moves)
PICK_EDGE = "#d62728"                      # the number max pooling keeps
WINDOW_FILLS = ("#cfe2f6", "#fbd5b5", "#d5ecd0", "#e6d6f0", "#fff2b3", "#f6d0de", "#d3efef",
                "#e8e0cf")


def check_out(path: str | Path) -> Path:
    """``path`` as a Path if it names a .png or .gif file; a one-line error otherwise."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise CnnlabError(f"--out {path}: explain writes a picture (.png) or an animation "
                          "(.gif); give a file name ending in .png or .gif")
    if path.is_dir():
        raise CnnlabError(f"--out {path} is a directory; give a file name ending in .png or .gif")
    return path


def is_gif(path: Path) -> bool:
    return path.suffix.lower() == ".gif"


class Canvas:
    """A white figure ``width`` x ``height`` cells, ``inch`` inches per cell."""

    def __init__(self, width: float, height: float, inch: float = 0.42) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.fig = plt.figure(figsize=(width * inch, height * inch), facecolor="white")
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)
        self.ax.set_axis_off()
        self.pt = 72 * inch    # points per cell
        self.width, self.inch = width, inch

    def font(self, texts: Sequence[str], cell_w: float = 1.0, size: float = 0.38) -> float:
        """A font size (points) at which the longest of ``texts`` fits a cell ``cell_w`` wide."""
        longest = max((len(t) for t in texts if t), default=1)
        return min(size * self.pt, 0.88 * cell_w * self.pt / (0.6 * max(longest, 1)))

    def cells(self, x: float, y: float, texts: Sequence[Sequence[str | None]], *,
              name: str | None = None, fill: Any = "white", color: Any = "black",
              bold: set[tuple[int, int]] | None = None, cell_w: float = 1.0,
              size: float | None = None, text_y: float = 0.53) -> float:
        """Draw a grid of cells, top left at (x, y); ``texts[i][j]`` None leaves a cell empty.
        ``fill`` and ``color`` are one colour or one per cell; ``text_y`` is where in a cell
        (from its top, in cells) the number sits. Returns the font size used."""
        from matplotlib.patches import Rectangle

        flat = [t for row in texts for t in row if t]
        fs = size or self.font(flat, cell_w)
        for i, row in enumerate(texts):
            for j, t in enumerate(row):
                f = fill if isinstance(fill, str) else fill[i][j]
                self.ax.add_patch(Rectangle((x + j * cell_w, y + i), cell_w, 1, facecolor=f,
                                            edgecolor=EDGE, lw=0.8, zorder=1))
                if t:
                    c = color if isinstance(color, str) else color[i][j]
                    self.ax.text(x + (j + 0.5) * cell_w, y + i + text_y, t, ha="center",
                                 va="center", fontsize=fs, color=c, zorder=3,
                                 weight="bold" if bold and (i, j) in bold else "normal",
                                 gid=f"{name}:{i},{j}" if name else None)
        return fs

    def box(self, x: float, y: float, w: float, h: float, color: str, *, lw: float = 2.6,
            ls: str = "-", fill: str | None = None, inset: float = 0.0) -> None:
        """An outline (and optionally a fill under the numbers) around a block of cells."""
        from matplotlib.patches import Rectangle

        if fill:
            self.ax.add_patch(Rectangle((x, y), w, h, facecolor=fill, edgecolor="none",
                                        zorder=1.5, alpha=1.0))
        self.ax.add_patch(Rectangle((x + inset, y + inset), w - 2 * inset, h - 2 * inset,
                                    facecolor="none", edgecolor=color, lw=lw, ls=ls, zorder=4))

    def write(self, x: float, y: float, text: str, *, size: float = 0.38, ha: str = "center",
              va: str = "center", color: str = "black", weight: str = "normal",
              gid: str | None = None, room: float | None = None) -> None:
        """Text at (x, y) in cells; ``size`` is a fraction of a cell's height. The text is
        made smaller where it would be wider than ``room`` cells (default: what the canvas
        leaves it), so a long formula never runs off the picture or into its neighbour."""
        t = self.ax.text(x, y, text, ha=ha, va=va, fontsize=size * self.pt, color=color,
                         weight=weight, gid=gid, zorder=5)
        if room is None:
            left, right = x, self.width - x
            room = {"center": 2 * min(left, right), "left": right, "right": left}[ha] - 0.4
        have = t.get_window_extent(self.fig.canvas.get_renderer()).width  # pixels
        allowed = room * self.inch * self.fig.dpi
        if have > allowed > 0:
            t.set_fontsize(t.get_fontsize() * allowed / have)


def text_width(text: str, size: float = 0.38, bold: bool = False) -> float:
    """About how many cells wide ``text`` is at ``size`` (a fraction of a cell's height)."""
    return len(text) * size * (0.64 if bold else 0.58)


def drawn_texts(fig: Any) -> dict[str, str]:
    """Every named text of a figure, ``{gid: text}``: what a picture shows, for tests."""
    from matplotlib.text import Text

    return {t.get_gid(): t.get_text() for t in fig.findobj(Text) if t.get_gid()}


def write_gif(frames: Sequence[Callable[[], Any]], path: Path, frame_ms: int = FRAME_MS,
              last_ms: int = LAST_FRAME_MS) -> Path:
    """Render each figure to an image and write them as a looping GIF, atomically: one
    palette for all frames (no flicker), the last frame held ``last_ms``."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from cnnlab.fileio import atomic_path

    images = []
    for make in frames:
        fig = make()
        buf = BytesIO()
        try:
            fig.savefig(buf, format="png", dpi=GIF_DPI, facecolor="white")
        finally:
            plt.close(fig)
        buf.seek(0)
        images.append(Image.open(buf).convert("RGB"))
    # the last frame holds every colour (the whole output is filled in by then); the enums
    # are Image.Quantize / Image.Dither from Pillow 9.1, plain constants before
    median_cut = getattr(Image, "Quantize", Image).MEDIANCUT
    no_dither = getattr(Image, "Dither", Image).NONE
    palette = images[-1].quantize(colors=128, method=median_cut)
    quantized = [im.quantize(palette=palette, dither=no_dither) for im in images]
    durations = [frame_ms] * (len(images) - 1) + [last_ms]
    with atomic_path(path) as tmp:
        quantized[0].save(tmp, format="GIF", save_all=True, append_images=quantized[1:],
                          duration=durations, loop=0, optimize=True)
    return path
