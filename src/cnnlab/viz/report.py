"""`cnnlab report`: one self-contained HTML file about one or several trained runs.

Everything is inline (PNG images as ``data:`` URIs, CSS in a ``<style>`` element, no script,
no font or stylesheet from the network), so the file opens offline, can be mailed or
attached to an issue, and shows the same thing everywhere. The pictures are the ones the
other commands draw (curves, confusion matrix, Grad-CAM, filters, activations), so the report
and the commands never disagree. A section that cannot be drawn for a model (no conv layer
for Grad-CAM, say) says why in place instead of failing the whole report.

A time-series run gets pictures of series instead of image grids: class activation maps over
time for a few test series of each class, and its most confident mistakes drawn the same way.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import torch

from cnnlab import __version__
from cnnlab.engine.interpret import Interpretation, interpret_run
from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_atomic
from cnnlab.run import LoadedRun, load_run

PAIR_EXAMPLES = 6  # example images per confused pair
TOP_LOSSES = 6  # images with Grad-CAM overlays
MAX_ACTIVATION_ROWS = 10  # one example per class, at most this many classes

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#e3e6ec; --accent:#2f6fdb; --bad:#c0392b;
        --card:#ffffff; --bg:#f5f6f8; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif; }
main { max-width:1180px; margin:0 auto; padding:24px 20px 60px; }
header h1 { margin:0 0 4px; font-size:26px; }
header p { margin:0; color:var(--muted); }
section { background:var(--card); border:1px solid var(--line); border-radius:10px;
          padding:18px 22px; margin:18px 0; }
section > h2 { margin:0 0 12px; font-size:18px; }
h3 { font-size:15px; margin:18px 0 8px; }
.run-title { margin:34px 0 0; font-size:21px; border-bottom:2px solid var(--accent);
             padding-bottom:4px; }
.kpis { display:flex; flex-wrap:wrap; gap:12px; margin:14px 0 0; }
.kpi { background:var(--card); border:1px solid var(--line); border-radius:10px;
       padding:10px 16px; min-width:150px; }
.kpi b { display:block; font-size:22px; }
.kpi span { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; font-size:14px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left;
         vertical-align:middle; }
th { color:var(--muted); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
.bar { height:10px; background:var(--accent); border-radius:5px; min-width:1px; }
.barcell { width:240px; background:#eef1f6; border-radius:5px; }
.row { display:flex; flex-wrap:wrap; gap:24px; align-items:flex-start; }
.row > div { max-width:100%; }
img.fig { max-width:100%; height:auto; display:block; margin:6px 0; }
.thumbs { display:flex; flex-wrap:wrap; gap:6px; }
.thumbs figure { margin:0; text-align:center; font-size:12px; color:var(--muted); }
.thumbs img { width:64px; height:64px; image-rendering:pixelated; border:1px solid var(--line); }
.note { color:var(--muted); font-style:italic; }
.bad { color:var(--bad); }
details summary { cursor:pointer; color:var(--accent); }
code { background:#eef1f6; padding:1px 5px; border-radius:4px; font-size:13px; }
footer { color:var(--muted); font-size:13px; text-align:center; margin-top:30px; }
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _img(path: Path, alt: str) -> str:
    return f'<img class="fig" src="{png_uri(path)}" alt="{_e(alt)}">'


def thumb_uri(image: torch.Tensor) -> str:
    """A uint8 (C, H, W) image as a small PNG data URI (the browser scales it up)."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int] = frozenset()
           ) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, body: Callable[[], str]) -> str:
    """A titled card; a CnnlabError inside becomes a short note instead of a failed report."""
    try:
        content = body()
    except CnnlabError as e:
        content = f'<p class="note">Not available for this run: {_e(e)}</p>'
    return f"<section><h2>{_e(title)}</h2>{content}</section>"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


