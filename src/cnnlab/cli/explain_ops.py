"""`cnnlab explain conv|pool|channels`: the operations on small grids of numbers."""

from __future__ import annotations
