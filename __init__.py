"""Pano360: 360° panoramas and 360° videos for ComfyUI.

ComfyUI imports this file when the pack sits in ``ComfyUI/custom_nodes/``.  Nothing
heavy happens at import time: the node modules (and with them ComfyUI's own API) are
imported only when ComfyUI calls :func:`comfy_entrypoint`.

The geometry (``projection``), the networks (``models``) and the samplers
(``pipelines``) never import ComfyUI and can be used as a plain library::

    from pano360.projection import ...
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """V3 entry point: returns the extension that lists every Pano360 node."""
    from .nodes import make_extension

    return make_extension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
