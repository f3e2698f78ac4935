"""The drawing page in a real browser: draw a stroke, see the probabilities and the model's
input appear (headless Chromium over the DevTools protocol; skipped where there is none)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
from browser import Browser, find_chromium  # noqa: E402
from test_serve import _Server  # noqa: E402

from cnnlab.run import load_run  # noqa: E402


def test_drawing_a_stroke_shows_probabilities_and_the_model_input(lenet_run, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    run = load_run(lenet_run, device="cpu")
    with _Server(run) as url:
        browser = Browser(chromium)
        try:
            browser.open(url + "/")
            browser.wait_for("document.querySelectorAll('#bars .name').length === 10")
            assert "lenet5 trained on digits" in browser.eval("document.querySelector('h1').textContent")
            box = json.loads(browser.eval(
                "JSON.stringify(document.getElementById('pad').getBoundingClientRect())"))
            x, y, s = box["x"], box["y"], box["width"]
            # a "7": a bar along the top, then down to the left
            corners = [(0.3, 0.25), (0.7, 0.25), (0.55, 0.55), (0.45, 0.8)]
            points = []
            for (x0, y0), (x1, y1) in zip(corners, corners[1:], strict=False):
                points += [(x + s * (x0 + (x1 - x0) * t / 10), y + s * (y0 + (y1 - y0) * t / 10))
                           for t in range(10)]
            browser.stroke(points + [(x + s * 0.45, y + s * 0.8)])
            browser.wait_for("document.getElementById('top-class').textContent !== '—'")
            browser.wait_for("document.getElementById('seen').naturalWidth === 28")
            shown = json.loads(browser.eval("""JSON.stringify({
                top: document.getElementById('top-class').textContent,
                pcts: [...document.querySelectorAll('#bars .pct')].map(e => e.textContent),
                best: [...document.querySelectorAll('#bars .name.best')].map(e => e.textContent),
                note: document.getElementById('seen-note').textContent,
                status: document.getElementById('status').textContent})"""))
            shot = browser.screenshot(tmp_path / "page.png")
            errors = browser.console_errors()
            browser.eval("document.getElementById('clear').click()")
            cleared = browser.eval("document.getElementById('top-class').textContent")
        finally:
            browser.close()
    assert shown["top"] in run.classes and shown["best"] == [shown["top"]]
    total = sum(float(p.rstrip("%")) for p in shown["pcts"])
    assert len(shown["pcts"]) == 10 and total == pytest.approx(100, abs=1.5)
    assert "inverted" in shown["note"] and "answered in" in shown["status"]
    assert errors == [] and cleared == "—"
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[1] == 1280 and pixels.std() > 10  # a page, not a blank frame
