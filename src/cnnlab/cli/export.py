"""`cnnlab export RUN --format onnx|torchscript`: a deployable file, verified before it is kept."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from cnnlab.cli import cli
from cnnlab.cli.console import console


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="onnx", show_default=True, metavar="onnx|torchscript",
              help="onnx (needs the export extra: pip install 'cnnlab[export]') or torchscript")
@click.option("--out", help="file to write, or a folder (ending in /) to write it in "
                            "[RUN/model.onnx, RUN/model.torchscript.pt]")
@click.option("--data-dir", default=None,
              help="where the run's data set is, for the check [default: the folder given to "
                   "training, else $CNNLAB_DATA, else cnnlab's data folder]")
@click.option("--with-preprocess", is_flag=True,
              help="the graph takes uint8 pixels (0..255, at the model's size and channels) and "
                   "normalises them itself; without it, the normalised float32 tensor (a series "
                   "run: raw float32 series, z-normalised in the graph)")
def export(run_dir: Path, fmt: str, out: str | None, data_dir: str | None,
           with_preprocess: bool) -> None:
    """Export a trained run to ONNX or TorchScript with a dynamic batch axis.

    The file is checked at once against PyTorch on test images of the run's data set at
    batch sizes 1, 2 and 7 (max abs diff of the logits at most 1e-3, same top-1 class for
    every image) and kept only when it passes; the check, the input and the preprocessing
    are written beside it as FILE.json.
    """
    from rich.table import Table

    from cnnlab.engine.export import export_run

    con = console()
    r = export_run(run_dir, fmt, out, with_preprocess, data_dir=data_dir)
    if r.images.get("source") == "random":
        what = "series" if r.preprocess.get("kind") == "series" else "uint8 images"
        con.print(Text.assemble(("warning:", "bold"), f" {r.images['reason']}; verified on "
                                f"deterministic random {what} instead"))
    else:
        what = "series" if r.preprocess.get("kind") == "series" else "images"
        con.print(f"verified on {sum(row.batch for row in r.verification)} {what} of the "
                  f"{r.images['dataset']} test split")
    table = Table(show_edge=False)
    for col in ("batch", "max abs diff", "top-1 agreement"):
        table.add_column(col, justify="right")
    for row in r.verification:
        table.add_row(str(row.batch), f"{row.max_abs_diff:.2e}", f"{row.top1_agreement:.3f}")
    con.print(table)
    shape = ", ".join(map(str, r.input["shape"]))
    con.print(f"input '{r.input['name']}': {r.input['dtype']} ({shape}), {r.input['range']}; "
              f"output '{r.output['name']}': float32 (batch, {len(r.classes)})")
    size = r.file.stat().st_size
    shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
    con.print(f"wrote {r.file} ({shown}) and {r.sidecar}")
