"""Run an API-format workflow's node graph in this process (host tests on tiny models).

``run(prompt, targets, given=...)`` evaluates the nodes ``targets`` need, in dependency order, with
the workflow's own widget values and links: core V1 nodes through their ``FUNCTION``, V3 nodes
(the pack's, comfy_extras') through a class clone with hidden inputs, as ComfyUI's executor calls
them.  ``given`` supplies the outputs of nodes that cannot run at test size (full-size-only model
loaders, a text encoder): ``{node_id: outputs tuple}``.  Everything runs under inference mode like
ComfyUI's executor.  No server, no caching, no validation beyond what the nodes themselves do
(``tests/host/test_workflows_host.py`` posts the same files to a real server).
"""

from __future__ import annotations

import asyncio
import inspect

import torch

_EXTRAS_LOADED = False


def _class(class_type: str):
    import nodes as comfy_nodes

    global _EXTRAS_LOADED
    if class_type.startswith("Pano360"):
        from pano360.nodes import all_nodes

        found = {c.define_schema().node_id: c for c in all_nodes()}
        if class_type in found:
            return found[class_type]
    if class_type not in comfy_nodes.NODE_CLASS_MAPPINGS and not _EXTRAS_LOADED:
        asyncio.run(comfy_nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        _EXTRAS_LOADED = True
    if class_type not in comfy_nodes.NODE_CLASS_MAPPINGS:
        raise KeyError(f"no node class {class_type!r} in this ComfyUI")
    return comfy_nodes.NODE_CLASS_MAPPINGS[class_type]


def node_classes() -> dict[str, type]:
    """Every node class by class_type: ComfyUI's core and comfy_extras nodes, and the pack's."""
    import nodes as comfy_nodes

    from pano360.nodes import all_nodes

    global _EXTRAS_LOADED
    if not _EXTRAS_LOADED:
        asyncio.run(comfy_nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        _EXTRAS_LOADED = True
    classes = dict(comfy_nodes.NODE_CLASS_MAPPINGS)
    classes.update({c.define_schema().node_id: c for c in all_nodes()})
    return classes


def _hidden_clone(cls, node_id: str, prompt: dict):
    """A V3 class clone with hidden inputs (0.3.64 takes the dict, 0.33 wraps it in V3Data)."""
    from comfy_api.latest import io

    hidden = {io.Hidden.unique_id: node_id, io.Hidden.prompt: prompt, io.Hidden.extra_pnginfo: {}}
    params = list(inspect.signature(cls.PREPARE_CLASS_CLONE).parameters)
    if params and params[0] == "v3_data":
        return cls.PREPARE_CLASS_CLONE({"hidden_inputs": hidden})
    return cls.PREPARE_CLASS_CLONE(hidden)


def _call(cls, node_id: str, inputs: dict, prompt: dict) -> tuple:
    if hasattr(cls, "PREPARE_CLASS_CLONE"):  # V3
        clone = _hidden_clone(cls, node_id, prompt)
        if inspect.iscoroutinefunction(cls.execute):
            out = asyncio.run(clone.EXECUTE_NORMALIZED_ASYNC(**inputs))
        else:
            out = clone.EXECUTE_NORMALIZED(**inputs)
        return tuple(out.result) if out.result is not None else ()
    obj = cls()
    out = getattr(obj, cls.FUNCTION)(**inputs)
    if isinstance(out, dict):
        out = out.get("result", ())
    return tuple(out)


def run(prompt: dict, targets: list[str], given: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """The outputs of ``targets`` (and of every node they needed): ``{node_id: outputs tuple}``."""
    done: dict[str, tuple] = dict(given or {})

    def evaluate(node_id: str) -> tuple:
        if node_id in done:
            return done[node_id]
        node = prompt[node_id]
        inputs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                inputs[name] = evaluate(value[0])[value[1]]
            else:
                inputs[name] = value
        with torch.inference_mode():
            done[node_id] = _call(_class(node["class_type"]), node_id, inputs, prompt)
        return done[node_id]

    for t in targets:
        evaluate(t)
    return done
