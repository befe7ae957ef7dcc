"""Pano360 nodes: projection."""

from __future__ import annotations

NODES: list = []
