"""Models: the seed tutorials' networks, registered by name."""

from cnnlab.models.registry import (
    check_input_shape,
    create_model,
    get_model_info,
    init_weights,
    model_names,
    register_model,
)

__all__ = [
    "check_input_shape", "create_model", "get_model_info", "init_weights", "model_names",
    "register_model",
]
