"""`cnnlab serve`: every endpoint, every refusal, and batching that changes nothing but speed."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.cli import cli  # noqa: E402
from cnnlab.data import load_split  # noqa: E402
from cnnlab.data.images import model_view  # noqa: E402
from cnnlab.run import load_run  # noqa: E402
from cnnlab.serve.app import BodyLimit, ServeConfig, create_app  # noqa: E402


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digits():
    """Real test digits (light on dark, 8x8) scaled to 40x40 PNG files, with labels."""
    split = load_split("digits", "test")
    imgs = split.images[:24, 0].numpy()
    return [_png(np.asarray(Image.fromarray(a).resize((40, 40), Image.BILINEAR))) for a in imgs]


@pytest.fixture(scope="module", autouse=True)
def _pillow_limits_restored():
    """The service sets Pillow's process-wide pixel limit; other test modules get theirs back."""
    import warnings

    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        yield
    Image.MAX_IMAGE_PIXELS = before


@pytest.fixture(scope="module")
def run(lenet_run):
    return load_run(lenet_run, device="cpu")


def _client(run, **kw) -> TestClient:
    cfg = ServeConfig(run_dir=str(run.run_dir.path), device="cpu", **kw)
    limit = int(cfg.max_upload_mb * 2**20)
    return TestClient(BodyLimit(create_app(run, cfg), limit), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(run):
    with _client(run, max_upload_mb=0.25) as c:
        for _ in range(200):
            if c.get("/ready").status_code == 200:
                break
            time.sleep(0.05)
        yield c


def _expected(run, data: bytes, invert: str = "auto"):
    from cnnlab.serve.decode import decode_upload

    view, flipped = model_view(decode_upload(data, 10**7), run.preprocess, invert)
    return run.logits(view[None]).softmax(1)[0], flipped


def test_health_ready_and_model(client, run):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").json() == {"ready": True}
    info = client.get("/model").json()
    assert info["model"] == "lenet5" and info["classes"] == list(run.classes)
    assert info["input_shape"] == [1, 28, 28]
    assert info["preprocess"] == run.preprocess.to_dict()
    assert info["metrics"]["test_acc"] == pytest.approx(run.history[-1].test_acc)
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/predict" in page.text


def test_a_folder_run_is_titled_by_the_folders_name(letters_run, run):
    """/model keeps the config's data set name (folder) and adds the title the training
    table and the pictures use (folder 'letters'); the page's heading shows the title."""
    with _client(load_run(letters_run, device="cpu")) as c:
        info = c.get("/model").json()
        page = c.get("/").text
    assert info["dataset"] == "folder" and info["dataset_title"] == "folder 'letters'"
    assert "trained on ${info.dataset_title || info.dataset}" in page
    with _client(run) as c:
        assert c.get("/model").json()["dataset_title"] == "digits"


def test_predict_multipart_json_and_raw_agree_with_the_model(client, run, digits):
    data = digits[0]
    probs, _ = _expected(run, data)
    answers = [
        client.post("/predict?top_k=3", files={"file": ("d.png", data, "image/png")}),
        client.post("/predict?top_k=3", json={"image": base64.b64encode(data).decode()}),
        client.post("/predict?top_k=3",
                    json={"image": "data:image/png;base64," + base64.b64encode(data).decode()}),
        client.post("/predict?top_k=3", content=data),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        assert [t["class"] for t in body["top"]] == [run.classes[i] for i in probs.topk(3)[1]]
        assert body["top"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert body["inverted"] is False and body["blank"] is False
    full = client.post("/predict?top_k=all", content=data).json()["top"]
    assert len(full) == len(run.classes)
    assert sum(t["probability"] for t in full) == pytest.approx(1.0, abs=1e-4)


def test_a_single_tap_framed_is_marked_blank_and_a_small_digit_is_not(client):
    """One dot on the drawing pad: framing blows it up into a confident 0, so the answer is
    marked blank (it means little), as an empty canvas is. A drawn stroke is not, nor a
    small "7" on a big scan, which is what framing is for."""
    pad = np.full((280, 280), 255, np.uint8)
    pad[130:150, 130:150] = 0  # a tap of the default 22-pixel pen
    stroke = pad.copy()
    stroke[40:240, 130:150] = 0  # a "1"
    scan = np.full((1200, 1200), 250, np.uint8)
    scan[500:512, 500:590] = 20  # a 7 about 90 pixels tall: its bar
    for i in range(90):  # and its slanted stroke
        scan[512 + i, 585 - i // 2:597 - i // 2] = 20
    assert client.post("/predict?frame=true", content=_png(pad)).json()["blank"]
    for picture in (stroke, scan):
        assert not client.post("/predict?frame=true", content=_png(picture)).json()["blank"]


def test_the_page_gets_the_model_input_and_drawings_are_inverted(client, run, digits):
    ink = 255 - np.asarray(Image.open(io.BytesIO(digits[3])))  # dark digit on white paper
    rgba = np.dstack([ink, ink, ink, np.full_like(ink, 255)])
    r = client.post("/predict?show_input=1", files={"file": ("x.png", _png(rgba, "RGBA"))})
    body = r.json()
    assert r.status_code == 200 and body["inverted"] is True
    seen = Image.open(io.BytesIO(base64.b64decode(body["input"].split(",", 1)[1])))
    assert seen.size == (28, 28) and seen.mode == "L"
    view, flipped = model_view(torch_from(ink), run.preprocess, "auto")
    assert flipped and np.array_equal(np.asarray(seen), view[0].numpy())
    plain = client.post("/predict", content=digits[3]).json()
    assert plain["top"][0]["class"] == body["top"][0]["class"]
    kept = client.post("/predict?invert=no", files={"file": ("x.png", _png(rgba, "RGBA"))})
    assert kept.json()["inverted"] is False


def torch_from(arr: np.ndarray):
    import torch

    return torch.from_numpy(arr.copy())[None]


@pytest.mark.parametrize("make, status, words", [
    (lambda d: {"content": b"x" * 300_000}, 413, "over 0.25 MB"),
    (lambda d: {"content": iter([b"x" * 100_000] * 4)}, 413, "over 0.25 MB"),  # chunked
    (lambda d: {"files": {"file": ("d.png", b"%PDF-1.4 hello", "image/png")}}, 415, "first bytes"),
    (lambda d: {"content": b"GIF89a" + b"\0" * 20}, 400, "corrupt"),
    (lambda d: {"content": d[0][:200]}, 400, "corrupt or truncated"),
    (lambda d: {"content": _png(np.zeros((2100, 2100), np.uint8))}, 413, "4,410,000 pixels"),  # > 4 MP
    (lambda d: {"content": b""}, 400, "empty"),
    (lambda d: {"json": {"picture": "abc"}}, 400, 'no "image" string'),
    (lambda d: {"json": {"image": "***not base64***"}}, 400, "not valid base64"),
    (lambda d: {"content": b"{not json", "headers": {"content-type": "application/json"}},
     400, "not valid JSON"),
    (lambda d: {"files": {"note": (None, "hello")}}, 400, "no file"),
    (lambda d: {"content": b"garbage", "headers": {"content-type":
                                                          "multipart/form-data; boundary=x"}},
     400, "malformed multipart"),
])
def test_every_refusal_is_one_clear_json_line(client, digits, make, status, words):
    r = client.post("/predict", **make(digits))
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error and "\n" not in error and "Traceback" not in error


@pytest.mark.parametrize("query, words", [("top_k=0", "top_k must be"), ("top_k=two", "top_k"),
                                          ("invert=maybe", "invert must be")])
def test_bad_query_values(client, digits, query, words):
    r = client.post(f"/predict?{query}", content=digits[0])
    assert r.status_code == 400 and words in r.json()["error"]


def test_a_big_image_is_refused_before_decoding(run):
    """Pillow's own check is armed too: a PNG declaring 5000x5000 fails even with our cap
    lifted above it, because its warning is an error in the server process."""
    from cnnlab.serve.decode import UploadError, decode_upload, install_pillow_limits

    bomb = _png(np.zeros((5000, 5000), np.uint8))
    assert len(bomb) < 60_000  # small on the wire, 25 MP once decoded
    install_pillow_limits(100_000)  # Pillow's limit: 64x that, the most a JPEG may declare
    try:
        with pytest.raises(UploadError) as e:
            decode_upload(bomb, 10**9)
        assert e.value.status == 413
    finally:
        install_pillow_limits(4_000_000)


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=80, **kw)
    return buf.getvalue()


def test_a_phone_photo_decodes_at_reduced_scale_but_a_png_of_its_size_is_refused(client, run):
    """A 12 MP JPEG is 0.75 MP once decoded at 1/4 scale (under the 4 MP cap); the same
    pixels as a PNG would decode whole, so it is refused before decoding."""
    from cnnlab.serve.decode import decode_upload

    photo = np.full((3000, 4000), 255, np.uint8)
    photo[1000:2000, 1800:1900] = 0  # a dark "1" on white paper
    image = decode_upload(_jpeg(photo), 4_000_000)
    assert tuple(image.shape) == (1, 750, 1000)
    with _client(run, max_upload_mb=5) as c:
        c.app.app.state.service.ready.wait(30)
        r = c.post("/predict", content=_jpeg(photo))
        assert r.status_code == 200 and r.json()["inverted"] is True
        r = c.post("/predict", content=_png(photo))
        assert r.status_code == 413 and "4000x3000 (12,000,000 pixels" in r.json()["error"]


def test_options_beside_the_image_and_unknown_options_are_refused(client, digits):
    b64 = base64.b64encode(digits[0]).decode()
    r = client.post("/predict", json={"image": b64, "top_k": 1})
    assert r.status_code == 400 and "put top_k in the query string" in r.json()["error"]
    r = client.post("/predict", files={"file": ("d.png", digits[0])}, data={"top_k": "1"})
    assert r.status_code == 400 and "top_k" in r.json()["error"]
    r = client.post("/predict?top_k=1&top_k=2", content=digits[0])
    assert r.status_code == 400 and "top_k given more than once" in r.json()["error"]
    r = client.post("/predict?topk=1", content=digits[0])
    assert r.status_code == 400 and "unknown query parameter(s) topk" in r.json()["error"]
    r = client.post("/predict?show_input=maybe", content=digits[0])
    assert r.status_code == 400 and "show_input must be 1 or 0" in r.json()["error"]
    # the URL-safe alphabet, without padding, is the same image
    safe = base64.urlsafe_b64encode(digits[0]).decode().rstrip("=")
    assert "-" in safe or "_" in safe
    ok = client.post("/predict?top_k=1", json={"image": safe})
    assert ok.status_code == 200
    assert ok.json()["top"] == client.post("/predict?top_k=1", content=digits[0]).json()["top"]


def test_framing_like_mnist_on_the_server(client, run, digits):
    """``frame=1``: a digit drawn small in a corner of a big page reaches the model as the
    same centred 28x28 image whichever way round its ink is; the page is told to offer it."""
    assert client.get("/model").json()["framing"] == {"available": True, "digits": True}
    small = 255 - np.asarray(Image.open(io.BytesIO(digits[5])))  # dark on light
    page = np.full((300, 400), 255, np.uint8)
    page[10:50, 300:340] = small
    answers = [client.post("/predict?frame=1&show_input=1&top_k=all", content=_png(p)).json()
               for p in (page, 255 - page)]
    seen = [np.asarray(Image.open(io.BytesIO(base64.b64decode(a["input"].split(",")[1]))))
            for a in answers]
    assert np.array_equal(seen[0], seen[1])  # light or dark ink: one model input
    assert answers[0]["inverted"] is True and answers[1]["inverted"] is False
    ys, xs = np.nonzero(seen[0] > 30)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 in (19, 20, 21)
    w = seen[0].astype(float)
    assert abs((w.sum(1) * np.arange(28)).sum() / w.sum() - 14) < 1
    assert abs((w.sum(0) * np.arange(28)).sum() / w.sum() - 14) < 1
    unframed = client.post("/predict?show_input=1", content=_png(page)).json()
    assert unframed["input"] != answers[0]["input"]


def test_routes_head_pid_and_a_clean_openapi_schema(client, recwarn):
    assert client.head("/").status_code == 200
    assert client.head("/health").status_code == 200
    assert isinstance(client.get("/health").json()["pid"], int)
    schema = client.get("/openapi.json").json()
    ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert not [w for w in recwarn if "Duplicate Operation ID" in str(w.message)]
    params = {q["name"] for q in schema["paths"]["/predict"]["post"]["parameters"]}
    assert params == {"top_k", "invert", "frame", "show_input"}


def test_internal_errors_never_leak(run, digits, monkeypatch):
    with _client(run) as c:
        c.app.app.state.service.ready.wait(30)

        def boom(_images):
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr(c.app.app.state.service.batcher, "infer", boom)
        r = c.post("/predict", content=digits[0])
    assert r.status_code == 500
    assert "secret" not in r.text and "Traceback" not in r.text and "error" in r.json()
    assert c.get("/nope").json()["error"].startswith("Not Found; this service has")


def test_not_ready_until_warmed_up(run, digits):
    c = _client(run)  # no lifespan: never started, never warmed up
    assert c.get("/health").status_code == 200
    assert c.get("/ready").status_code == 503
    r = c.post("/predict", content=digits[0])
    assert r.status_code == 503 and "warming up" in r.json()["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A real uvicorn server on 127.0.0.1 in a thread."""

    def __init__(self, run, **kw):
        cfg = ServeConfig(run_dir=str(run.run_dir.path), device="cpu", **kw)
        app = BodyLimit(create_app(run, cfg), int(cfg.max_upload_mb * 2**20))
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        url = f"http://127.0.0.1:{self.port}"
        for _ in range(400):
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_concurrent_requests_are_batched_and_answer_as_sequential_ones(run, digits):
    with _Server(run, batch_window_ms=20, max_batch=16) as url:
        with httpx.Client() as h:
            one_by_one = [h.post(url + "/predict?top_k=all", content=d).json() for d in digits]
        before = httpx.get(url + "/health").json()

        def ask(d):
            with httpx.Client() as h:
                return h.post(url + "/predict?top_k=all", content=d).json()

        with ThreadPoolExecutor(len(digits)) as pool:
            together = list(pool.map(ask, digits))
        after = httpx.get(url + "/health").json()
    assert after["requests"] - before["requests"] == len(digits)
    assert after["batches"] - before["batches"] < len(digits)  # some requests shared a batch
    assert after["largest_batch"] > 1
    for a, b in zip(one_by_one, together, strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        for ta, tb in zip(a["top"], b["top"], strict=True):
            assert ta["probability"] == pytest.approx(tb["probability"], abs=1e-5)


def test_cli_refuses_bad_runs_and_missing_extra(tmp_path, lenet_run, monkeypatch):
    r = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert r.exit_code == 1 and "not a cnnlab run directory" in r.output
    r = CliRunner().invoke(cli, ["serve", str(lenet_run), "--max-upload-mb", "0"])
    assert r.exit_code == 1 and "--max-upload-mb must be a positive number" in r.output
    r = CliRunner().invoke(cli, ["serve", str(lenet_run), "--max-pixels", "10", "--port", "0"])
    assert r.exit_code == 1 and "--max-pixels 10 is below the model's own input (28x28 = 784 " \
        "pixels)" in r.output
    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)
    r = CliRunner().invoke(cli, ["serve", str(lenet_run)])
    assert r.exit_code == 1 and "pip install 'cnnlab[serve]'" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_serves_until_stopped(lenet_run):
    """The real command in its own process: listens on 127.0.0.1, answers, stops on SIGTERM."""
    import subprocess
    import sys

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(lenet_run), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        info = httpx.get(url + "/model").json()
        assert info["model"] == "lenet5"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert f"http://127.0.0.1:{port}/" in out and "Traceback" not in out
    assert json.dumps(info)  # it answered while running


def test_cli_says_when_the_port_is_taken(lenet_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = CliRunner().invoke(cli, ["serve", str(lenet_run), "--port", str(port)])
    assert r.exit_code == 1 and "cannot listen on 127.0.0.1" in r.output and "--port" in r.output


def test_base64_with_line_breaks_and_the_default_top_k_capped(run, digits):
    """`base64` (the tool) and MIME encoders wrap lines; --top-k above the class count
    means all classes, not a 500."""
    wrapped = base64.encodebytes(digits[0]).decode()
    assert "\n" in wrapped
    with _client(run, top_k=50) as c:
        c.app.app.state.service.ready.wait(30)
        r = c.post("/predict", json={"image": wrapped})
    assert r.status_code == 200 and len(r.json()["top"]) == len(run.classes)


def test_405_says_what_is_allowed_and_head_checks_work(client):
    r = client.get("/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert "POST /predict" in r.json()["error"]
    assert "POST /predict" in client.get("/nowhere").json()["error"]
    assert client.head("/health").status_code == 200 and client.head("/ready").status_code == 200


def test_a_failed_warm_up_is_reported_not_hidden(run, digits, monkeypatch):
    def broken(self, images):
        raise RuntimeError("out of memory (simulated)")

    from cnnlab.serve.app import Service

    monkeypatch.setattr(Service, "_infer", broken)
    with _client(run) as c:
        for _ in range(200):
            if c.get("/health").json()["status"] == "error":
                break
            time.sleep(0.02)
        health, ready = c.get("/health").json(), c.get("/ready")
        r = c.post("/predict", content=digits[0])
    assert "out of memory (simulated)" in health["error"]
    assert ready.status_code == 503 and "failed" in ready.json()["error"]
    assert r.status_code == 503 and "could not be warmed up" in r.json()["error"]


def test_the_batcher_survives_a_failing_batch():
    """Images of different shapes cannot be stacked: those requests fail, later ones work."""
    import asyncio

    import torch

    from cnnlab.serve.batcher import MicroBatcher

    async def main():
        b = MicroBatcher(lambda x: x.float().mean((1, 2, 3)), max_batch=8, window_ms=50)
        await b.start()
        bad = await asyncio.gather(b.submit(torch.zeros(1, 4, 4, dtype=torch.uint8)),
                                   b.submit(torch.zeros(1, 5, 5, dtype=torch.uint8)),
                                   return_exceptions=True)
        good = await asyncio.wait_for(b.submit(torch.full((1, 4, 4), 3, dtype=torch.uint8)), 5)
        await b.close()
        return bad, good

    bad, good = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) for e in bad) and float(good) == 3.0


def test_a_progressive_jpeg_counts_at_full_size_and_an_mpo_decodes_reduced(tmp_path):
    """libjpeg keeps a progressive JPEG's coefficients at full size whatever the output
    scale, so only baseline JPEGs (and MPO, a phone's JPEG with more pictures inside) get
    the reduced-scale headroom."""
    from cnnlab.data.images import read_image
    from cnnlab.serve.decode import UploadError, decode_upload

    flat = np.full((3000, 4000), 200, np.uint8)
    assert tuple(decode_upload(_jpeg(flat), 4_000_000).shape) == (1, 750, 1000)
    with pytest.raises(UploadError) as e:
        decode_upload(_jpeg(flat, progressive=True), 4_000_000)
    assert e.value.status == 413 and "4000x3000 (12,000,000 pixels" in e.value.message
    pic = Image.fromarray(flat)
    pic.save(tmp_path / "phone.mpo", format="MPO", save_all=True, append_images=[pic])
    with Image.open(tmp_path / "phone.mpo") as im:
        assert im.format == "MPO"
    assert tuple(read_image(tmp_path / "phone.mpo").shape) == (1, 750, 1000)
