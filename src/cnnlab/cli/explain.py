"""`cnnlab explain ...`: each tutorial concept as one command and a picture."""

from __future__ import annotations

from cnnlab.cli import cli


@cli.group()
def explain() -> None:
    """Pictures of the tutorials' concepts: convolution, pooling, channels, receptive fields,
    the shapes of a network."""


# the subcommands live in their own modules, each adding itself to this group
from cnnlab.cli import explain_model, explain_ops  # noqa: E402,F401
