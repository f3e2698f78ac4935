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

# a 200x100 picture of a light "7" on black, opened on the page as a photo; and the same
# file sent to the API with the page's options
PHOTO_JS = """(async () => {
  const c = document.createElement('canvas'); c.width = 200; c.height = 100;
  const g = c.getContext('2d'); g.fillStyle = '#000'; g.fillRect(0, 0, 200, 100);
  g.strokeStyle = '#fff'; g.lineWidth = 8; g.beginPath();
  g.moveTo(80, 20); g.lineTo(120, 20); g.lineTo(95, 85); g.stroke();
  const blob = await new Promise(ok => c.toBlob(ok, 'image/png'));
  const form = new FormData(); form.append('file', blob, 'seven.png');
  const r = await fetch('/predict?top_k=1&frame=1', {method: 'POST', body: form});
  const api = (await r.json()).top[0].class;
  openPhoto(new File([blob], 'seven.png', {type: 'image/png'}));
  return JSON.stringify({api});
})()"""


def _draw_a_seven(browser: Browser) -> None:
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
            waiting = "getComputedStyle(document.getElementById('seen-wait')).display"
            assert browser.eval(waiting) == "flex"  # a labelled frame before the first answer
            assert "lenet5 trained on digits" in browser.eval("document.querySelector('h1').textContent")
            _draw_a_seven(browser)
            browser.wait_for("!document.getElementById('top-class').classList.contains('waiting')")
            browser.wait_for("document.getElementById('seen').naturalWidth === 28")
            shown = json.loads(browser.eval("""JSON.stringify({
                top: document.getElementById('top-class').textContent,
                pcts: [...document.querySelectorAll('#bars .pct')].map(e => e.textContent),
                best: [...document.querySelectorAll('#bars .name.best')].map(e => e.textContent),
                note: document.getElementById('seen-note').textContent,
                status: document.getElementById('status').textContent})"""))
            assert browser.eval(waiting) == "none"  # the input, not the label
            shot = browser.screenshot(tmp_path / "page.png")
            errors = browser.console_errors()
            browser.eval("document.getElementById('clear').click()")
            cleared = browser.eval("document.getElementById('top-class').className")
            photo = json.loads(browser.eval(PHOTO_JS))
            browser.wait_for("!document.getElementById('top-class').classList.contains('waiting')")
            browser.wait_for("document.getElementById('seen').naturalWidth === 28")
            photo["page"] = browser.eval("document.getElementById('top-class').textContent")
            photo["pad"] = browser.eval("""(() => { const p = document.getElementById('pad'),
                w = p.width, h = Math.round(w / 2), d = p.getContext('2d').getImageData(0, 0, w, w).data;
                return [d[4 * (5 * w + h)], d[4 * (h * w + 5)]]; })()""")  # top edge, left edge
        finally:
            browser.close()
    assert shown["top"] in run.classes and shown["best"] == [shown["top"]]
    total = sum(float(p.rstrip("%")) for p in shown["pcts"])
    assert len(shown["pcts"]) == 10 and total == pytest.approx(100, abs=1.5)
    assert "inverted" in shown["note"] and "answered in" in shown["status"]
    assert errors == [] and cleared == "waiting"
    # a wide photo of a light digit on black: shown whole (letterboxed in white), sent whole,
    # answered as the API answers the same file
    assert photo["page"] == photo["api"] and photo["pad"][0] == 255 and photo["pad"][1] < 50
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[1] == 1280 and pixels.std() > 10  # a page, not a blank frame


def test_on_a_phone_the_answer_is_in_view_under_the_canvas(lenet_run, tmp_path):
    """360x640 at 3 device pixels per CSS pixel: the pad draws at the screen's density (capped
    at 1024), the digits run offers MNIST framing (ticked, done by the server), and the top
    class is on screen without scrolling once a digit is drawn: on the canvas's corner."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    run = load_run(lenet_run, device="cpu")
    with _Server(run) as url:
        browser = Browser(chromium, width=360, height=640, scale=3, mobile=True)
        try:
            browser.open(url + "/")
            browser.wait_for("document.querySelectorAll('#bars .name').length === 10")
            waiting = "getComputedStyle(document.getElementById('seen-wait')).display"
            assert browser.eval(waiting) == "flex"  # a labelled frame before the first answer
            pad = json.loads(browser.eval("""JSON.stringify({w: document.getElementById('pad').width,
                css: document.getElementById('pad').getBoundingClientRect().width,
                frame: !document.getElementById('frame-box').hidden,
                ticked: document.getElementById('frame').checked})"""))
            _draw_a_seven(browser)
            browser.wait_for("!document.getElementById('top-class').classList.contains('waiting')")
            top = json.loads(browser.eval("""JSON.stringify({
                box: document.getElementById('badge').getBoundingClientRect(),
                badge: document.getElementById('badge').textContent,
                top: document.getElementById('top-class').textContent,
                width: document.documentElement.scrollWidth,
                note: document.getElementById('seen-note').textContent})"""))
            browser.screenshot(tmp_path / "phone.png")
            errors = browser.console_errors()
        finally:
            browser.close()
    assert pad["w"] == min(1024, round(pad["css"] * 3)) and pad["frame"] and pad["ticked"]
    assert top["box"]["top"] > 0 and top["box"]["bottom"] < 640 and top["box"]["height"] > 10
    assert top["badge"].startswith(top["top"]) and "%" in top["badge"]
    assert top["width"] <= 360  # no sideways scrolling
    assert "framed like MNIST" in top["note"] and errors == []


def test_the_heading_names_an_image_folder_by_its_name(letters_run, tmp_path):
    """A run on an image folder: the heading says folder 'letters', as training did, not
    folder."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    with _Server(load_run(letters_run, device="cpu")) as url:
        browser = Browser(chromium)
        try:
            browser.open(url + "/")
            browser.wait_for("document.querySelectorAll('#bars .name').length === 2")
            heading = browser.eval("document.querySelector('h1').textContent")
            browser.screenshot(tmp_path / "folder-page.png")
            errors = browser.console_errors()
        finally:
            browser.close()
    assert heading == "cnnlab · mnist-net trained on folder 'letters'" and errors == []
