"""cnnlab: build, inspect, train, evaluate and visualise CNNs in PyTorch.

Importing the package does no work: ``train``, ``evaluate``, ``load_run`` and friends are
imported on first use (PEP 562 ``__getattr__``), so ``import cnnlab`` stays fast and needs no
optional package::

    import cnnlab
    result = cnnlab.train(recipe="default", epochs=3)
    run = cnnlab.load_run(result.run_dir)          # model, preprocess, classes, config, history
    cnnlab.evaluate(result.run_dir).accuracy
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "train": ("cnnlab.api", "train"),
    "evaluate": ("cnnlab.api", "evaluate"),
    "load_run": ("cnnlab.run", "load_run"),
    "LoadedRun": ("cnnlab.run", "LoadedRun"),
    "RunDir": ("cnnlab.run", "RunDir"),
    "Preprocess": ("cnnlab.data.preprocess", "Preprocess"),
    "TrainConfig": ("cnnlab.config", "TrainConfig"),
    "CnnlabError": ("cnnlab.errors", "CnnlabError"),
    "pick_examples": ("cnnlab.viz.inside", "pick_examples"),
    "plot_filters": ("cnnlab.viz.inside", "plot_filters"),
    "plot_activations": ("cnnlab.viz.inside", "plot_activations"),
    "activations": ("cnnlab.viz.inside", "activations"),
    "attribute": ("cnnlab.viz.attribution", "attribute"),
    "plot_attribution": ("cnnlab.viz.attribution", "plot_attribution"),
    "interpret": ("cnnlab.engine.interpret", "interpret"),
    "extract_features": ("cnnlab.engine.features", "extract_split"),
    "probe": ("cnnlab.engine.features", "probe"),
    "build_report": ("cnnlab.viz.report", "build_report"),
    "predict": ("cnnlab.engine.predict", "predict"),
    "lr_find": ("cnnlab.engine.lr_find", "lr_find"),
    "LRFindResult": ("cnnlab.engine.lr_find", "LRFindResult"),
    "plot_lr_find": ("cnnlab.engine.lr_find", "plot_lr_find"),
    # what the notebook and the quickstarts draw, without reaching into submodules
    "create_model": ("cnnlab.models", "create_model"),
    "model_summary": ("cnnlab.inspect.summary", "model_summary"),
    "plot_curves": ("cnnlab.viz.plots", "plot_curves"),
    "plot_mistakes": ("cnnlab.viz.interpretation", "plot_mistakes"),
    "plot_confusion": ("cnnlab.viz.interpretation", "plot_confusion"),
    "explain_conv": ("cnnlab.explain.ops", "explain_conv"),
    "explain_pool": ("cnnlab.explain.ops", "explain_pool"),
    "explain_channels": ("cnnlab.explain.ops", "explain_channels"),
    "plot_shapes": ("cnnlab.explain.network", "plot_shapes"),
    "plot_receptive_field": ("cnnlab.explain.network", "plot_receptive_field"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
