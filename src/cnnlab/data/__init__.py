"""Data: sources decoded once to uint8 tensors, downloads, and the in-memory batch loader."""
