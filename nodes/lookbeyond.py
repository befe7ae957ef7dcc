"""Pano360 nodes: lookbeyond."""

from __future__ import annotations

NODES: list = []
