"""Pano360 nodes: panodit."""

from __future__ import annotations

NODES: list = []
