"""Fine-tuning: a new run that starts from another run's weights (``--init-from RUN``).

Transfer learning in three moves, as in Keras' and fastai's guides: load the trained
weights; replace the classifier head when the new data has other classes (its weights
start afresh); freeze the layers that should keep what they learnt (``--freeze`` names
layers, ``--freeze-until`` freezes every layer up to one) and, optionally, let the head
learn faster than the rest (``--head-lr-scale``).

The head is found without a per-model table: it is every weight whose shape depends on
the number of classes, found by building the same network with one class more and
comparing shapes. That covers a ``Linear`` classifier, NiN's convolutional head, or any
other design. Frozen BatchNorm layers run in inference mode (they keep, and normalise
with, the statistics learnt on the source data), as Keras does for ``trainable=False``:
updating the statistics of a layer whose weights are fixed would change what it computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, find_layer, get_model_info, upgrade_state_dict

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass
class FineTune:
    """What :func:`prepare` did: the head's parameter names and the frozen modules."""

    head: list[str] = field(default_factory=list)  # parameter names of the classifier head
    frozen: list[str] = field(default_factory=list)  # module names whose weights are fixed

    def head_params(self, model: nn.Module) -> set[int]:
        """ids of the head's parameters (for its own learning rate)."""
        params = dict(model.named_parameters())
        return {id(params[n]) for n in self.head if n in params}


def head_keys(name: str, model: nn.Module, num_classes: int) -> list[str]:
    """State-dict keys of ``model`` (registered as ``name``) whose shape depends on the
    number of classes: the classifier head."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))), None)
    channels = first.in_channels if first is not None else None  # series models: the data's
    other = create_model(name, num_classes=num_classes + 1, in_channels=channels).state_dict()
    return [k for k, v in model.state_dict().items()
            if k in other and tuple(other[k].shape) != tuple(v.shape)]


def _modules_of(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))


def _shown(name: str, modules: list[str]) -> str:
    """Module names as people know them: the registry's alias (``conv1``) where there is one."""
    alias = {m: a for a, m in get_model_info(name).aliases.items()}
    return ", ".join(alias.get(m, m) for m in modules)


def _shown_frozen(name: str, model: nn.Module, frozen: list[str]) -> str:
    """The frozen modules as `cnnlab summary` names them: a layer with an alias (``b2``,
    ``group1``) whose weights are all frozen is shown by its alias alone, not as the dozen
    modules inside it that ``--freeze-until`` lists one by one."""
    modules = dict(model.named_modules())
    aliases = get_model_info(name).aliases
    whole = {}  # module name -> alias, for aliased layers frozen entirely
    for alias, target in aliases.items():
        params = list(modules[target].parameters()) if target in modules else []
        if params and not any(p.requires_grad for p in params) and target not in whole:
            whole[target] = alias
    shown: list[str] = []
    for n in frozen:
        outer = [t for t in whole if n == t or n.startswith(t + ".")]
        label = whole[min(outer, key=len)] if outer else _shown(name, [n])
        if label not in shown:
            shown.append(label)
    return ", ".join(shown)


def refuse_other_model(source: str, src_model: str, name: str) -> None:
    """Weights load only into the model they were trained in: one line otherwise (checked
    before the data is read for `cnnlab train`, and again when the weights are loaded)."""
    if src_model != name:
        raise CnnlabError(f"--init-from {source} holds a '{src_model}' model but this run "
                          f"trains '{name}'; pass --model {src_model} (or init from a "
                          f"'{name}' run)")


