"""Regenerate the pictures of the README and the quickstarts (docs/*.md) in docs/img/.

    python scripts/readme_pictures.py --data-dir ../shared/data            # trains the run
    python scripts/readme_pictures.py --run runs/lenet5-fashion-mnist-...  # reuses one
    python scripts/readme_pictures.py --explain-only                       # no run needed

Writes (each shrunk to a palette PNG, so the repository stays small):
  docs/img/report.png       the top of `cnnlab report`, screenshotted in headless Chromium
  docs/img/activations.png  the d2l exercise: conv1/conv2 feature maps of a pullover and a coat
  docs/img/gradcam.png      Grad-CAM of the same two inputs
  docs/img/confusion.png    the confusion matrix, counts and row-normalised
  docs/img/shapes-*.png, receptive-field-*.png, conv.gif   the `explain` pictures
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"


def shrink(src: Path, dst: Path, width: int, crop_height: int | None = None) -> None:
    """Scale to ``width`` pixels (never up), optionally keep only the top, 256-colour PNG."""
    im = Image.open(src).convert("RGB")
    if crop_height is not None:
        im = im.crop((0, 0, im.width, min(im.height, crop_height)))
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    print(f"wrote {dst.relative_to(ROOT)} ({dst.stat().st_size // 1024} KB, {im.width}x{im.height})")


def explain_pictures(tmp: Path) -> None:
    """The concept pictures of the quickstarts: they need no data and no trained run."""
    from cnnlab.data import load_split
    from cnnlab.data.preprocess import adapt_images
    from cnnlab.explain.network import plot_receptive_field, plot_shapes
    from cnnlab.explain.ops import explain_conv
    from cnnlab.models import create_model, get_model_info

    for name in ("simple-cnn", "mnist-net", "lenet5", "mnist-inception"):
        aliases = {m: a for a, m in get_model_info(name).aliases.items()}
        shrink(plot_shapes(create_model(name), name, get_model_info(name).input_shape,
                           tmp / f"shapes-{name}.png", aliases), OUT / f"shapes-{name}.png", 640)
    digit = adapt_images(load_split("digits", "test").images[3:4], 28, 1)[0]
    for name in ("mnist-net", "lenet5"):  # as `cnnlab explain receptive-field NAME --index 3`
        aliases = {m: a for a, m in get_model_info(name).aliases.items()}
        title = f"{name}: what the centre unit of each layer sees (digits #3)"
        shrink(plot_receptive_field(create_model(name), name, digit, tmp / f"rf-{name}.png",
                                    None, aliases, title),
               OUT / f"receptive-field-{name}.png", 800)
    gif = explain_conv(padding=1, path=OUT / "conv.gif")
    print(f"wrote {Path(gif).relative_to(ROOT)} ({Path(gif).stat().st_size // 1024} KB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained d2l-lenet-fashion run [train one]")
    parser.add_argument("--data-dir", help="where fashion-mnist is (e.g. ../shared/data)")
    parser.add_argument("--explain-only", action="store_true",
                        help="only the concept pictures, which need no run")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        explain_pictures(Path(tmp_name))
    if args.explain_only:
        return 0

    from cnnlab.api import train
    from cnnlab.run import load_run
    from cnnlab.viz.attribution import attribute, plot_attribution
    from cnnlab.viz.inside import pick_examples, plot_activations
    from cnnlab.viz.report import build_report

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("needs chromium for the report screenshot: apt-get install -y chromium")
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run_dir = args.run
        if run_dir is None:
            print("training d2l-lenet-fashion (10 epochs)...")
            run_dir = train("d2l-lenet-fashion", data_dir=args.data_dir, out=str(tmp / "run"),
                            log=print).run_dir
        run = load_run(run_dir, device="cpu")
        ex = pick_examples(run, class_names=["Pullover", "Coat"], data_dir=args.data_dir)
        shrink(plot_activations(run, ["conv1", "conv2"], ex.images, ex.labels,
                                tmp / "activations.png"), OUT / "activations.png", 900)
        res = attribute(run, ex.images, "gradcam", layer="conv1")
        shrink(plot_attribution(run, ex, res, tmp / "gradcam.png"), OUT / "gradcam.png", 560)

        from cnnlab.engine.interpret import interpret_run
        from cnnlab.viz.interpretation import plot_confusion

        interp = interpret_run(run, data_dir=args.data_dir)
        shrink(plot_confusion(interp.confusion, interp.classes, tmp / "confusion.png",
                              f"{run.config.model} on {run.config.dataset}: accuracy "
                              f"{interp.accuracy:.4f}"), OUT / "confusion.png", 900)

        report = build_report([run_dir], tmp / "report.html", data_dir=args.data_dir)
        shot = tmp / "report.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--window-size=1280,1500",
                        f"--screenshot={shot}", report.as_uri()],
                       check=True, capture_output=True, timeout=120)
        shrink(shot, OUT / "report.png", 760, crop_height=1500)
    return 0


if __name__ == "__main__":
    sys.exit(main())
