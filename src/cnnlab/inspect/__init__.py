"""Inspecting networks: per-layer shapes and parameters, conv/pool arithmetic."""
