"""Data: sources decoded once to uint8 tensors, downloads, preprocessing and the loader."""

from cnnlab.data.datasets import Split, get_info, load_split

__all__ = ["Split", "get_info", "load_split"]
