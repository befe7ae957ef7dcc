"""Pano360 nodes: output."""

from __future__ import annotations

NODES: list = []
