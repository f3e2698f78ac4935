"""`cnnlab report`: one self-contained HTML file with the run's own numbers, which a real
browser renders without a console error or a broken image."""

import base64
import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.config import build_config
from cnnlab.engine.interpret import interpret
from cnnlab.engine.train import fit
from cnnlab.viz.report import build_report

CHECKER = """<script>
window.__errs = [];
window.addEventListener('error', e => window.__errs.push(e.message ||
  ('failed to load ' + (e.target && (e.target.src || e.target.href || e.target.tagName)))), true);
const _ce = console.error; console.error = (...a) => { window.__errs.push(a.join(' ')); _ce(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const pre = document.createElement('pre'); pre.id = 'cnnlab-check';
  pre.textContent = JSON.stringify({images: imgs.length, broken, errors: window.__errs,
                                    height: document.body.scrollHeight});
  document.body.appendChild(pre);
});
</script>"""


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    runs = []
    for name, lr in (("a", 0.05), ("b", 0.02)):
        cfg = build_config(None, {"model": "lenet5", "dataset": "digits", "resize": 28,
                                  "epochs": 2, "batch_size": 64, "lr": lr, "init": "xavier",
                                  "out": str(root / name)})
        fit(cfg, log=lambda _m: None)
        runs.append(root / name)
    return runs


def _images(doc: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', doc)]


def test_one_run_report_is_self_contained_and_holds_the_runs_numbers(two_runs):
    run = two_runs[0]
    path = build_report([run])
    assert path == run / "report.html"
    doc = path.read_text(encoding="utf-8")
    # nothing from the network: every src/href is inline
    refs = re.findall(r'(?:src|href)="([^"]*)"', doc)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "http://" not in doc and "https://" not in doc and "<script" not in doc
    pngs = _images(doc)
    assert len(pngs) >= 6 + 7  # curves, confusion, Grad-CAM, 2 filters, activations + pairs
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    truth = interpret(run, device="cpu")
    assert f"{truth.accuracy:.2%}" in doc  # the headline is the run's own accuracy
    for k, name in enumerate(truth.classes):  # per-class table: one row per class
        acc = float(truth.confusion[k, k]) / int(truth.confusion[k].sum())
        assert f"<td>{name}</td><td class=\"num\">{acc:.2%}</td>" in doc
    t, p, n = truth.most_confused()[0]
    assert f"{t} taken for {p}: {n} images" in doc
    for heading in ("Training curves", "Confusion matrix", "Most-confused pairs",
                    "Top losses, and where the model looked", "filters of <code>conv1</code>",
                    "filters of <code>conv2</code>", "for one example of each class"):
        assert heading in doc


def test_comparison_shows_only_the_settings_that_differ(two_runs, tmp_path):
    out = tmp_path / "cmp.html"
    r = CliRunner().invoke(cli, ["report", *map(str, two_runs), "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = out.read_text(encoding="utf-8")
    settings = doc.split("Settings that differ")[1].split("</section>")[0]
    assert "<code>lr</code></td><td>0.05</td><td>0.02</td>" in settings
    assert "<code>model</code>" not in settings and "<code>out</code>" not in settings
    assert "Curves, overlaid" in doc and doc.count('class="run-title"') == 2


def test_bad_input_is_one_line_and_writes_nothing(two_runs, tmp_path):
    for args, msg in [([str(tmp_path)], "not a cnnlab run directory"),
                      ([str(tmp_path / "nope")], "does not exist"),
                      ([str(two_runs[0]), "--out", str(tmp_path / "r.pdf")], "must end in .html")]:
        r = CliRunner().invoke(cli, ["report", *args])
        assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_the_report_renders_in_a_real_browser(two_runs, tmp_path):
    """Headless Chromium loads the comparison report: every image decodes, and the console
    has no error (installed by .ci/run; `apt-get install chromium` elsewhere)."""
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium) for the browser test")
    path = build_report(two_runs, tmp_path / "cmp.html")
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text(encoding="utf-8").replace("<head>", "<head>" + CHECKER, 1),
                     encoding="utf-8")
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120)
    found = re.search(r'<pre id="cnnlab-check">(.*?)</pre>', res.stdout)
    assert found, res.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["images"] == len(_images(path.read_text(encoding="utf-8")))
    assert check["broken"] == [] and check["errors"] == []
    assert check["height"] > 3000  # laid out, not collapsed
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []


def test_an_unfinished_run_and_a_run_given_twice(two_runs, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(two_runs[0], unfinished)
    cfg = unfinished / "config.yaml"
    cfg.write_text(cfg.read_text().replace("epochs: 2", "epochs: 5"))
    doc = build_report([unfinished]).read_text(encoding="utf-8")
    assert "epochs of 5 planned: unfinished" in doc
    r = CliRunner().invoke(cli, ["report", str(two_runs[0]), str(two_runs[0]) + "/"])
    assert r.exit_code == 1 and "given twice" in r.output
