"""Pano360's ComfyUI nodes (V3 API).

One module per topic; each lists its node classes in ``NODES``.  This package imports
ComfyUI (through ``_host``) and is only imported by ComfyUI via ``comfy_entrypoint``
or by tests that run against a real ComfyUI.
"""

from __future__ import annotations

import importlib

from ._host import ComfyExtension, io

# Topic modules, in the order their nodes appear in the node library.
TOPICS = ("projection", "output", "multiview", "seam", "panodit", "lookbeyond", "argus")


def all_nodes() -> list[type[io.ComfyNode]]:
    nodes: list[type[io.ComfyNode]] = []
    for topic in TOPICS:
        module = importlib.import_module(f".{topic}", __name__)
        nodes.extend(module.NODES)
    return nodes


class Pano360Extension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return all_nodes()
