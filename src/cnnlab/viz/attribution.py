"""Where the network looks: Grad-CAM and saliency (input-gradient) maps.

The known traps, each handled here:

* Capture with a forward hook plus ``tensor.register_hook`` on the layer's output, not a full
  backward hook on the module (those break on the in-place ReLUs many CNNs use). The
  activation is cloned at capture time, so a later in-place op cannot change it.
* Compute on an fp32 copy of the model in eval mode (a bf16 run's tensors cannot become
  numpy arrays, and dropout/batch statistics must not move).
* Differentiate the target class's logit, not its softmax probability (softmax mixes in
  every other class and saturates).
* A flat map (max == min, e.g. a dead layer) would divide by zero in per-image min-max
  scaling: it is drawn as zeros and reported, never as NaN. ``scale="raw"`` keeps the maps'
  own values (comparable across images) where ``"image"`` stretches each to 0..1.
* Every hook is removed afterwards, also when the forward or backward pass fails.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.errors import CnnlabError
from cnnlab.models.registry import find_layer, layer_names
from cnnlab.run import LoadedRun, as_run
from cnnlab.viz.inside import Examples, class_index, conv_layer_names
from cnnlab.viz.plots import percent, save_png

SCALES = ("image", "raw")


@dataclass
class Attribution:
    """Maps for a batch: ``maps`` (N, H, W) at the input size, scaled as asked; the class
    each map explains (``targets``), what the model predicted with which probability, and
    which maps were flat (drawn as zeros)."""

    method: str
    layer: str | None
    maps: torch.Tensor
    targets: list[int]
    predicted: list[int]
    probability: list[float]  # of the predicted class
    flat: list[bool]
    scale: str


@contextmanager
def _grad_capture(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """The module's output (cloned) and the gradient of the score w.r.t. it, via a forward
    hook that registers a tensor hook; both hooks are gone when the block exits. A module
    the forward pass calls more than once (the tutorial's Net reuses one ``relu``) is read
    at its last call, the one nearest the classifier; ``store["calls"]`` counts the calls."""
    store: dict[str, torch.Tensor] = {}
    calls: list[int] = [0]
    tensor_hooks = []

    def forward_hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CnnlabError(f"Grad-CAM needs feature maps (C, H, W) per image, this layer "
                              f"gives {shape}")
        calls[0] += 1
        call = calls[0]
        store["activation"] = out.detach().clone()
        store.pop("gradient", None)

        def grad_hook(g: torch.Tensor) -> None:
            if call == calls[0]:  # the last call's gradient, not an earlier call's
                store["gradient"] = g.detach().clone()

        tensor_hooks.append(out.register_hook(grad_hook))

    handle = module.register_forward_hook(forward_hook)
    try:
        yield store
    finally:
        handle.remove()
        for h in tensor_hooks:
            h.remove()
        store["calls"] = torch.tensor(calls[0])


def _scaled(raw: torch.Tensor, scale: str) -> tuple[torch.Tensor, list[bool]]:
    """Per-image min-max to 0..1 (``image``) or the values as they are (``raw``); flat maps
    (max == min) become zeros either way."""
    if scale not in SCALES:
        raise CnnlabError(f"unknown scale '{scale}'; choose one of: {', '.join(SCALES)}")
    flat_raw = raw.flatten(1)
    lo, hi = flat_raw.amin(1), flat_raw.amax(1)
    flat = (hi - lo) <= 1e-12 * hi.abs().clamp_min(1.0)
    out = raw.clone()
    out[flat] = 0.0
    if scale == "image":
        span = (hi - lo).where(~flat, torch.ones_like(hi))
        out = torch.where(flat[:, None, None], out, (raw - lo[:, None, None]) / span[:, None, None])
    return out, flat.tolist()


def _targets(logits: torch.Tensor, target: int | Sequence[int] | None) -> torch.Tensor:
    if target is None:
        return logits.argmax(1)
    if isinstance(target, int):
        return torch.full((len(logits),), target, dtype=torch.long, device=logits.device)
    return torch.as_tensor(list(target), dtype=torch.long, device=logits.device)


def grad_cam_maps(model: nn.Module, x: torch.Tensor, layer: nn.Module,
                  target: int | Sequence[int] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Grad-CAM of ``layer`` for a float input batch: ReLU(sum_k w_k A_k) with w_k the
    spatial mean of d(logit_target)/dA_k, upsampled bilinearly to the input's size.
    Returns (raw maps (N, H, W), logits, targets, how often the layer ran). ``model`` must
    be in eval mode."""
    with _grad_capture(layer) as store, torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)  # so the graph reaches every layer
        logits = model(x)
        targets = _targets(logits, target)
        logits.gather(1, targets[:, None]).sum().backward()
    if "gradient" not in store:
        raise CnnlabError("the chosen layer is not used by the model's output; choose another")
    a, g = store["activation"].float(), store["gradient"].float()
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    return cam[:, 0], logits.detach(), targets, int(store["calls"])


