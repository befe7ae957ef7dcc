"""A small validator of API-format workflows against /object_info (what POST /prompt checks):
node types, input names, required inputs, link types, numeric bounds and combo options."""

from __future__ import annotations


# Inputs naming a file the user provides (model files, uploaded media): a value absent from
# the server's list means "put the file there", not a broken workflow.
FILE_INPUTS = frozenset({"ckpt_name", "unet_name", "clip_name", "vae_name", "file", "image"})


def _spec_type(spec) -> object:
    return spec[0]


def validate(prompt: dict, info: dict) -> list[str]:
    errors = []
    for nid, node in prompt.items():
        ct = node["class_type"]
        if ct not in info:
            errors.append(f"node {nid}: unknown class_type {ct}")
            continue
        inputs = info[ct]["input"]
        req, opt = inputs.get("required", {}), inputs.get("optional", {})
        for name in req:
            if name not in node["inputs"]:
                errors.append(f"node {nid} ({ct}): missing required input {name}")
        for name, value in node["inputs"].items():
            spec = req.get(name) or opt.get(name)
            if spec is None:
                errors.append(f"node {nid} ({ct}): unknown input {name}")
                continue
            kind = _spec_type(spec)
            if isinstance(value, list):
                src = prompt.get(value[0])
                if src is None:
                    errors.append(f"node {nid} ({ct}).{name}: link to missing node {value[0]}")
                    continue
                outs = info.get(src["class_type"], {}).get("output", [])
                got = outs[value[1]] if value[1] < len(outs) else None
                want = kind if isinstance(kind, str) else "COMBO"
                if got != want and want != "*":
                    errors.append(f"node {nid} ({ct}).{name}: link gives {got}, expected {want}")
                continue
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(kind, list) or kind == "COMBO":
                options = kind if isinstance(kind, list) else opts.get("options", [])
                if options and value not in options and name not in FILE_INPUTS:
                    errors.append(f"node {nid} ({ct}).{name}: {value!r} not among the options")
            elif kind in ("INT", "FLOAT"):
                if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
                    errors.append(f"node {nid} ({ct}).{name}: {value} outside [{opts.get('min')}, {opts.get('max')}]")
    return errors
