"""The rich console every command prints tables through."""

from __future__ import annotations

from typing import Any


def console() -> Any:
    """A console that does not wrap tables in pipes and CI (no terminal: width 132)."""
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=True)
    if not con.is_terminal:
        con.width = 132
    return con
