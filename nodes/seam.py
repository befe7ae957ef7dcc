"""Pano360 nodes: seam."""

from __future__ import annotations

NODES: list = []