def load_source(model: nn.Module, name: str, source: str, classes: tuple[str, ...],
                log=lambda _m: None) -> None:
    """Load run ``source``'s final weights into ``model``; the head is kept only when the
    source was trained on the same classes in the same order, else it starts afresh."""
    from cnnlab.engine.checkpoint import read_weights
    from cnnlab.run import RunDir

    src = RunDir(source).require()
    refuse_other_model(source, str(src.read_config().get("model")), name)
    src_classes = src.read_classes()
    state = upgrade_state_dict(model, read_weights(src.weights_path))
    head = head_keys(name, model, len(classes))
    replace = tuple(src_classes) != tuple(classes)
    if replace:
        state = {k: v for k, v in state.items() if k not in head}
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state and not (replace and k in head)]
    if wrong:
        _refuse_other_channels(src, source, model)
    if wrong or missing:
        bad = (wrong or missing)[0]
        raise CnnlabError(f"the weights of {source} do not fit this '{name}' model ({bad} "
                          f"{'has another shape' if wrong else 'is missing'}); was it "
                          "trained by another cnnlab version? Train the source again")
    model.load_state_dict(state, strict=False)
    what = f"init from {source} ({name}, {len(src_classes)} classes)"
    if replace:
        why = (f"{len(src_classes)} -> {len(classes)} classes" if len(src_classes) != len(classes)
               else "other classes")
        log(f"{what}: new classifier head {_shown(name, _modules_of(head))} ({why}), initialised "
            "afresh; every other layer keeps its trained weights")
    else:
        log(f"{what}: same classes, every layer including the head keeps its trained weights")


def _refuse_other_channels(src, source: str, model: nn.Module) -> None:
    """A series run's channel count comes from its data and cannot be converted (images can:
    their ``--channels`` follows the source), so a source of another count is refused with
    both counts, instead of as weights of another shape."""
    pre = src.read_preprocess()
    first = next((m for m in model.modules() if isinstance(m, nn.Conv1d)), None)
    if pre.is_series and first is not None and pre.channels != first.in_channels:
        raise CnnlabError(f"--init-from {source} was trained on {pre.channels}-channel series "
                          f"but this data set's series have {first.in_channels} channels; "
                          f"fine-tune from a run on {first.in_channels}-channel series")


