"""Pano360's ComfyUI nodes (V3 API).

One module per topic; each lists its node classes in ``NODES``.  The topic modules import
ComfyUI (through ``_host``); this package file itself does not, so host-free helpers such
as ``nodes._common`` stay importable (and testable) without ComfyUI.  ComfyUI reaches the
nodes through ``comfy_entrypoint`` -> :func:`make_extension`.
"""

from __future__ import annotations

import importlib

# Topic modules, in the order their nodes appear in the node library.
TOPICS = ("projection", "cameras", "output", "settings", "multiview", "videopanda", "seam", "spherical", "panodit", "lookbeyond",
          "argus", "videofrom3d", "diffpano")


def all_nodes() -> list[type]:
    """Every Pano360 node class (``io.ComfyNode`` subclasses), in library order."""
    nodes: list[type] = []
    for topic in TOPICS:
        module = importlib.import_module(f".{topic}", __name__)
        nodes.extend(module.NODES)
    return nodes


def make_extension():
    """The V3 ``ComfyExtension`` listing every Pano360 node."""
    from ._host import ComfyExtension, register_batch_routes

    register_batch_routes()

    class Pano360Extension(ComfyExtension):
        async def get_node_list(self) -> list[type]:
            return all_nodes()

    return Pano360Extension()
