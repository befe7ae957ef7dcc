"""Pano360 nodes: multiview."""

from __future__ import annotations

NODES: list = []
