"""Pictures of a whole network: what one unit of each layer sees (its receptive field, on a
real input), and how the tensor's shape changes from layer to layer (the tutorials' "sizing
flow", e.g. SimpleCNN's ``18 x 16 x 16 -> 4608`` at the flatten)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inspect.receptive import LayerField, reaches_padding, receptive_fields
from cnnlab.viz.plots import save_png

COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#9a6324"]


def _named_fields(fields: Sequence[LayerField], aliases: dict[str, str]) -> list[tuple[str, LayerField]]:
    """Readable names, with "(2nd use)" for a module the forward pass calls again."""
    seen: dict[str, int] = {}
    out = []
    for lf in fields:
        name = aliases.get(lf.name, lf.name)
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name} ({seen[name]}nd use)"
                    if seen[name] == 2 else f"{name} (use {seen[name]})", lf))
    return out


def plot_receptive_field(model: nn.Module, model_name: str, image: torch.Tensor,
                         path: str | Path, layers: Sequence[str] | None = None,
                         aliases: dict[str, str] | None = None, label: str = "") -> Path:
    """Draw ``image`` (uint8 C, H, W, the model's input size) with, for each chosen layer
    (default: every convolution and pooling), the square its centre unit sees. The squares
    are measured on the model (:mod:`cnnlab.inspect.receptive`) and may reach past the image
    into the zero padding, drawn grey around it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    c, h, w = image.shape
    fields = receptive_fields(model, (c, h, w))
    named = _named_fields(fields, aliases or {})
    if layers:
        known = {n: lf for n, lf in named if lf.field.size is not None}  # with feature maps
        raw = {alias: module for module, alias in (aliases or {}).items()}
        for layer in layers:  # a block (res3a, inception3a): its output is its last call's
            inside = [lf for lf in fields if lf.name.startswith(raw.get(layer, layer) + ".")]
            if layer not in known and inside and inside[-1].field.size is not None:
                known[layer] = replace(inside[-1], kind=f"block (ends in {inside[-1].kind})")
        missing = [layer for layer in layers if layer not in known]
        if missing:
            flat = any(n == missing[0] for n, _ in named)  # a layer after the flatten
            raise CnnlabError(f"model '{model_name}' has no layer with feature maps called "
                              f"'{missing[0]}'{' (it comes after the flatten)' * flat}; "
                              f"choose from: {', '.join(known)}")
        chosen = [(layer, known[layer]) for layer in layers]
    else:
        chosen = [(n, lf) for n, lf in named if lf.field.size
                  and ("conv" in lf.kind.lower() or "pool" in lf.kind.lower())]
        if len(chosen) > len(COLOURS):  # a deep net: an even spread, ending at the last
            step = -(-len(chosen) // len(COLOURS))
            chosen = chosen[::-1][::step][::-1]
    if not chosen:
        raise CnnlabError(f"model '{model_name}' has no convolution or pooling layer")
    regions = [lf.field.region(lf.centre, (h, w)) for _, lf in chosen]
    lo = min(0, *(r[0][0] for r in regions), *(r[1][0] for r in regions)) - 1
    hi_r = max(h, *(r[0][1] for r in regions)) + 1
    hi_c = max(w, *(r[1][1] for r in regions)) + 1

    padded = reaches_padding(regions, (h, w))

    fig, (ax, ax_txt) = plt.subplots(1, 2, figsize=(9.6, 5.2), layout="constrained",
                                     gridspec_kw={"width_ratios": [1.25, 1]})
    ax.set_facecolor("#d9d9d9" if padded else "white")  # beyond the image: the zero padding
    img = image.float() / 255
    shown = img.permute(1, 2, 0).numpy() if c == 3 else img[0].numpy()
    ax.imshow(shown, cmap=None if c == 3 else "gray", vmin=0, vmax=1,
              extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    ax.set_xlim(lo - 0.5, hi_c - 0.5)
    ax.set_ylim(hi_r - 0.5, lo - 0.5)
    lines = []
    for k, ((name, lf), ((r0, r1), (c0, c1))) in enumerate(zip(chosen, regions, strict=True)):
        colour = COLOURS[k % len(COLOURS)]
        inset = 0.12 * k  # nested squares that share an edge stay visible
        ax.add_patch(Rectangle((c0 - 0.5 + inset, r0 - 0.5 + inset), c1 - c0 - 2 * inset,
                               r1 - r0 - 2 * inset, fill=False, lw=2, ec=colour))
        f = lf.field
        lines.append((colour, f"{name}: {lf.kind}, output {'x'.join(map(str, lf.output_shape))}\n"
                              f"   unit {lf.centre} sees rows {r0}..{r1 - 1}, cols {c0}..{c1 - 1}"
                              f"\n   field {f.size[0]}x{f.size[1]}, jump {f.jump[0]}"))
    ax.set_title(label or f"{model_name}: what the centre unit of each layer sees", fontsize=10)
    ax.set_xlabel("input column" + (" (grey: zero padding beyond the image)" if padded else ""),
                  fontsize=8)
    ax.set_ylabel("input row", fontsize=8)
    ax_txt.axis("off")
    step = min(0.12, 0.95 / max(len(lines), 1))
    for k, (colour, text) in enumerate(lines):
        ax_txt.text(0.0, 0.98 - k * step, text, color=colour, va="top", fontsize=8.5,
                    family="monospace", transform=ax_txt.transAxes)
    ax_txt.set_title("receptive field = input pixels one unit depends on;\n"
                     "jump = input pixels between neighbouring units", fontsize=9)
    return save_png(fig, path, dpi=110)


# ------------------------------------------------------------------------------ shapes
@dataclass(frozen=True)
class Stage:
    """One box of the shapes diagram: a top-level layer or block, in call order."""

    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int


def stages(model: nn.Module, input_shape: tuple[int, int, int]) -> list[Stage]:
    """The model's blocks in call order: the children of the model, recursing into
    ``nn.Sequential`` containers (so d2l's flat LeNet gives its layers, and the Inception
    net gives ``incep1`` as one block). A reshape the forward does without a module (a
    ``view``) appears as a "flatten" stage."""
    targets: dict[nn.Module, str] = {}

    def walk(mod: nn.Module, prefix: str) -> None:
        for name, child in mod.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                walk(child, full + ".")
            else:
                targets[child] = full

    walk(model, "")
    found: list[Stage] = []

    def hook(mod: nn.Module, inp: tuple, out: object) -> None:
        if not isinstance(out, torch.Tensor) or not inp or not isinstance(inp[0], torch.Tensor):
            return
        params = sum(p.numel() for p in mod.parameters())
        found.append(Stage(targets[mod], type(mod).__name__, tuple(inp[0].shape[1:]),
                           tuple(out.shape[1:]), params))

    handles = [m.register_forward_hook(hook) for m in targets]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        raise CnnlabError(f"input {'x'.join(map(str, input_shape))} does not fit this model "
                          f"({str(e).splitlines()[0]})") from None
    finally:
        for h in handles:
            h.remove()
    out: list[Stage] = []
    shape = tuple(input_shape)
    for s in found:
        if s.in_shape != shape and len(shape) == 3 and len(s.in_shape) == 1:
            out.append(Stage("(view)", "Flatten", shape, s.in_shape, 0))
        out.append(s)
        shape = s.out_shape
    return out


_KIND_COLOURS = {"conv": "#cfe2ff", "pool": "#d1e7dd", "linear": "#ffe5b4", "flatten": "#e2d9f3",
                 "act": "#eeeeee", "block": "#fde2e4"}


def _family(kind: str) -> str:
    k = kind.lower()
    if "conv" in k:
        return "conv"
    if "pool" in k:
        return "pool"
    if "linear" in k:
        return "linear"
    if "flatten" in k:
        return "flatten"
    if k in ("relu", "sigmoid", "gelu", "tanh", "dropout", "batchnorm2d", "identity"):
        return "act"
    return "block"


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))


def plot_shapes(model: nn.Module, model_name: str, input_shape: tuple[int, int, int],
                path: str | Path, aliases: dict[str, str] | None = None) -> Path:
    """The network as a column of boxes, one per layer or block: its output C x H x W and
    parameters, with a square beside it sized by the map's side, so the shrinking H x W and
    the growing channel count read at a glance; the flatten says ``C x H x W -> N``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Rectangle

    aliases = aliases or {}
    rows = stages(model, input_shape)
    n = len(rows) + 1
    row_h = 0.62
    fig_h = 0.9 + row_h * n
    fig, ax = plt.subplots(figsize=(8.2, fig_h))
    ax.set_xlim(0, 10)
    ax.set_ylim(n * 1.0 + 0.2, -0.8)
    ax.axis("off")
    side_max = max(input_shape[1:])
    # (row, shape) of each map's square or vector's bar, drawn once the layout fixes how long
    # a unit of x is against a unit of y
    marks: list[tuple[float, tuple[int, ...]]] = [(0, input_shape)]

    def draw_marks() -> None:
        """Squares that are square on the page: x and y data units differ in length."""
        box = ax.get_position()
        fig_w, fig_h_in = fig.get_size_inches()
        x_per_y = (10 / (box.width * fig_w)) / ((n * 1.0 + 1.0) / (box.height * fig_h_in))
        for y, shape in marks:
            if len(shape) == 3:
                s = 0.85 * shape[1] / side_max
                ax.add_patch(Rectangle((1.0 - s * x_per_y / 2, y - s / 2), s * x_per_y, s,
                                       fc="#9ec5fe", ec="#3d6cb9"))
            else:
                ax.add_patch(Rectangle((1.0 - 0.05 * x_per_y, y - 0.42), 0.1 * x_per_y, 0.84,
                                       fc="#ffc078", ec="#b36b00"))

    total = 0
    ax.text(2.0, 0, f"input   {_shape_text(input_shape)}", va="center", fontsize=9,
            family="monospace", weight="bold")
    for i, s in enumerate(rows, start=1):
        total += s.params
        fam = _family(s.kind)
        marks.append((i, s.out_shape))
        ax.add_patch(FancyBboxPatch((1.85, i - 0.36), 7.9, 0.72, boxstyle="round,pad=0.02",
                                    fc=_KIND_COLOURS[fam], ec="#8a8a8a", lw=0.8))
        name = aliases.get(s.name, s.name)
        if fam == "flatten":
            what = f"{_shape_text(s.in_shape)} -> {_shape_text(s.out_shape)}"
        else:
            what = f"-> {_shape_text(s.out_shape)}"
        ax.text(2.0, i, f"{name:<10} {s.kind:<13} {what}", va="center", fontsize=8.5,
                family="monospace")
        if s.params:
            ax.text(9.6, i, f"{s.params:,} params", va="center", ha="right", fontsize=8,
                    color="#444444")
    ax.set_title(f"{model_name}: the shape after each layer ({total:,} parameters)\n"
                 "squares: the map's side (H = W) to scale; bars: a flat vector", fontsize=10)
    fig.tight_layout()
    draw_marks()
    return save_png(fig, path, dpi=110)
