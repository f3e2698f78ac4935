"""Downloading data set files from several mirrors, checked by md5, written atomically.

Each file is fetched into a temporary file beside its destination, its md5 compared with
the upstream checksum, and only then renamed into place, so an interrupted or corrupt
download never looks like a valid file. When every mirror fails, one error names the data
set, every URL tried with its reason, and where to put the files by hand. What to fetch
comes from the registry entry's ``remote_files``.
"""

from __future__ import annotations

import hashlib
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cnnlab.data.registry import dataset_names, get_info
from cnnlab.data.remote import RemoteFile
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_path, missing_folders, remove_empty


def downloadable() -> list[str]:
    """The data sets that can be downloaded: those whose registry entry lists remote files."""
    return [n for n in dataset_names() if get_info(n).remote_files]


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    h = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Stream ``url`` into ``dest``; raise on HTTP errors and on short transfers."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - URLs are ours
        expected = resp.headers.get("Content-Length")
        written = 0
        with dest.open("wb") as out:
            while block := resp.read(1 << 16):
                out.write(block)
                written += len(block)
    if expected is not None and written != int(expected):
        raise OSError(f"truncated transfer: got {written} of {expected} bytes")


def download_file(
    remote: RemoteFile,
    directory: Path,
    dataset: str,
    mirrors: tuple[str, ...] | None = None,
    timeout: float = 30.0,
    log: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """Download one file into ``directory`` from the first mirror that gives the right md5."""
    dest = directory / remote.name
    if dest.exists() and md5_of(dest) == remote.md5:
        return dest
    tried: list[str] = []
    for base in mirrors or remote.mirrors:
        url = base.rstrip("/") + "/" + remote.name
        log(f"downloading {url}")
        try:
            with atomic_path(dest) as tmp:
                _fetch(url, tmp, timeout)
                got = md5_of(tmp)
                if got != remote.md5:
                    raise OSError(f"md5 {got} != expected {remote.md5}")
            return dest
        except (OSError, urllib.error.URLError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            tried.append(f"{url} ({reason})")
    raise CnnlabError(
        f"could not download {dataset} file {remote.name}: tried " + "; ".join(tried)
        + f". Download it by hand and place it in {directory} (md5 {remote.md5})"
    )


def download_dataset(
    name: str,
    directory: Path,
    mirrors: tuple[str, ...] | None = None,
    timeout: float = 30.0,
    log: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """Download every file of data set ``name`` into ``directory`` and unpack archives."""
    names = downloadable()
    if name not in names:
        raise CnnlabError(
            f"data set '{name}' cannot be downloaded; downloadable: {', '.join(names)}"
        )
    made = missing_folders(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        for remote in get_info(name).remote_files:
            path = download_file(remote, directory, name, mirrors, timeout, log)
            if path.name.endswith(".tar.gz"):
                _extract_tar(path, directory)
    except CnnlabError:
        remove_empty(made)  # leave no trace of a download that got nothing, parents included
        raise
    return directory


def _extract_tar(path: Path, directory: Path) -> None:
    """Extract a tarball, refusing members that would land outside ``directory``."""
    try:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                target = (directory / member.name).resolve()
                if not target.is_relative_to(directory.resolve()) or not (
                    member.isfile() or member.isdir()
                ):
                    raise CnnlabError(f"{path} contains an unsafe member '{member.name}'")
            tar.extractall(directory)  # noqa: S202 - members checked above
    except tarfile.TarError as e:
        raise CnnlabError(f"{path} is not a valid tar.gz ({e}); delete it and download again") from e
