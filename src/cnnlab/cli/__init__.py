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
            failure = click.ClickException(str(e))
            failure.exit_code = e.exit_code  # 130 for an interrupted command
            raise failure from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(__version__, prog_name="cnnlab")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Build, inspect, train, evaluate and visualise CNNs in PyTorch."""
    import os

    command = ctx.invoked_subcommand
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ
    if command not in (None, "train") and torchrun:
        raise CnnlabError(f"only `cnnlab train` runs in several processes (torchrun set "
                          f"WORLD_SIZE={os.environ['WORLD_SIZE']}); run `cnnlab {command}` as "
                          "one process, without torchrun")


def main() -> None:
    """The console script: click's handling, except that Ctrl-C anywhere exits 130 with one
    word (click's own "Aborted!" exits 1) and a plain `kill` unwinds like Ctrl-C (so atomic
    writes remove their temporary files) and exits 143."""
    import os
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        try:
            code = cli.main(prog_name="cnnlab", standalone_mode=False)
        except (click.exceptions.Abort, KeyboardInterrupt):  # Ctrl-C outside a handler
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except SystemExit as e:  # (no import here: Ctrl-C may have cut one short)
            if e.code == 143 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # not per rank
                click.echo("terminated (SIGTERM)", err=True)
            raise
        sys.exit(code if isinstance(code, int) else 0)
    finally:  # on the way out: a SIGTERM now (torchrun stopping a rank that is already
        # leaving) must not raise inside Python's exit handlers and print their traceback
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


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
