"""Seeing inside a trained net: a conv layer's kernels, and the feature maps layers produce.

These answer the tutorials' own exercises ("show the activations of LeNet's first and
second layers for different inputs, e.g. a sweater and a coat"). Layers are named as the
model names its modules (``cnnlab summary MODEL`` lists them), or by the registry's aliases
(``conv1`` for d2l LeNet's ``0``). Feature maps are captured with forward hooks that are
always removed, also when the forward pass fails, on an fp32 copy of the model in eval mode
(bf16 tensors cannot become numpy arrays).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.models.registry import find_layer, layer_names
from cnnlab.run import LoadedRun, as_run
from cnnlab.viz.plots import save_png

MAX_FILTER_TILES = 64 * 16  # (output, input) kernel pairs drawn at most
MAX_MAPS = 64  # feature maps drawn per layer and input


def conv_layer_names(run: LoadedRun) -> list[str]:
    """The convolution layers of the run's model, by the names a user can give."""
    names = layer_names(run.config.model, run.model)
    alias: dict[str, str] = {}
    for a, m in names.items():  # a conv's short name (conv1), where the model gives one
        if a != m:
            alias.setdefault(m, a)
    return [alias.get(n, n) for n, m in run.model.named_modules() if isinstance(m, nn.Conv2d)
            and (n in alias or n in names)]


def _conv(run: LoadedRun, layer: str | None) -> tuple[str, nn.Conv2d]:
    convs = conv_layer_names(run)
    if not convs:
        raise CnnlabError(f"model '{run.config.model}' has no convolution layer")
    if layer is None:  # the first trained conv: not a fixed one (fastnet-white's whitening)
        trained = [n for n in convs
                   if find_layer(run.config.model, run.model, n)[1].weight.requires_grad]
        layer = (trained or convs)[0]
    name = layer
    _, module = find_layer(run.config.model, run.model, name)
    if not isinstance(module, nn.Conv2d):
        raise CnnlabError(f"layer '{name}' is not a convolution ({type(module).__name__}); "
                          f"choose one of: {', '.join(convs)}")
    return name, module


def _tile_grid(tiles: torch.Tensor, cols: int, gap: int = 1, fill: float = float("nan")
               ) -> torch.Tensor:
    """(N, H, W[, 3]) tiles -> one (rows*(H+gap)-gap, cols*(W+gap)-gap[, 3]) mosaic."""
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / cols)
    out = torch.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *tiles.shape[3:]), fill)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tiles[i]
    return out