def forward_calls(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Module names in the order their forward passes finish on one (1, *input_shape) input
    (a module used twice is listed twice; a block after everything inside it): the order
    `cnnlab summary` shows, which registration order is not (a ResNet may register its
    blocks before a layer that runs earlier)."""
    calls: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, n=n: calls.append(n))
               for n, m in model.named_modules() if n]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls


def _frozen_modules(name: str, model: nn.Module, freeze: str | None,
                    freeze_until: str | None, input_shape: tuple[int, ...]) -> list[str]:
    """Module names to freeze: the named layers, or every module that runs up to and
    including one (in forward order)."""
    if freeze is not None:  # `--freeze ""` too: it froze nothing, silently
        wanted = [s.strip() for s in freeze.split(",") if s.strip()]
        if not wanted:
            raise CnnlabError("--freeze needs layer names, e.g. --freeze conv1,conv2 "
                              "(see `cnnlab summary MODEL`)")
        found = [find_layer(name, model, w) for w in wanted]
        idle = [w for w, (_, m) in zip(wanted, found, strict=True) if not list(m.parameters())]
        if idle:
            with_weights = [n for n, m in model.named_modules()
                            if n and list(m.parameters(recurse=False))]
            raise CnnlabError(f"--freeze {', '.join(idle)}: no weights to freeze there; name "
                              f"layers with weights ({_shown(name, with_weights)})")
        return [n for n, _ in found]
    if freeze_until:
        target, _ = find_layer(name, model, freeze_until)
        calls = forward_calls(model, input_shape)
        uses = calls.count(target)
        inside = [i for i, n in enumerate(calls) if n.startswith(target + ".")]
        if uses == 0 and inside:  # a container whose children run, not it (a ModuleList)
            return list(dict.fromkeys([*calls[:max(inside) + 1], target]))
        if uses != 1:
            how = "never runs" if not uses else f"runs {uses} times (one module used again)"
            raise CnnlabError(f"--freeze-until {freeze_until}: that layer {how} in the forward "
                              "pass, so 'up to it' has no single place; name a layer that runs "
                              "once (see `cnnlab summary MODEL`)")
        return list(dict.fromkeys(calls[:calls.index(target) + 1]))
    return []


def check_freeze_names(cfg) -> None:
    """``--freeze``/``--freeze-until`` checked on a throwaway copy of the model, before the
    data is read (a typo was found only after a long decode)."""
    _, shape = source_input_shape(cfg.init_from)
    channels = {"in_channels": shape[0]} if len(shape) == 2 else {}
    _frozen_modules(cfg.model, create_model(cfg.model, **channels), cfg.freeze,
                    cfg.freeze_until, shape)


def _inference_mode_hook(module: nn.Module, _args: tuple) -> None:
    module.train(False)  # a frozen norm layer keeps using (and keeping) its running stats


def to_sync_batchnorm(model: nn.Module) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` (``--sync-bn``), keeping frozen norm layers
    frozen: the conversion builds new modules and drops the hook that keeps a frozen layer in
    inference mode, after which it would normalise by batch statistics and overwrite the
    trained running ones, silently."""
    frozen = {name for name, m in model.named_modules()
              if _inference_mode_hook in m._forward_pre_hooks.values()}
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, m in model.named_modules():
        if name in frozen:
            m.register_forward_pre_hook(_inference_mode_hook)
    return model


def freeze_layers(name: str, model: nn.Module, freeze: str | None, freeze_until: str | None,
                  head: list[str], input_shape: tuple[int, ...]) -> list[str]:
    """Turn off gradients of the chosen modules' own parameters; frozen BatchNorm layers run
    in inference mode. Returns the frozen module names (those with parameters)."""
    modules = dict(model.named_modules())
    chosen = _frozen_modules(name, model, freeze, freeze_until, input_shape)
    done = []
    for module_name in chosen:
        module = modules[module_name]
        # --freeze NAME freezes NAME's whole subtree; --freeze-until lists each module, so
        # only its own parameters (a parent listed first must not freeze later children)
        params = list(module.parameters(recurse=bool(freeze)))
        subtree = [module] if not freeze else [m for m in module.modules()]
        for m in subtree:
            if isinstance(m, _NORMS) and m.track_running_stats:
                m.register_forward_pre_hook(_inference_mode_hook)
        if params:
            done.append(module_name)
        for p in params:
            p.requires_grad_(False)
    named = dict(model.named_parameters())
    frozen_head = [k for k in head if k in named and not named[k].requires_grad]
    if frozen_head:
        raise CnnlabError(f"that freezes the classifier head "
                          f"({_shown(name, _modules_of(frozen_head))}) too; freeze only layers "
                          "before it")
    if not any(p.requires_grad for p in model.parameters()):
        raise CnnlabError("every parameter is frozen: nothing left to train")
    return done


def prepare(cfg, model: nn.Module, classes: tuple[str, ...], fresh: bool,
            input_shape: tuple[int, ...], log=lambda _m: None) -> FineTune:
    """Apply ``cfg``'s fine-tuning options to a freshly built ``model`` (on the CPU; it takes
    ``input_shape``): load ``init_from`` (only for a fresh run: a resumed run's checkpoint
    brings the weights), then freeze."""
    out = FineTune()
    if not (cfg.init_from or cfg.freeze or cfg.freeze_until or cfg.head_lr_scale != 1.0):
        return out
    head_state = head_keys(cfg.model, model, len(classes))
    params = dict(model.named_parameters())
    out.head = [k for k in head_state if k in params]
    if cfg.init_from and fresh:
        load_source(model, cfg.model, cfg.init_from, classes, log)
    out.frozen = freeze_layers(cfg.model, model, cfg.freeze, cfg.freeze_until, out.head,
                               input_shape)
    if out.frozen:
        n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        norms = any(isinstance(m, _NORMS) and m._forward_pre_hooks for m in model.modules())
        log(f"frozen: {_shown_frozen(cfg.model, model, out.frozen)} ({n_frozen:,} of {n_all:,} parameters"
            f"{'; their BatchNorm layers keep the trained statistics' if norms else ''})")
    if cfg.head_lr_scale != 1.0:
        log(f"classifier head {_shown(cfg.model, _modules_of(out.head))}: lr x "
            f"{cfg.head_lr_scale:g}")
    return out


def source_input_shape(source: str) -> tuple[str, tuple[int, ...]]:
    """The model name and input shape (C, H, W) a source run was trained with."""
    from cnnlab.run import RunDir

    src = RunDir(source).require()
    saved = src.read_config()
    pre = src.read_preprocess(saved)
    return str(saved.get("model")), tuple(pre.input_shape)

