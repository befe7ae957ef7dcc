"""The ``/object_info`` entries of every Pano360 node, computed without a server.

ComfyUI serves a V3 node's schema as ``cls.GET_NODE_INFO_V1()`` (server.py,
``node_info``) with ``python_module`` set to ``custom_nodes.<pack folder>`` by the
loader (nodes.py, ``load_custom_node``).  :func:`object_info` does the same, so the
recorded file ``workflows/schemas/<ComfyUI version>/pano360_object_info.json`` equals
what a live server of that version reports; ``tests/host/test_schemas.py`` checks that
against a real server.

Record it with ``bash .ci/hosts record-schemas`` (every supported ComfyUI version) or
``COMFYUI_ROOT=/path/to/ComfyUI python tests/host/record_schemas.py`` (one).
"""

from __future__ import annotations

import json

from ..client.schema import dumps_pack_schemas
from . import all_nodes

# The folder name ComfyUI loads the pack from decides ``python_module``.
DEFAULT_PYTHON_MODULE = "custom_nodes.pano360"


def object_info(python_module: str = DEFAULT_PYTHON_MODULE) -> dict[str, dict]:
    """``{node_id: info}`` for every Pano360 node, JSON-normalised exactly like the server's reply."""
    out: dict[str, dict] = {}
    for cls in all_nodes():
        info = cls.GET_NODE_INFO_V1()
        info["python_module"] = python_module
        out[info["name"]] = info
    # the server answers with json.dumps(); tuples become lists, keys stay in order
    return json.loads(json.dumps(out))


def dumps(info: dict[str, dict]) -> str:
    """The recorded file's text: stable order, one node per top-level key."""
    return dumps_pack_schemas(info)
