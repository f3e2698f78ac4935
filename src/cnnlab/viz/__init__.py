"""Plots; matplotlib is imported lazily inside the functions."""
