"""Run an API-format workflow in process, node by node, with ComfyUI's own node classes.

Every node runs its real code (core V1 nodes through their FUNCTION, V3 nodes through a class
clone's ``execute``, the pack's nodes likewise), in dependency order with links resolved,
except the nodes named in ``substitutes``: there a test puts a tiny in-memory stand-in
(typically the loaders of weights no test can download, and text encoders whose sizes are
fixed by ComfyUI's configs).  Used by the host tests that run bundled workflows end to end.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

_NODES: dict[str, type] | None = None


def node_classes() -> dict[str, type]:
    """ComfyUI's node classes (core and comfy_extras) and the pack's, by class_type."""
    global _NODES
    if _NODES is None:
        import nodes

        if "SamplerCustomAdvanced" not in nodes.NODE_CLASS_MAPPINGS:
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        from pano360.nodes import all_nodes

        _NODES = dict(nodes.NODE_CLASS_MAPPINGS)
        _NODES.update({cls.GET_SCHEMA().node_id: cls for cls in all_nodes()})
    return _NODES


def _clone(cls):
    params = inspect.signature(cls.PREPARE_CLASS_CLONE).parameters
    return cls.PREPARE_CLASS_CLONE({"hidden_inputs": {}} if "v3_data" in params else {})


def run_node(cls, inputs: dict) -> tuple:
    """One node's outputs (a tuple) for its resolved inputs."""
    if hasattr(cls, "define_schema"):  # V3
        out = _clone(cls).execute(**inputs)
        if inspect.isawaitable(out):
            out = asyncio.run(out)
        return tuple(out.args)
    obj = cls()
    out = getattr(obj, cls.FUNCTION)(**inputs)
    if isinstance(out, dict):
        out = out["result"]
    return tuple(out)


def _order(api: dict) -> list[str]:
    done, order = set(), []

    def visit(nid: str, stack: tuple = ()):
        if nid in done:
            return
        if nid in stack:
            raise ValueError(f"cycle through node {nid}")
        for value in api[nid]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                visit(value[0], stack + (nid,))
        done.add(nid)
        order.append(nid)

    for nid in sorted(api, key=int):
        visit(nid)
    return order


def run_api_workflow(api: dict, substitutes: dict[str, Callable[[dict], tuple]],
                     on_node: Callable[[str, str, tuple], None] | None = None) -> dict[str, tuple]:
    """Every node's outputs, by node id.  ``substitutes[class_type](inputs) -> outputs``
    replaces a node type; ``on_node(id, class_type, outputs)`` sees each result."""
    classes = node_classes()
    results: dict[str, tuple] = {}
    for nid in _order(api):
        node = api[nid]
        ct = node["class_type"]
        inputs: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                inputs[name] = results[value[0]][value[1]]
            else:
                inputs[name] = value
        if ct in substitutes:
            results[nid] = tuple(substitutes[ct](inputs))
        else:
            if ct not in classes:
                raise KeyError(f"node {nid}: this ComfyUI has no node type {ct}")
            results[nid] = run_node(classes[ct], inputs)
        if on_node is not None:
            on_node(nid, ct, results[nid])
    return results
