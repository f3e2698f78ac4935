"""Weight initialisation schemes, applied after a model is built (``--init``).

Kept apart from the registry: a scheme is a property of a training recipe (d2l's LeNet uses
Xavier), not of a network architecture.
"""

from __future__ import annotations

from torch import nn

from cnnlab.errors import CnnlabError


def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialise conv and linear weights: 'default' keeps PyTorch's, 'xavier' as d2l."""
    if scheme == "default":
        return
    if scheme != "xavier":
        raise CnnlabError(f"unknown init '{scheme}'; choose default or xavier")
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
