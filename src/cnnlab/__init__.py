"""cnnlab: build, inspect, train, evaluate and visualise CNNs in PyTorch.

Importing the package does no work: submodules are imported where they are used, so
``import cnnlab`` stays fast and needs no optional package.
"""

__version__ = "0.1.0"