def plot_filters(run: LoadedRun, layer: str | None = None, path: str | Path | None = None
                 ) -> Path:
    """Draw the kernels of a conv layer (the first one by default) as a grid: RGB kernels of
    a first layer in colour, one tile per output channel; other kernels one row per output
    channel and one column per input channel, on one colour scale centred at 0 (red
    positive, blue negative), so the signs and relative strengths read across the layer."""
    run = as_run(run)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run.require_images("`cnnlab visualize filters`")
    name, conv = _conv(run, layer)
    path = path or run.run_dir.path / f"filters-{name}.png"
    w = conv.weight.detach().float().cpu()
    out_ch, in_ch, kh, kw = w.shape
    fig_title = f"{run.config.model} {name}: {out_ch} kernels of {in_ch}x{kh}x{kw}"
    if in_ch == 3:
        lo = w.amin(dim=(1, 2, 3), keepdim=True)
        hi = w.amax(dim=(1, 2, 3), keepdim=True)
        tiles = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1)  # N, kh, kw, 3
        cols = math.ceil(math.sqrt(out_ch))
        mosaic = _tile_grid(tiles, cols, fill=1.0)
        fig, ax = plt.subplots(figsize=(min(12, max(4.5, 0.5 + 0.6 * cols)),
                                        min(12, max(3.5, 0.9 + 0.6 * cols))),
                               layout="constrained")
        ax.imshow(mosaic.numpy(), interpolation="nearest")
        fig_title += "\n(each kernel scaled to its own range)"
    else:
        shown_in = min(in_ch, max(1, MAX_FILTER_TILES // out_ch))
        if shown_in < in_ch:
            fig_title += f" (first {shown_in} input channels)"
        ws = w[:, :shown_in]
        if in_ch == 1:  # one tile per output channel, in a near-square grid
            cols = math.ceil(math.sqrt(out_ch))
            mosaic = _tile_grid(ws[:, 0], cols)
        else:
            cols = shown_in
            mosaic = _tile_grid(ws.reshape(-1, kh, kw), cols)
        rows = mosaic.shape[0] / (kh + 1)
        scale = float(w.abs().max()) or 1.0
        fig, ax = plt.subplots(figsize=(min(14, max(4.5, 1.5 + 0.32 * cols * (kw + 1) / 4)),
                                        min(14, max(3.0, 1.2 + 0.32 * rows * (kh + 1) / 4))),
                               layout="constrained")
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#9a9a9a")  # gaps != weight 0
        im = ax.imshow(mosaic.numpy(), cmap=cmap, vmin=-scale, vmax=scale,
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="weight")
        if in_ch > 1:
            ax.set_xlabel("input channel")
            ax.set_ylabel("output channel")
            ax.set_xticks([(kw + 1) * i + (kw - 1) / 2 for i in range(cols)],
                          [str(i) for i in range(cols)], fontsize=6)
            ax.set_yticks([(kh + 1) * i + (kh - 1) / 2 for i in range(out_ch)],
                          [str(i) for i in range(out_ch)], fontsize=6)
    if in_ch == 3 or in_ch == 1:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(fig_title, fontsize=9)
    return save_png(fig, path, dpi=110, tight=True)


@contextmanager
def capture(model: nn.Module, modules: dict[str, nn.Module]
            ) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record each named module's outputs while the block runs (a list: a module the forward
    pass uses twice, as the tutorial's Net does with ``pooling`` and ``relu``, gives two);
    the hooks are removed on the way out, whether the block succeeds or raises."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = []
    try:
        for name, module in modules.items():
            def hook(_m, _inp, out, name=name):
                outputs[name].append(out.detach())
            handles.append(module.register_forward_hook(hook))
        yield outputs
    finally:
        for h in handles:
            h.remove()


def activations(run: LoadedRun, layers: Sequence[str], images: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """The feature maps each layer produces for uint8 ``images`` (N, C, H, W) of any size,
    preprocessed as in training; fp32, on the CPU, (N, C, H, W) per layer."""
    run, layers = as_run(run), [layers] if isinstance(layers, str) else layers
    run.require_images("cnnlab.activations (feature maps of images)")
    model = copy.deepcopy(run.model).float().eval()
    modules = {layer: find_layer(run.config.model, model, layer)[1] for layer in layers}
    x = run.preprocess(run.as_batch(images).to(run.device)).float()
    with torch.no_grad(), capture(model, modules) as outputs:
        model(x)
    convs = ", ".join(conv_layer_names(run))
    for layer, outs in outputs.items():
        if len(outs) != 1:
            raise CnnlabError(f"layer '{layer}' runs {len(outs)} times in one forward pass of "
                              f"{run.config.model} (one module used at several places), so its "
                              f"feature maps are ambiguous; choose a layer used once, e.g. "
                              f"{convs}")
        out = outs[0]
        if out.dim() != 4:
            raise CnnlabError(f"layer '{layer}' gives {tuple(out.shape[1:])} per image, not "
                              f"feature maps; choose a convolution, pooling or activation "
                              "layer before the flatten "
                              + (f"(conv layers: {convs})" if convs else
                                 f"({run.config.model} has none: try `cnnlab visualize "
                                 "saliency`)"))
    return {layer: outputs[layer][0].float().cpu().contiguous() for layer in layers}


def plot_activations(run: LoadedRun, layers: Sequence[str], images: torch.Tensor,
                     labels: Sequence[str], path: str | Path | None = None) -> Path:
    """One row per input: the image as the model sees it, then each layer's feature maps as
    a grid. Each layer has one colour scale for all inputs, so two classes (a pullover and
    a coat) compare map by map."""
    run, layers = as_run(run), [layers] if isinstance(layers, str) else layers
    images = run.as_batch(images)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = activations(run, layers, images)
    path = path or run.run_dir.path / "activations.png"
    seen = run.preprocess.adapt(images.cpu())  # the size and channels the model gets
    n = len(images)
    mosaics = {}
    for layer in layers:
        m = maps[layer][:, :MAX_MAPS]
        cols = math.ceil(math.sqrt(m.shape[1]))
        mosaics[layer] = [_tile_grid(m[row], cols) for row in range(n)]
    # each column as wide as its picture is at the common row height: no empty bands
    widths = [seen.shape[3] / seen.shape[2]] + [mosaics[lay][0].shape[1] / mosaics[lay][0].shape[0]
                                                for lay in layers]
    row_height = 2.0
    # compressed: the fixed-aspect panels packed together, so the colour bars below can span
    # their column exactly (constrained left bands between columns and a bar a few rows tall)
    fig, axes = plt.subplots(n, 1 + len(layers), squeeze=False, layout="compressed",
                             figsize=(min(20, 0.4 + row_height * sum(widths) + 0.3 * len(layers)),
                                      1.3 + row_height * n),
                             gridspec_kw={"width_ratios": widths})
    for col, layer in enumerate(layers, start=1):
        m = maps[layer][:, :MAX_MAPS]
        lo, hi = float(m.min()), float(m.max())
        if hi <= lo:  # a flat layer: draw it, but not as NaN or a blank guess
            hi = lo + 1.0
        for row in range(n):
            ax = axes[row][col]
            im = ax.imshow(mosaics[layer][row].numpy(), cmap="viridis", vmin=lo, vmax=hi,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                total = maps[layer].shape[1]
                shown = f"{m.shape[1]} of {total}" if total > m.shape[1] else f"{total}"
                ax.set_title(f"{layer}: {shown} maps of {m.shape[2]}x{m.shape[3]}", fontsize=9)
        # one bar per layer, under its column: as wide as the maps, however many rows
        bar = fig.colorbar(im, ax=axes[n - 1][col], location="bottom", aspect=25, pad=0.02)
        bar.ax.tick_params(labelsize=7)
        # what the values are: a conv's raw output (any sign), or after a Sigmoid/ReLU
        kind = type(find_layer(run.config.model, run.model, layer)[1]).__name__
        bar.set_label(f"{layer} output ({kind})" + (", one scale for all rows" if n > 1 else ""),
                      fontsize=8)
    for row in range(n):
        ax = axes[row][0]
        img = seen[row].float() / 255
        if img.shape[0] == 3:
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(labels[row], fontsize=9)
    axes[0][0].set_title("input", fontsize=9)
    fig.suptitle(f"{run.config.model} on {run.config.dataset_title()}: feature maps", fontsize=10)
    return save_png(fig, path, dpi=110, tight=True)


@dataclass
class Examples:
    """Inputs chosen for a picture: uint8 images in the model's channels and size, a label
    for each ("#12 Coat" or a file name), and the true class index where it is known."""

    images: torch.Tensor
    labels: list[str]
    true: list[int | None]


def pick_examples(run: LoadedRun, indices: Sequence[int] = (), class_names: Sequence[str] = (),
                  split: str = "test", data_dir: str | None = None,
                  image_files: Sequence[str | Path] = ()) -> Examples:
    """Images chosen by index in the run's data set, by class (the first example of each
    named class) and/or as image files, in that order."""
    run = as_run(run)
    from cnnlab.data.images import load_images

    run.require_images("this picture")
    if not indices and not class_names and not image_files:
        raise CnnlabError("choose inputs with --index I, --class NAME or --image FILE "
                          "(each repeatable)")
    parts: list[Examples] = []
    if indices or class_names:
        parts.append(_from_dataset(run, indices, class_names, split, data_dir))
    if image_files:
        images, labels = load_images(image_files, run.preprocess)
        parts.append(Examples(images, labels, [None] * len(labels)))
    return Examples(torch.cat([p.images for p in parts]), sum((p.labels for p in parts), []),
                    sum((p.true for p in parts), []))


def _from_dataset(run: LoadedRun, indices: Sequence[int], class_names: Sequence[str],
                  split: str, data_dir: str | None) -> Examples:
    from cnnlab.data import dataset_title, load_split

    root = data_dir if data_dir is not None else run.config.data_dir
    data = load_split(run.config.dataset, split,  # where training found it, as eval does
                      data_dir=root, **run.config.folder_options())
    chosen = checked_indices(indices, len(data), split, run.config.dataset, "images")
    for name in class_names:
        k = class_index(data.classes, name, f" in {dataset_title(run.config.dataset, root)}")
        chosen.append(int((data.labels == k).nonzero()[0, 0]))
    true = [int(data.labels[i]) for i in chosen]
    numeric = all(c.isdigit() for c in data.classes)  # "#0 7" would read as two numbers
    labels = [f"#{i} {'true ' if numeric else ''}{data.classes[t]}"
              for i, t in zip(chosen, true, strict=True)]
    return Examples(run.preprocess.adapt(data.images[chosen]), labels, true)


def checked_indices(indices: Sequence[int], n: int, split: str, dataset: str, noun: str
                    ) -> list[int]:
    """``indices`` as a list, or one line naming the first out of range and the valid range."""
    for i in indices:
        if not 0 <= i < n:
            raise CnnlabError(f"--index {i} is out of range: the {split} split of {dataset} "
                              f"has {n} {noun} (0..{n - 1})")
    return list(indices)


def class_index(classes: Sequence[str], name: str, where: str = "") -> int:
    """A class given by name (any case) or by number -> its index; a clear error otherwise."""
    lookup = {c.lower(): k for k, c in enumerate(classes)}
    k = lookup.get(name.lower())
    if k is None and name.isdigit() and int(name) < len(classes):
        k = int(name)
    if k is None:
        raise CnnlabError(f"no class '{name}'{where}; {did_you_mean(name, list(classes))}"
                          f"choose one of: {', '.join(classes)} (or a number 0..{len(classes) - 1})")
    return k
