"""examples/tour.ipynb runs top to bottom (nbclient, a dev dependency) and shows its pictures."""

import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tour.ipynb"


def test_the_tour_notebook_runs_top_to_bottom_and_again(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' for nbclient")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' for nbclient")
    shutil.copy(NOTEBOOK, tmp_path / "tour.ipynb")
    for attempt in (1, 2):  # "Run All" twice: each run trains into a new run directory
        nb = nbformat.read(tmp_path / "tour.ipynb", as_version=4)
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "error"], attempt
        assert len(list((tmp_path / "runs").glob("*/model.safetensors"))) == attempt
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # curves, filters, activations, Grad-CAM, mistakes, conv, pool, channels, shapes, field
    assert len(images) >= 10
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Conv2d output shape: torch.Size([1, 10, 24, 24])" in text  # the summary
    last = [line for line in text.splitlines() if line.startswith("epoch 5:")]
    assert last and float(last[0].rsplit(" ", 1)[1]) > 0.8  # the 5-epoch run learned digits
    assert "classes 0, 1, 2" in text and " taken for a " in text  # names, not indices
