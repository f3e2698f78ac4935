"""The rich console every command prints tables through."""

from __future__ import annotations

from typing import Any


def console() -> Any:
    """A console that does not wrap tables in pipes and CI (no terminal: width 132), and
    never reads rich markup in what it prints: file names, class names and messages print
    as they are (``scan[red].png``, ``pip install 'cnnlab[series]'``); styles are given as
    :class:`rich.text.Text` or ``style=``."""
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=True, markup=False)
    if not con.is_terminal:
        con.width = 132
    return con
