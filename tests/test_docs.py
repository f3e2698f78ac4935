"""Every command block of the quickstarts (docs/vi.md, zh.md, es.md) runs, so they cannot rot.

Blocks run in order, in one fresh directory per document, with bash `set -e`: a failing
command fails the test with the block's text. `cnnlab train` gets `--epochs 1` and limits
appended (the last value of an option wins), so a block that trains stays short. Blocks that
install (venv, pip) are what CI itself runs first; blocks that need MNIST or Fashion-MNIST are
skipped, saying so, when ../shared/data is absent. ```python blocks run with this Python.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["docs/vi.md", "docs/zh.md", "docs/es.md"]
SHORT_TRAIN = """cnnlab() {
  if [ "$1" = train ]; then command cnnlab "$@" --epochs 1 --limit-train 2000 --limit-test 1000
  else command cnnlab "$@"; fi
}
set -e
"""


def blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(bash|python)\n(.*?)```", text, re.S)


@pytest.mark.parametrize("doc", DOCS)
def test_every_block_of_the_quickstart_runs(doc, tmp_path):
    text = (ROOT / doc).read_text(encoding="utf-8")
    found = blocks(text)
    assert len(found) >= 5, f"{doc} has too few command blocks"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MPLBACKEND": "Agg"}
    have_data = (SHARED_DATA / "mnist").is_dir()
    if have_data:
        env["CNNLAB_DATA"] = str(SHARED_DATA)
    ran = 0
    unmade: set[str] = set()  # run directories of skipped blocks: later blocks using them skip too
    for lang, body in found:
        if "pip install" in body or "venv" in body:
            continue  # the install: .ci/run does exactly this before the tests
        if not have_data and (
                re.search(r"\b(mnist|fashion-mnist|seed-mnist|d2l-lenet-fashion)\b", body)
                or any(out in body for out in unmade)):
            unmade.update(re.findall(r"--out\s+(\S+)", body))
            continue  # needs the real data sets
        cmd = ["bash", "-c", SHORT_TRAIN + body] if lang == "bash" else [sys.executable, "-c", body]
        res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"{doc}: this block failed:\n{body}\n{res.stdout[-1500:]}" \
                                    f"\n{res.stderr[-1500:]}"
        ran += 1
    assert ran >= 3


@pytest.mark.parametrize("doc", DOCS)
def test_the_figures_a_quickstart_shows_exist(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figures, f"{doc} embeds no figure"
    for fig in figures:
        assert (ROOT / "docs" / fig).is_file(), f"{doc}: missing figure {fig}"
