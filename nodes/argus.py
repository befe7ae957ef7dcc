"""Pano360 nodes: argus."""

from __future__ import annotations

NODES: list = []
