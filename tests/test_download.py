"""The download path against a real HTTP server on 127.0.0.1.

Cases: a good file, a wrong checksum, a truncated transfer, a server that is down, and a
fallback from a failing mirror to a good one. Nothing half-written may be left behind.
"""

import gzip
import hashlib
import http.server
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import write_idx_dataset

from cnnlab.data import download as dl
from cnnlab.data import registry
from cnnlab.data.load import load_split
from cnnlab.errors import CnnlabError

PAYLOAD = gzip.compress(b"cnnlab test payload " * 500)


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server API
        mode, _, name = self.path.strip("/").partition("/")
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if mode == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # a truncated transfer announces the full length, then stops halfway
        self.wfile.write(body[: len(body) // 2] if mode == "truncated" else body)

    def log_message(self, *_):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/good"


def _remote(name="file.gz", body=PAYLOAD):
    _Handler.files = {name: body}
    return dl.RemoteFile(name, hashlib.md5(body).hexdigest(), ())


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_good_file(server, tmp_path):
    r = _remote()
    path = dl.download_file(r, tmp_path, "mnist", mirrors=(f"{server}/good",))
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["file.gz"]


@pytest.mark.parametrize("mode,reason", [("corrupt", "md5"), ("truncated", "truncated")])
def test_bad_transfer_is_refused_and_leaves_nothing(server, tmp_path, mode, reason):
    r = _remote()
    with pytest.raises(CnnlabError) as err:
        dl.download_file(r, tmp_path, "mnist", mirrors=(f"{server}/{mode}",), timeout=5)
    msg = str(err.value)
    assert "mnist" in msg and f"{server}/{mode}/file.gz" in msg and reason in msg
    assert "by hand" in msg and r.md5 in msg
    assert _leftovers(tmp_path) == []


def test_server_down(tmp_path):
    r = _remote()
    with pytest.raises(CnnlabError, match="could not download mnist file file.gz: tried http"):
        dl.download_file(r, tmp_path, "mnist", mirrors=(_closed_port_url(),), timeout=5)
    assert _leftovers(tmp_path) == []


def test_falls_back_to_next_mirror(server, tmp_path):
    r = _remote()
    mirrors = (_closed_port_url(), f"{server}/corrupt", f"{server}/good")
    path = dl.download_file(r, tmp_path, "mnist", mirrors=mirrors, timeout=5)
    assert path.read_bytes() == PAYLOAD


def test_download_dataset_then_load(server, tmp_path, monkeypatch):
    """A whole (tiny, synthetic) MNIST through the real download code, then loaded."""
    src = write_idx_dataset(tmp_path / "src", 9, 4)
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    _Handler.files = files
    remotes = [dl.RemoteFile(n, hashlib.md5(b).hexdigest(), (f"{server}/good",))
               for n, b in files.items()]
    mnist = replace(registry.DATASETS["mnist"], remote_files=tuple(remotes))
    monkeypatch.setitem(registry.DATASETS, "mnist", mnist)
    dest = dl.download_dataset("mnist", tmp_path / "data" / "mnist")
    assert len(load_split("mnist", "train", tmp_path / "data")) == 9
    # a second call finds every file with the right md5 and downloads nothing
    _Handler.files = {}
    dl.download_dataset("mnist", dest)


def test_cli_download_unknown_dataset():
    from click.testing import CliRunner

    from cnnlab.cli import cli

    res = CliRunner().invoke(cli, ["download", "digits"])
    assert res.exit_code != 0 and "cannot be downloaded" in res.output


def test_failed_dataset_download_leaves_no_empty_folder(tmp_path):
    with pytest.raises(CnnlabError, match="could not download"):
        dl.download_dataset("mnist", tmp_path / "new" / "data" / "mnist",
                            mirrors=(_closed_port_url(),), timeout=2)
    assert not (tmp_path / "new").exists()  # the parents it made are gone too
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "other").write_text("x")
    with pytest.raises(CnnlabError, match="could not download"):
        dl.download_dataset("mnist", tmp_path / "kept" / "mnist", mirrors=(_closed_port_url(),),
                            timeout=2)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["other"]
