"""A 2-D map of feature vectors (PCA, or t-SNE when asked), one dot per image, coloured by
class: do the classes the network learned form separate clusters?"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.engine.features import Features
from cnnlab.errors import CnnlabError
from cnnlab.viz.plots import save_png

METHODS = ("pca", "tsne")


def embed(x: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """(N, D) -> (N, 2) with a note for the axis labels (PCA's explained variance)."""
    if method not in METHODS:
        raise CnnlabError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    if len(x) < 3:
        raise CnnlabError(f"a map needs at least 3 feature rows, the file has {len(x)}")
    x = x.astype(np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(x)
        var = pca.explained_variance_ratio_
        return xy, f"PC1 {var[0]:.0%} / PC2 {var[1]:.0%} of the variance"
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    dims = min(50, len(x))  # PCA gives at most one component per point
    if x.shape[1] > dims:  # the usual t-SNE recipe: PCA to 50 dims first (faster, less noise)
        x = PCA(n_components=dims, random_state=seed).fit_transform(x)
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return xy, f"t-SNE, perplexity {perplexity:g}"


def plot_feature_map(feats: Features, path: str | Path, method: str = "pca",
                     limit: int | None = 3000, seed: int = 0) -> Path:
    """Scatter the 2-D embedding, one colour per class, with a legend. At most ``limit``
    points (a fixed random subset) keep t-SNE quick and the picture readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = feats.features, feats.labels
    if limit is not None and len(x) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))
        x, y = x[pick], y[pick]
    xy, note = embed(x, method, seed)
    k = len(feats.classes)
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
    fig, ax = plt.subplots(figsize=(7.6, 5.6), layout="constrained")
    dot = min(30.0, max(6.0, 6000 / len(x)))  # a few points: larger dots, still seen
    for c in range(k):
        sel = y == c
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=dot, alpha=0.7, color=cmap(c % cmap.N),
                       label=feats.classes[c], linewidths=0)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
              markerscale=(37.5 / dot) ** 0.5,  # one legend marker size for any dot size
              frameon=False, ncols=1 if k <= 25 else 2)
    if method == "pca":  # one scale on both axes: PC2's spread shown as small as it is
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(note, fontsize=8)
    where = "the penultimate layer" if feats.layer == "penultimate" else feats.layer
    ax.set_title(f"{Path(feats.run).name}: {feats.features.shape[1]}-d features at {where}\n"
                 f"of {len(x)} {feats.dataset_title()} {feats.split} images", fontsize=10)
    return save_png(fig, path, dpi=110)
