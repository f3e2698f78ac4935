"""Click options generated from :class:`~cnnlab.config.TrainConfig`'s fields.

The option's type comes from the field's type hint: ``int``/``float`` become click's
numbers, ``bool`` an on/off flag pair, and a ``Literal[...]`` a :class:`click.Choice`, so
``--optimizer sgdd`` is refused at parse time with the list of valid values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from cnnlab.config import TrainConfig, base_type, field_types, literal_choices
from cnnlab.errors import CnnlabError


def option_for(field: dataclasses.Field, hint: Any, default: Any = None) -> Callable:
    """The click option for one config field (``default=None``: "not given")."""
    flag = "--" + field.name.replace("_", "-")
    shown = "" if field.default is None else f" [default: {field.default}]"
    help_text = f"{field.metadata['help']}{shown}"
    allowed = literal_choices(hint)
    if allowed is not None:
        return click.option(flag, field.name, type=click.Choice(allowed), default=default,
                            help=help_text)
    t = base_type(hint)
    if t is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", field.name, default=default,
                            help=help_text)
    typ = int if t is int else float if t is float else str
    return click.option(flag, field.name, type=typ, default=default, help=help_text)


def config_options(names: list[str] | None = None) -> Callable:
    """Decorator adding one ``--option`` per TrainConfig field (or per field in ``names``)."""
    hints = field_types()

    def wrap(fn: Callable) -> Callable:
        for f in reversed(dataclasses.fields(TrainConfig)):
            if names is None or f.name in names:
                fn = option_for(f, hints[f.name])(fn)
        return fn

    return wrap


def layer_names(given: tuple[str, ...]) -> list[str]:
    """``--layer`` values, each repeatable and comma-separated (``--layer conv1 --layer conv2``
    and ``--layer conv1,conv2`` are the same), each once and in the order given; a one-line
    error for an empty name."""
    names = [n.strip() for value in given for n in value.split(",")]
    if not all(names):
        shown = " ".join(f"--layer '{v}'" for v in given)
        raise CnnlabError(f"{shown} has an empty name; give layer names separated by commas, "
                          "e.g. conv1,conv2")
    return list(dict.fromkeys(names))  # `--layer conv1 --layer conv1` draws conv1 once
