"""Feature extraction: a trained CNN as a frozen feature extractor (the tutorials' "feature
extraction" lesson).

One feature row per image from a chosen layer: by default the input of the last linear
layer (the penultimate features a classifier head reads); a layer with feature maps is
global-average-pooled to one value per channel, anything else is flattened. Batches stream
through an fp32 eval-mode copy of the model with a forward hook that is always removed.
The features of one data set can be reused on another: :func:`probe` fits scikit-learn's
logistic regression on them (a linear probe) and reports its test accuracy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.data.registry import dataset_title
from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_atomic
from cnnlab.models.registry import find_layer
from cnnlab.run import LoadedRun, as_run

PENULTIMATE = "penultimate"


@dataclass
class Features:
    """Rows of ``features`` (N, D) float32 match ``labels`` (N,) int64 into ``classes``.
    ``data_dir``: the data folder the images came from when it names the data (an image
    folder's root: ``folder 'letters'`` in titles), else empty."""

    features: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    layer: str
    dataset: str
    split: str
    run: str
    data_dir: str = ""

    def dataset_title(self) -> str:
        """The data set as titles name it (``folder 'letters'``, ``mnist``)."""
        return dataset_title(self.dataset, self.data_dir or None)

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (plain arrays, no pickled objects: safe to load anywhere). The
        data folder is an array of its own, ``data_dir``, not a fifth ``meta`` entry, so
        that older cnnlab versions still read the file."""
        path = Path(path)
        if path.suffix != ".npz":
            raise CnnlabError(f"--out must end in .npz, got {path.name}")

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, features=self.features, labels=self.labels,
                         classes=np.array(self.classes, dtype=str),
                         meta=np.array([self.layer, self.dataset, self.split, self.run], dtype=str),
                         data_dir=np.array(self.data_dir, dtype=str))

        write_atomic(path, write)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Features:
        """Read a file written by :meth:`save`, refusing pickled content; a file from before
        ``data_dir`` was saved has none (its title says ``folder``, as it did)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                layer, dataset, split, run = (str(v) for v in z["meta"])
                data_dir = str(z["data_dir"]) if "data_dir" in z.files else ""
                return cls(z["features"], z["labels"], tuple(str(c) for c in z["classes"]),
                           layer, dataset, split, run, data_dir)
        except FileNotFoundError:
            raise CnnlabError(f"{path} does not exist; write it with `cnnlab features RUN "
                              f"--out {path.name}`") from None
        except IsADirectoryError:
            raise CnnlabError(f"{path} is a folder (a run?); `features map` takes the .npz "
                              f"file that `cnnlab features {path} --out F.npz` writes") from None
        except (OSError, ValueError, KeyError) as e:
            why = ("it is not an .npz of plain arrays; cnnlab never loads pickled data"
                   if "pickled" in str(e) else f"{type(e).__name__}: {e}")
            raise CnnlabError(f"{path} is not a features file written by `cnnlab features` "
                              f"({why})") from None


def penultimate_module(model: nn.Module) -> nn.Linear:
    """The last linear layer: its input is the feature vector the classifier reads."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CnnlabError("the model has no linear classifier layer; pass --layer NAME")
    return linears[-1]


def _row(t: torch.Tensor) -> torch.Tensor:
    return t.float().mean(dim=(2, 3)) if t.dim() == 4 else t.float().flatten(1)


@torch.no_grad()
def extract(run: LoadedRun, images: torch.Tensor, layer: str | None = None,
            batch_size: int = 512) -> torch.Tensor:
    """(N, D) features of uint8 ``images`` at ``layer`` (default: penultimate)."""
    model = copy.deepcopy(run.model).float().eval()
    if layer in (None, PENULTIMATE):
        module = penultimate_module(model)
        use_input = True
    else:
        module = find_layer(run.config.model, model, layer)[1]
        use_input = False
    got: list[torch.Tensor] = []

    def hook(_m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        got.append(_row(inp[0] if use_input else out))

    rows = []
    handle = module.register_forward_hook(hook)
    try:
        for chunk in images.split(batch_size):
            got.clear()
            model(run.preprocess(chunk.to(run.device)).float())
            if len(got) != 1:
                raise CnnlabError(f"layer '{layer}' runs {len(got)} times in one forward pass; "
                                  "choose a layer used once")
            rows.append(got[0].cpu())
    finally:
        handle.remove()
    return torch.cat(rows)


def extract_split(run: LoadedRun, layer: str | None = None, dataset: str | None = None,
                  split: str = "test", data_dir: str | None = None, limit: int | None = None,
                  batch_size: int = 512, limit_name: str = "--limit") -> Features:
    """Features of a split of the run's data set, or of any other data set (its images are
    given the model's channels and size). ``limit`` takes a fixed random subset.

    ``layer`` defaults to what the classifier's last linear layer reads (the penultimate
    features); a layer with feature maps (a conv, say) gives one value per channel, its
    maps averaged over height and width (global average pooling), so ``conv1`` of 10
    channels gives 10 features per image."""
    from cnnlab.engine.build import fixed_subset
    from cnnlab.engine.evaluate import load_for_run

    run = as_run(run)
    if limit is not None and limit < 1:
        raise CnnlabError(f"{limit_name} must be at least 1, got {limit}")
    name = dataset or run.config.dataset
    data = load_for_run(run, name, split, data_dir)
    data = fixed_subset(data, limit)
    feats = extract(run, run.preprocess.adapt(data.images), layer, batch_size)
    # the folder the images came from, as load_for_run chose it (titles name an image folder
    # by it); no folder when the data set's name says it all
    used = data_dir if data_dir is not None else (
        run.config.data_dir if name == run.config.dataset else None)
    kept = str(used) if used and dataset_title(name, used) != name else ""
    return Features(feats.numpy(), data.labels.numpy(), data.classes, layer or PENULTIMATE, name,
                    split, str(run.run_dir), kept)


@dataclass
class ProbeResult:
    dataset: str
    layer: str
    train_examples: int
    test_examples: int
    dims: int
    accuracy: float
    chance: float  # accuracy of always guessing the train split's most common class
    pixel_accuracy: float | None  # the same classifier on raw pixels, when asked
    title: str = ""  # the data set as titles name it (folder 'letters'); empty: ``dataset``


def _fit_score(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
               test_y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))


def probe(run: LoadedRun, dataset: str, layer: str | None = None, data_dir: str | None = None,
          limit_train: int | None = 10000, limit_test: int | None = None,
          pixels: bool = False) -> ProbeResult:
    """Fit a logistic regression on the run's frozen features of ``dataset``'s train split
    and score it on its test split; ``pixels`` also fits one on raw pixels, for comparison."""
    run = as_run(run)
    feats = {s: extract_split(run, layer, dataset, s, data_dir,
                              limit_train if s == "train" else limit_test,
                              limit_name=f"--limit-{s}")
             for s in ("train", "test")}
    tr, te = feats["train"], feats["test"]
    if len(np.unique(tr.labels)) < 2:
        raise CnnlabError(f"the train split of {dataset} (as limited) has one class; "
                          "raise --limit-train")
    acc = _fit_score(tr.features, tr.labels, te.features, te.labels)
    majority = int(np.bincount(tr.labels).argmax())  # the best guess the train split allows
    chance = float((te.labels == majority).mean())
    pixel_acc = None
    if pixels:
        from cnnlab.engine.build import fixed_subset
        from cnnlab.engine.evaluate import load_for_run

        raw = {s: fixed_subset(load_for_run(run, dataset, s, data_dir),
                               limit_train if s == "train" else limit_test)
               for s in ("train", "test")}
        flat = {s: run.preprocess.adapt(v.images).flatten(1).float().numpy() / 255
                for s, v in raw.items()}
        pixel_acc = _fit_score(flat["train"], tr.labels, flat["test"], te.labels)
    return ProbeResult(dataset, tr.layer, len(tr.labels), len(te.labels), tr.features.shape[1],
                       acc, chance, pixel_acc, tr.dataset_title())
