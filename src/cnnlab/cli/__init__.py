"""The ``cnnlab`` command: one module per group of commands, each thin (parse, call one
library function, print).

Every user-facing failure arrives here as a :class:`~cnnlab.errors.CnnlabError` and is
printed as one line (``Error: ...``) with a non-zero exit; no traceback for mistakes a user
can fix. Importing this package imports only click and the command modules, which import
the library lazily inside each command, so ``cnnlab --help`` stays quick.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cnnlab import __version__
from cnnlab.errors import CnnlabError


class _Group(click.Group):
    """Turn CnnlabError into click's one-line ``Error: ...`` and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CnnlabError as e:
            from cnnlab.distributed import current

            if not current().is_main:  # under torchrun every rank fails alike: rank 0 says it
                raise SystemExit(1) from None
            raise click.ClickException(str(e)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(__version__, prog_name="cnnlab")
def cli() -> None:
    """Build, inspect, train, evaluate and visualise CNNs in PyTorch."""


def main() -> None:
    import signal

    # a plain `kill` unwinds like Ctrl-C, so atomic writes remove their temporary files
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cli(prog_name="cnnlab")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit as e:
        from cnnlab.distributed import launched_by_torchrun

        if e.code == 143 and not launched_by_torchrun():  # said once: not by every rank
            click.echo("terminated (SIGTERM)", err=True)
        raise


# registering the commands: each module adds its commands to ``cli``
from cnnlab.cli import (  # noqa: E402,F401
    catalogue,
    explain,
    export,
    features,
    inspect,
    lr_find,
    predict,
    runs,
    serve,
    train,
    visualize,
)

__all__ = ["cli", "main"]
