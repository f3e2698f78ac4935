"""Models: the tutorials' networks, d2l's modern CNNs, cnnlab's fast nets and 1-D nets for
time series, registered by name.

Importing this package imports every family module, which registers its models; the
registry itself (``registry.py``) only holds the dict.
"""

from cnnlab.models import airbench, fastnet, lenet, mlp, mnist_net  # noqa: E402,F401,I001
from cnnlab.models import mnist_advanced, series, simple_cnn  # noqa: E402,F401,I001
from cnnlab.models import modern  # noqa: E402,F401,I001 - d2l's modern CNNs, listed last
from cnnlab.models.init import init_weights  # noqa: E402
from cnnlab.models.registry import (
    ModelInfo,
    check_input_shape,
    create_model,
    find_layer,
    get_model_info,
    layer_names,
    model_names,
    register_model,
    series_model_names,
    upgrade_state_dict,
)

__all__ = [
    "ModelInfo", "check_input_shape", "create_model", "find_layer", "get_model_info",
    "init_weights", "layer_names", "model_names", "register_model", "series_model_names",
    "upgrade_state_dict",
]