def saliency_maps(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Simonyan et al.'s saliency: |d(logit_target)/d(input)|, the max over channels.
    Returns (raw maps (N, H, W), logits, targets)."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)
        targets = _targets(logits, target)
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
    return grad.abs().amax(1), logits.detach(), targets


def default_cam_layer(run: LoadedRun, model: nn.Module | None = None,
                      x: torch.Tensor | None = None) -> str:
    """The usual Grad-CAM choice: the last feature maps before the classifier, i.e. the
    last module (in the order the forward pass calls them) whose output is (N, C, H, W),
    such as the ReLU or pooling after the last conv. Its activations are what the head
    reads, and are non-negative in ReLU nets, as Grad-CAM's weighting assumes."""
    model = model if model is not None else copy.deepcopy(run.model).float().eval().cpu()
    if x is None:
        x = torch.zeros(1, *run.preprocess.input_shape)
    order: list[str] = []
    names = {m: n for n, m in model.named_modules() if n and not list(m.children())}
    handles = [m.register_forward_hook(
        lambda mod, _i, out: order.append(names[mod])
        if isinstance(out, torch.Tensor) and out.dim() == 4 else None) for m in names]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise CnnlabError(f"model '{run.config.model}' has no layer with feature maps for "
                          "Grad-CAM; use saliency")
    aliases = {m: a for a, m in layer_names(run.config.model, model).items() if a != m}
    return aliases.get(order[-1], order[-1])


def attribute(run: LoadedRun, images: torch.Tensor, method: str = "gradcam",
              layer: str | None = None, target: str | int | Sequence[int] | None = None,
              scale: str = "image") -> Attribution:
    """Grad-CAM (``method="gradcam"``, at ``layer``, the last conv by default) or saliency
    maps for uint8 ``images``, explaining class ``target`` (a name or index; default: each
    image's predicted class), on an fp32 eval-mode copy of the run's model on the CPU."""
    run = as_run(run)
    run.require_images("cnnlab.attribute (maps over images)")
    if method not in ("gradcam", "saliency"):
        raise CnnlabError(f"unknown method '{method}'; choose gradcam or saliency")
    if isinstance(target, str):
        target = class_index(run.classes, target, f" in {run.config.dataset_title()}")
    model = copy.deepcopy(run.model).float().eval().cpu()
    for p in model.parameters():
        p.requires_grad_(False)  # the maps need input-side gradients only
    x = run.preprocess(run.as_batch(images).cpu()).float()
    if method == "gradcam":
        layer = layer or default_cam_layer(run, model, x)
        _, module = find_layer(run.config.model, model, layer)
        try:
            raw, logits, targets, calls = grad_cam_maps(model, x, module, target)
        except CnnlabError as e:
            raise CnnlabError(f"layer '{layer}': {e}; choose a layer before the flatten, e.g. "
                              f"{', '.join(conv_layer_names(run))}") from None
        if calls > 1:
            layer = f"{layer} (the last of its {calls} uses)"
    else:
        layer = None
        raw, logits, targets = saliency_maps(model, x, target)
    maps, flat = _scaled(raw, scale)
    probs = logits.float().softmax(1)
    conf, pred = probs.max(1)
    return Attribution(method, layer, maps, targets.tolist(), pred.tolist(), conf.tolist(), flat,
                       scale)


def plot_attribution(run: LoadedRun, examples: Examples, result: Attribution,
                     path: str | Path | None = None, alpha: float = 0.5,
                     compact: bool = False) -> Path:
    """One row per input: the input, the map alone, the map over the input; ``compact``:
    one column per input with the input above its overlay (for reports). Titles say the
    true class (when known), the prediction with its probability and the class explained."""
    run = as_run(run)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "gradcam" if result.method == "gradcam" else "saliency"
    path = path or run.run_dir.path / f"{name}.png"
    n = len(examples.images)
    raw = result.scale == "raw"
    vmax = float(result.maps.max()) if raw else 1.0
    vmax = vmax if vmax > 0 else 1.0
    if compact:
        fig, grid = plt.subplots(2, n, squeeze=False, figsize=(0.3 + 1.75 * n, 4.3),
                                 layout="constrained")
        axes = [[grid[0][i], None, grid[1][i]] for i in range(n)]
    else:
        fig, grid = plt.subplots(n, 3, squeeze=False, figsize=(7.2, 0.9 + 2.3 * n),
                                 layout="constrained")
        axes = [list(row) for row in grid]
    for i in range(n):
        img = examples.images[i].float() / 255
        rgb = img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy()
        cmap = None if img.shape[0] == 3 else "gray"
        heat = result.maps[i].numpy()
        ax_in, ax_map, ax_over = axes[i]
        ax_in.imshow(rgb, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax_over.imshow(rgb, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        smooth = "bilinear" if result.method == "gradcam" else "nearest"  # saliency is per pixel
        ax_over.imshow(heat, cmap="jet", vmin=0, vmax=vmax, alpha=alpha, interpolation=smooth)
        pred, tgt = result.predicted[i], result.targets[i]
        ok = examples.true[i] is None or examples.true[i] == pred
        flat = " (flat map)" if result.flat[i] else ""
        colour = "black" if ok else "crimson"
        if compact:
            ax_in.set_title(f"{examples.labels[i]}\npredicted {run.classes[pred]} "
                            f"({percent(result.probability[i])})", fontsize=7.5, color=colour)
            ax_over.set_title(f"explains {run.classes[tgt]}{flat}", fontsize=7.5)
        else:
            im = ax_map.imshow(heat, cmap="jet", vmin=0, vmax=vmax, interpolation=smooth)
            ax_in.set_ylabel(examples.labels[i], fontsize=9)
            ax_in.set_title(f"predicted {run.classes[pred]} ({percent(result.probability[i])})",
                            fontsize=9, color=colour)
            ax_map.set_title(f"explains {run.classes[tgt]}{flat}", fontsize=9)
            ax_over.set_title("overlay", fontsize=9)
            if raw:
                fig.colorbar(im, ax=ax_map, fraction=0.046, pad=0.02)
        for ax in axes[i]:
            if ax is not None:
                ax.set_xticks([])
                ax.set_yticks([])
    what = f"Grad-CAM at {result.layer}" if result.method == "gradcam" else "saliency |d logit/d x|"
    fig.suptitle(f"{run.config.model} on {run.config.dataset_title()}: {what} "
                 f"({'raw values' if raw else 'each map scaled to 0..1'})", fontsize=10)
    return save_png(fig, path, dpi=110)