# --------------------------------------------------------------------------- one run
class _RunReport:
    """The sections about one run; pictures are drawn into ``tmp`` and inlined."""

    def __init__(self, run: LoadedRun, interp: Interpretation, tmp: Path, key: str):
        self.run, self.interp, self.tmp, self.key = run, interp, tmp, key

    def path(self, name: str) -> Path:
        return self.tmp / f"{self.key}-{name}.png"

    def kpis(self) -> str:
        run, it = self.run, self.interp
        hist = run.history
        params = sum(p.numel() for p in run.model.parameters())
        train_s = sum(h.train_time for h in hist)
        planned = run.config.epochs
        what = "series" if run.is_series else "images"
        items = [(f"{it.accuracy:.2%}", f"{it.split} accuracy ({it.total:,} {what})"),
                 (f"{len(hist)}", "epochs" if len(hist) >= planned else
                  f"epochs of {planned} planned: unfinished"),
                 (f"{train_s:.1f} s", "training time (steps, without evaluation)"),
                 (f"{params:,}", "parameters")]
        kpis = '<div class="kpis">' + "".join(
            f'<div class="kpi"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in items) + "</div>"
        predicted = it.confusion.sum(0)
        top = int(predicted.argmax())
        if it.total and float(predicted[top]) / it.total > 0.9 and len(it.classes) > 2:
            kpis += (f'<p class="bad">The model predicts {_e(it.classes[top])} for '
                     f"{float(predicted[top]) / it.total:.0%} of the images: it has not learned "
                     "to tell the classes apart (a too-high lr, or too few epochs?).</p>")
        return kpis

    def config(self) -> str:
        cfg = dataclasses.asdict(self.run.config)
        rows = [(f"<code>{_e(k)}</code>", _e(v)) for k, v in cfg.items()]
        return ("<details><summary>all settings (re-run with <code>cnnlab train --recipe "
                f"{_e(self.run.run_dir.path / 'config.yaml')}</code>)</summary>"
                + _table(["setting", "value"], rows) + "</details>")

    def curves(self) -> str:
        from cnnlab.viz.plots import plot_curves

        if not self.run.history:
            raise CnnlabError("no finished epoch")
        return _img(plot_curves(self.run.history, self.path("curves")), "training curves")

    def per_class(self) -> str:
        c = self.interp.confusion
        totals = c.sum(1)
        acc = c.diag().double() / totals.clamp_min(1)
        rows = []
        for k, name in enumerate(self.run.classes):
            a = float(acc[k])
            rows.append((_e(name), f"{a:.2%}", f"{int(totals[k]):,}",
                         f'<div class="barcell"><div class="bar" style="width:{a * 100:.1f}%">'
                         "</div></div>"))
        return _table(["class", "accuracy", "series" if self.run.is_series else "images", ""],
                      rows, numeric={1, 2})

    def confusion(self) -> str:
        from cnnlab.viz.interpretation import plot_confusion

        it = self.interp
        return _img(plot_confusion(it.confusion, it.classes, self.path("confusion")),
                    "confusion matrix")

    def confused_pairs(self) -> str:
        it = self.interp
        pairs = it.most_confused_indices()[:8]
        if not pairs:
            return '<p class="note">No mistakes on this split.</p>'
        out = []
        for t, p, n in pairs:
            shown = it.pair_examples.get((t, p), [])
            figs = "".join(f'<figure><img src="{thumb_uri(it.images[i])}" alt="#{i}">'
                           f"<figcaption>#{i}</figcaption></figure>" for i in shown)
            out.append(f"<h3>{_e(it.classes[t])} taken for {_e(it.classes[p])}: {n} images</h3>"
                       f'<div class="thumbs">{figs}</div>')
        return "".join(out)

    def top_losses(self) -> str:
        from cnnlab.viz.attribution import attribute, default_cam_layer, plot_attribution
        from cnnlab.viz.inside import Examples, conv_layer_names

        it = self.interp
        top = it.top_losses[:TOP_LOSSES]
        if not top:
            return '<p class="note">No images.</p>'
        ex = Examples(torch.stack([it.image(m) for m in top]),
                      [f"#{m.index} true {it.classes[m.true]} (loss {m.loss:.2f})" for m in top],
                      [m.true for m in top])
        try:
            default_cam_layer(self.run)
            method = "gradcam"
        except CnnlabError:
            method = "saliency"
        res = attribute(self.run, ex.images, method)
        if method == "gradcam" and sum(res.flat) * 2 >= len(res.flat):
            # mostly flat at the last maps (sigmoid nets, e.g. d2l's LeNet): the convs, last
            # first, may show more; keep whichever layer leaves the fewest maps flat
            for layer in reversed(conv_layer_names(self.run)):
                other = attribute(self.run, ex.images, method, layer=layer)
                if sum(other.flat) < sum(res.flat):
                    res = other
        caption = ("<p>The images with the largest loss; the heat map shows where the "
                   "evidence for the predicted class lies (Grad-CAM at "
                   f"<code>{_e(res.layer)}</code>). A flat map means no region at that layer "
                   "raises the class's logit." if method == "gradcam" else
                   "<p>The images with the largest loss, with saliency maps.")
        shown = "Grad-CAM" if method == "gradcam" else "saliency maps"
        return caption + "</p>" + _img(plot_attribution(self.run, ex, res, self.path("cam"),
                                                        compact=True), f"top losses with {shown}")

    def inside(self) -> str:
        from cnnlab.viz.inside import conv_layer_names, pick_examples, plot_activations, plot_filters

        convs = conv_layer_names(self.run)[:2]
        if not convs:
            raise CnnlabError(f"model '{self.run.config.model}' has no convolution layer")
        parts = ['<div class="row">']
        for layer in convs:
            parts.append(f"<div><h3>filters of <code>{_e(layer)}</code></h3>"
                         + _img(plot_filters(self.run, layer, self.path(f"filters-{layer}")),
                                f"filters of {layer}") + "</div>")
        parts.append("</div>")
        classes = list(self.run.classes[:MAX_ACTIVATION_ROWS])
        ex = pick_examples(self.run, class_names=classes, split=self.interp.split)
        parts.append(f"<h3>feature maps of {', '.join(f'<code>{_e(c)}</code>' for c in convs)}"
                     " for one example of each class</h3>"
                     + _img(plot_activations(self.run, convs, ex.images, ex.labels,
                                             self.path("activations")), "activations"))
        return "".join(parts)

    # ------------------------------------------------------------- time-series runs
    def series_cam(self) -> str:
        from cnnlab.viz.series import LIMIT, PER_CLASS, plot_run_cam

        path = plot_run_cam(self.run, self.path("series-cam"), split=self.interp.split,
                            per_class=PER_CLASS, limit=LIMIT)
        return ("<p>A few series of each class, each line coloured by the class activation map "
                "of the predicted class: <code>CAM(t) = sum_k w[c, k] A_k(t)</code> from the last "
                "feature maps <code>A</code> and the classifier's weights <code>w</code>, so "
                "the dark red parts of a series raised the class's score most (each series "
                "scaled to its own 0..1). A red title is a wrong prediction.</p>"
                + _img(path, "class activation maps"))

    def series_mistakes(self) -> str:
        from cnnlab.viz.series import plot_mistakes_cam

        it = self.interp
        pairs = it.most_confused()[:8]
        if not pairs:
            return '<p class="note">No mistakes on this split.</p>'
        table = _table(["true", "taken for", "series"],
                       [(_e(t), _e(p), str(n)) for t, p, n in pairs],
                       numeric={2})
        return (table + "<p>The most confident mistakes, coloured by the map of the class they "
                "were taken for: the parts that misled the model.</p>"
                + _img(plot_mistakes_cam(self.run, it, self.path("series-mistakes")),
                       "most confident mistakes"))

    def html(self, heading: bool) -> str:
        run = self.run
        title = (f'<h2 class="run-title">{_e(run.run_dir.path.name)}: {_e(run.config.model)} on '
                 f"{_e(run.config.dataset_title())}</h2>" if heading else "")
        common = (title + self.kpis()
                  + _section("Configuration", self.config)
                  + _section("Training curves", self.curves)
                  + _section("Per-class accuracy", self.per_class)
                  + _section("Confusion matrix", self.confusion))
        if run.is_series:
            return (common
                    + _section("Class activation maps over time", self.series_cam)
                    + _section("Most-confused classes and mistakes", self.series_mistakes))
        return (common
                + _section("Most-confused pairs", self.confused_pairs)
                + _section("Top losses, and where the model looked", self.top_losses)
                + _section("Inside the network: filters and activations", self.inside))


# ----------------------------------------------------------------------- several runs
def _differing_config(runs: Sequence[LoadedRun]) -> list[tuple[str, list[object]]]:
    cfgs = [dataclasses.asdict(r.config) for r in runs]
    keys = [k for k in cfgs[0] if k not in ("out", "data_dir")]  # where, not what
    return [(k, [c.get(k) for c in cfgs]) for k in keys
            if len({repr(c.get(k)) for c in cfgs}) > 1]


def _overlaid_curves(runs: Sequence[LoadedRun], names: Sequence[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnlab.viz.plots import epoch_axis, save_png

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for run, name in zip(runs, names, strict=True):
        h = run.history
        line, = ax_loss.plot([m.epoch for m in h], [m.train_loss for m in h], label=name,
                             marker="." if len(h) < 12 else None)  # one epoch: one dot
        tested = [m for m in h if m.test_acc is not None]
        ax_acc.plot([m.epoch for m in tested], [m.test_acc for m in tested], color=line.get_color(),
                    marker="." if len(tested) < 12 else None, label=name)
    ax_loss.set_title("train loss", fontsize=10)
    ax_acc.set_title("test accuracy", fontsize=10)
    epochs = [m.epoch for run in runs for m in run.history]
    for ax in (ax_loss, ax_acc):
        epoch_axis(ax, epochs)
        ax.grid(True, alpha=0.3)
    ax_acc.legend(fontsize=8)
    return save_png(fig, path, dpi=110)


def _comparison(runs: Sequence[LoadedRun], interps: Sequence[Interpretation], names: list[str],
                tmp: Path) -> str:
    rows = []
    for run, it, name in zip(runs, interps, names, strict=True):
        h = run.history
        best = max((m.test_acc for m in h if m.test_acc is not None), default=None)
        rows.append((_e(name), _e(run.config.model), _e(run.config.dataset_title()), str(len(h)),
                     f"<b>{it.accuracy:.2%}</b>", _pct(best),
                     f"{sum(m.train_time for m in h):.1f} s",
                     f"{sum(p.numel() for p in run.model.parameters()):,}"))
    results = _table(["run", "model", "data set", "epochs", f"{interps[0].split} accuracy",
                      "best epoch acc", "training time (steps)", "parameters"], rows,
                     numeric={3, 4, 5, 6, 7})
    diff = _differing_config(runs)
    if diff:
        config = _table(["setting", *names],
                        [(f"<code>{_e(k)}</code>", *(_e(v) for v in vals)) for k, vals in diff])
    else:
        config = '<p class="note">The runs have the same settings.</p>'
    curves = _img(_overlaid_curves(runs, names, tmp / "overlaid.png"), "curves of all runs")
    return (_section("Results", lambda: results)
            + _section("Settings that differ", lambda: config)
            + _section("Curves, overlaid", lambda: curves))


def _short_names(paths: Sequence[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    if len(set(names)) < len(names):  # same folder names elsewhere: add the parent
        names = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]
    return names


def build_report(run_dirs: str | Path | Sequence[str | Path], out: str | Path | None = None,
                 split: str = "test", data_dir: str | None = None,
                 log: Callable[[str], None] = lambda _m: None) -> Path:
    """Write the HTML report of one run (default ``RUN/report.html``) or a comparison of
    several (default ``report.html`` here); returns its path."""
    if isinstance(run_dirs, (str, os.PathLike)):  # one run, not its path's letters
        run_dirs = [run_dirs]
    if not run_dirs:
        raise CnnlabError("give at least one run directory")
    paths = [Path(p) for p in run_dirs]
    seen = [p.resolve() for p in paths]
    if len(set(seen)) < len(seen):
        raise CnnlabError("a run directory is given twice; give each run once")
    out = Path(out) if out else (paths[0] / "report.html" if len(paths) == 1 else
                                 Path("report.html"))
    if out.is_dir():
        raise CnnlabError(f"--out {out} is a directory; give a file name ending in .html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise CnnlabError(f"--out must end in .html, got {out.name}")
    runs = [load_run(p, device="cpu") for p in paths]  # all errors before any work
    names = _short_names(paths)
    interps = []
    for run, name in zip(runs, names, strict=True):
        log(f"evaluating {name} on its {split} split")
        interps.append(interpret_run(run, split, top=TOP_LOSSES, data_dir=data_dir,
                                     batch_size=512, per_pair=PAIR_EXAMPLES))
    with tempfile.TemporaryDirectory(prefix="cnnlab-report-") as tmp_name:
        tmp = Path(tmp_name)
        body = []
        if len(runs) > 1:
            body.append(_comparison(runs, interps, names, tmp))
        for k, (run, it, name) in enumerate(zip(runs, interps, names, strict=True)):
            log(f"drawing {name}")
            body.append(_RunReport(run, it, tmp, f"r{k}").html(heading=len(runs) > 1))
        if len(runs) == 1:
            r = runs[0]
            title = f"{names[0]}: {r.config.model} on {r.config.dataset_title()}"
        else:
            title = f"{len(runs)} runs compared"
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
        doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
               f'<meta name="viewport" content="width=device-width, initial-scale=1">'
               f"<title>{_e(title)} · cnnlab report</title><style>{CSS}</style></head><body><main>"
               f"<header><h1>{_e(title)}</h1><p>cnnlab {__version__} report, {stamp}, "
               f"{_e(split)} split</p></header>" + "".join(body)
               + f"<footer>Made with <code>cnnlab report {' '.join(_e(p) for p in paths)}</code>. "
               "Self-contained: every picture is inline, nothing is loaded from the network."
               "</footer></main></body></html>")
    write_atomic(out, doc)
    return out
