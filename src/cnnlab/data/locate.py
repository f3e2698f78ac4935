"""Finding a data set's files on disk, and saying where they are (or would go).

Files are looked for under, in order: ``--data-dir``, ``$CNNLAB_DATA``, then the user data
directory (where ``cnnlab download`` puts them). Under each root, a data set may sit in its
own folder (``mnist/``), in the layout torchvision users already have (``MNIST/raw/``),
or directly in the root. How a data set is recognised comes from its registry entry
(``subdirs``, ``required``, ``image_tree``, ``needs_data_dir``, ``embedded``), so callers
such as the CLI need no per-data-set cases.
"""

from __future__ import annotations

import os
from pathlib import Path

from cnnlab.data.registry import DatasetInfo, get_info
from cnnlab.data.sources import has_source_file
from cnnlab.errors import CnnlabError


def default_data_root() -> Path:
    """The user data directory where ``cnnlab download`` puts files."""
    import platformdirs

    return Path(platformdirs.user_data_dir("cnnlab")) / "data"


def search_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """Data roots in lookup order: --data-dir, $CNNLAB_DATA, the user data directory."""
    roots = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("CNNLAB_DATA"):
        roots.append(Path(os.environ["CNNLAB_DATA"]).expanduser())
    roots.append(default_data_root())
    return roots


def check_data_dir(data_dir: str | os.PathLike | None, name: str | None = None) -> None:
    """Refuse a ``--data-dir`` that is not a folder: a mistyped one must not fall through to
    ``$CNNLAB_DATA`` and the user data directory, and quietly train on other files."""
    if data_dir is None or Path(data_dir).expanduser().is_dir():
        return
    what = "is a file, not a folder" if Path(data_dir).expanduser().exists() else "does not exist"
    holds = f"'{name}'" if name else "the data sets"
    raise CnnlabError(f"--data-dir {data_dir} {what}; pass the folder that holds {holds} (or "
                      "leave --data-dir out to search the usual places)")


def _holds(info: DatasetInfo, candidate: Path) -> bool:
    """Whether ``candidate`` (a folder, or a zip for image trees) holds the data set."""
    if info.image_tree:
        return candidate.is_file() or (candidate / "train").is_dir()
    return candidate.is_dir() and all(has_source_file(candidate, f) for f in info.required)


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """Return the folder (or zip) holding data set ``name``, or None when it is not found."""
    info = get_info(name)
    if info.embedded:
        return None
    if info.needs_data_dir:
        if data_dir is None:
            raise CnnlabError(f"the '{name}' data set needs --data-dir ROOT (a folder or a .zip)")
        root = Path(data_dir).expanduser()
        return root if root.exists() else None
    check_data_dir(data_dir, info.name)
    wrong: CnnlabError | None = None  # a place holding another set's files: looked past
    for root in search_roots(data_dir):
        for sub in info.subdirs:
            candidate = (root / sub) if sub != "." else root
            if _holds(info, candidate):
                other = _another_sets_files(info, candidate)
                if other is None:
                    return candidate
                wrong = wrong or CnnlabError(
                    f"the files in {candidate} are {other}'s, not {info.name}'s (their "
                    f"checksums say so); use --dataset {other}, or point --data-dir at "
                    f"{info.name}'s files")
    if wrong is not None:
        raise wrong
    return None


def _another_sets_files(info: DatasetInfo, folder: Path) -> str | None:
    """MNIST and Fashion-MNIST share file names and headers, so ``--data-dir`` pointed at one
    for the other would train on the wrong images under the right class names: the data set
    whose published .gz file (the smallest one here, a few kB, is read) ``folder`` holds
    instead of ``info``'s, or None."""
    from cnnlab.data.download import md5_of
    from cnnlab.data.registry import dataset_names

    mine = {f.name: f.md5 for f in info.remote_files}
    for other in dataset_names():
        theirs = {f.name: f.md5 for f in get_info(other).remote_files} if other != info.name \
            else {}
        shared = [n for n in theirs if n in mine and theirs[n] != mine[n]
                  and (folder / n).is_file()]
        if not shared:
            continue
        smallest = min(shared, key=lambda n: (folder / n).stat().st_size)
        if md5_of(folder / smallest) == theirs[smallest]:
            return other
    return None


def not_found_error(name: str, data_dir: str | os.PathLike | None) -> CnnlabError:
    """The error for a data set whose files are missing: where we looked, what to do."""
    info = get_info(name)
    if info.needs_data_dir:
        return CnnlabError(f"image folder {data_dir} does not exist; check --data-dir")
    searched = ", ".join(str(r) for r in search_roots(data_dir))
    how = f"run `cnnlab download {name}`, or " if info.remote_files else ""
    where = info.subdirs[0] if info.subdirs else ""
    where += "" if not where or where.endswith(".zip") else "/"  # a zip is a file, not a folder
    from cnnlab.data.registry import dataset_names

    # a sibling that is there (cifar10 asked for, the cifar10-jpeg copy found)
    there = [other for other in dataset_names() if other != name
             and (other.startswith(name) or name.startswith(other))
             and not get_info(other).embedded and not get_info(other).needs_data_dir
             and _found(other, data_dir)]
    hint = f" ({', '.join(there)} is there: --dataset {there[0]})" if there else ""
    return CnnlabError(
        f"data set '{name}' not found under {searched}{hint}; {how}put its files in "
        f"<root>/{where} and pass --data-dir <root> or set CNNLAB_DATA"
    )


def _found(name: str, data_dir: str | os.PathLike | None) -> bool:
    """Whether :func:`locate` finds ``name`` (a place with another set's files: no)."""
    try:
        return locate(name, data_dir) is not None
    except CnnlabError:
        return False


def describe_location(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Where ``cnnlab datasets`` says the data set is: embedded, --data-dir, a path, or not found."""
    info = get_info(name)
    if info.embedded:
        return f"embedded ({info.source})"
    if info.needs_data_dir:
        return "--data-dir ROOT"
    try:
        found = locate(name, data_dir)
    except CnnlabError:  # another set's files where this one's should be: say so
        return "not found (another data set's files are where it would be)"
    return str(found) if found else "not found"


def default_download_dir(name: str) -> Path:
    """Where ``cnnlab download NAME`` puts the files without --dir: ``<user data dir>/NAME``.

    Every downloadable data set lists ``NAME`` (or ``NAME/<the archive's folder>``) among its
    ``subdirs``, so what lands here is found again by :func:`locate`.
    """
    return default_data_root() / get_info(name).name
