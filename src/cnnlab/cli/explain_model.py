"""`cnnlab explain receptive-field|shapes MODEL`: pictures of a whole network."""

from __future__ import annotations
