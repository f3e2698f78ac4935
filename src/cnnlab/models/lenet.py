"""LeNet-5 as d2l builds it (sigmoid + average pooling), and the d2l exercise variant.

``lenet5-relu`` swaps sigmoid for ReLU and average for max pooling, which d2l suggests
trying; the layer sizes are unchanged so the two can be compared directly.
"""

from torch import nn

from cnnlab.models.registry import register_model


def _lenet(act: type[nn.Module], pool: type[nn.Module], num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), act(),  # (1,28,28) -> (6,28,28)
        pool(kernel_size=2, stride=2),  # -> (6,14,14)
        nn.Conv2d(6, 16, kernel_size=5), act(),  # -> (16,10,10)
        pool(kernel_size=2, stride=2),  # -> (16,5,5)
        nn.Flatten(),  # -> 400
        nn.Linear(16 * 5 * 5, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes),
    )


# d2l's LeNet is an nn.Sequential, so its modules keep their indices (weights load into
# d2l's own net); these aliases name them wherever a layer is given on the command line.
LENET_ALIASES = {"conv1": "0", "act1": "1", "pool1": "2", "conv2": "3", "act2": "4",
                 "pool2": "5", "flatten": "6", "fc1": "7", "act3": "8", "fc2": "9", "act4": "10",
                 "fc3": "11"}


@register_model("lenet5", (1, 28, 28), "LeNet-5: sigmoid, average pooling, 120-84-10",
                "d2l LeNet", aliases=LENET_ALIASES)
def lenet5(num_classes: int = 10) -> nn.Module:
    return _lenet(nn.Sigmoid, nn.AvgPool2d, num_classes)


@register_model("lenet5-relu", (1, 28, 28), "LeNet-5 with ReLU and max pooling (d2l exercise)",
                "d2l LeNet exercise", aliases=LENET_ALIASES)
def lenet5_relu(num_classes: int = 10) -> nn.Module:
    return _lenet(nn.ReLU, nn.MaxPool2d, num_classes)
