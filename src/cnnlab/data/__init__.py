"""Data: sources decoded once to uint8 tensors, downloads, and the in-memory batch loader.

The layers, each in its own module: ``registry`` describes every data set (one entry
each, with its decoder and remote files), ``locate`` finds its files, ``sources/`` decode
them, ``cache`` keeps decoded splits, ``load`` puts these together, ``download`` fetches
files and ``loader`` serves batches. The names most callers need are re-exported here.
"""

from cnnlab.data.load import Split, load_split
from cnnlab.data.registry import dataset_names, dataset_title, get_info

__all__ = ["Split", "dataset_names", "dataset_title", "get_info", "load_split"]
