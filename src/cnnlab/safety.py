"""Refusing pickle files, wherever a user can hand cnnlab a file.

Loading a pickle (``torch.load``, ``pickle.load``, a ``.pt``/``.pth``/``.ckpt`` checkpoint from
the internet) can run arbitrary code: the file names a callable and its arguments, and the
unpickler calls it. cnnlab therefore never unpickles anything a user gives it: weights come
only from safetensors files and metadata only from JSON and YAML (``yaml.safe_load``). A
pickle handed over by mistake is recognised here *without* loading it (by its file name, its
first two bytes, or the ``data.pkl`` member of a ``torch.save`` zip) so the user gets one
clear line saying why it is refused and how to convert it, instead of a baffling parse error.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from cnnlab.errors import CnnlabError

#: suffixes of files that are (almost always) pickles: torch.save, pickle.dump, Lightning, HF
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"})

CONVERT_HINT = ("to bring weights from elsewhere, convert them to safetensors in code you trust: "
                "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')")


def has_pickle_content(path: str | Path) -> bool:
    """True when the file's bytes are a pickle: the PROTO opcode (0x80) followed by protocol
    2..5, or a zip (``torch.save``'s format since PyTorch 1.6) holding a ``data.pkl``.

    Only the first bytes and the zip directory are read; nothing is unpickled.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError:
        return False
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                return any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    return False


def looks_like_pickle(path: str | Path) -> bool:
    """True for a file named like a pickle (``.pt``, ``.pth``, ``.pkl``, ``.pickle``, ``.ckpt``,
    ``.bin``) or whose content is one (:func:`has_pickle_content`)."""
    path = Path(path)
    if not path.is_file():
        return False
    return path.suffix.lower() in PICKLE_SUFFIXES or has_pickle_content(path)


def is_torchscript(path: str | Path) -> bool:
    """True for a TorchScript archive (``torch.jit.save``, `cnnlab export --format
    torchscript`): a zip holding compiled ``code/`` beside its pickled constants."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names)


def pickle_message(path: str | Path, expected: str = "a run directory written by `cnnlab train`",
                   instead_of: str = "") -> str:
    """The one-line explanation for refusing ``path`` (``instead_of``: what it pretends to be)."""
    if is_torchscript(path):  # an export, most likely cnnlab's own: not weights to convert
        return (f"{path} is a TorchScript file (what `cnnlab export --format torchscript` "
                f"writes, for serving without cnnlab); give {expected}, the one it was "
                "exported from")
    what = f"a pickle file, not {instead_of}" if instead_of else "a pickle file"
    return (f"{path} is {what}; cnnlab never unpickles, because loading a pickle can run "
            f"arbitrary code; give {expected}; {CONVERT_HINT}")


def refuse_pickle(path: str | Path,
                  expected: str = "a run directory written by `cnnlab train`") -> None:
    """Raise a one-line :class:`CnnlabError` when ``path`` is a pickle file (see
    :func:`looks_like_pickle`); do nothing otherwise."""
    if looks_like_pickle(path):
        raise CnnlabError(pickle_message(path, expected))


def refuse_pickled_weights(path: str | Path) -> None:
    """Raise a one-line :class:`CnnlabError` when a weights file (``model.safetensors``, a
    checkpoint) holds a pickle: safetensors would only say "header too large", and the user
    should learn what the file really is (it is never unpickled either way)."""
    if has_pickle_content(path):
        raise CnnlabError(pickle_message(path, "a run directory written by `cnnlab train` "
                                               "(train this one again)", "safetensors"))
