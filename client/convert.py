"""Convert workflows between ComfyUI's UI format and API format, driven by node schemas.

API format (what ``POST /prompt`` takes)::

    {"3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0], ...}}}

UI format (what the frontend saves and drag-and-drop loads): ``nodes`` with
``widgets_values`` in schema widget order (plus frontend-only extras, see
:mod:`.schema`), and a ``links`` table ``[id, from_node, from_slot, to_node, to_slot, type]``.

``ui_to_api`` follows what the frontend's "Export (API)" does:

- frontend-only nodes vanish: ``Note``/``MarkdownNote``; ``Reroute`` passes its input
  through; a ``PrimitiveNode`` becomes the literal value of its first widget;
- a muted node (``mode`` 2) is dropped together with the links out of it; a bypassed
  node (``mode`` 4) connects each output to the input of the same type (same slot index
  first, else the first input of that type);
- a widget whose input socket is linked takes the link, not the stored value;
- ``_meta.title`` is written only for nodes with an explicit ``title``.

``api_to_ui`` lays nodes out in columns by dependency depth (deterministic: the same API
file always gives byte-identical UI JSON) and stores ``control_after_generate`` as
``"fixed"`` so a loaded workflow reproduces the bundled seeds.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Mapping, Sequence

from .model_sources import model_entry
from .schema import NodeSchema, SchemaSet

FRONTEND_ONLY_NOTES = frozenset({"Note", "MarkdownNote"})
MODE_MUTED = 2
MODE_BYPASS = 4
UI_VERSION = 0.4

# Layout of generated UI workflows (pixels of the LiteGraph canvas).
COLUMN_GAP = 80
NODE_WIDTH = 340
# The frontend widens a node to fit its title: about 7.2 px per character in 1.27 and
# 7.6 in 1.49 (14 px sans-serif) plus the collapse dot; estimated on the safe side.
TITLE_CHAR_WIDTH = 8.0
TITLE_PADDING = 30
ORIGIN = (40.0, 40.0)
# Vertical room between nodes: the title bar (30) above each node plus what Nodes 2.0
# (the Vue renderer, frontend >= 1.41) adds to a node's height (up to ~25 px measured).
ROW_GAP = 60
TITLE_HEIGHT = 30
SLOT_HEIGHT = 22
WIDGET_HEIGHT = 26
MULTILINE_HEIGHT = 90
# An image/video upload combo shows a preview under the node (Nodes 2.0 reserves it
# at once, the canvas renderer once a file is chosen): about 256 px.
MEDIA_PREVIEW_HEIGHT = 260
MEDIA_UPLOADS = ("image_upload", "video_upload", "animated_image_upload")
# Namespace for the deterministic workflow ids of generated UI files.
_WORKFLOW_NAMESPACE = uuid.UUID("6f1c3b2a-5d0e-4c9b-9a51-360000000360")


class ConversionError(ValueError):
    """A workflow that cannot be converted; the message names the node."""


# --------------------------------------------------------------------------- UI -> API


def _links_table(ui: Mapping[str, Any]) -> dict[int, tuple[int, int, int, int, str]]:
    table = {}
    for link in ui.get("links", []) or []:
        if isinstance(link, Mapping):   # workflow schema version 1 writes objects
            row = (link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                   link["target_slot"], link.get("type", "*"))
        else:
            row = tuple(link[:6])
        table[int(row[0])] = (int(row[1]), int(row[2]), int(row[3]), int(row[4]), row[5])
    return table


def _widget_values(node: Mapping[str, Any], schema: NodeSchema) -> dict[str, Any]:
    """Map a UI node's ``widgets_values`` to widget names, in the order the frontend lays
    the widgets out: schema order plus frontend-only extras, each dynamic combo followed by
    its chosen option's widgets (so the layout follows the values as they are read).
    Trailing optional widgets missing from the list keep their defaults (as the frontend
    does when a node gained an optional input); a missing required one is an error."""
    raw = node.get("widgets_values")
    if raw is None:   # a node saved without values (e.g. a fresh SaveImage) uses the defaults
        return {w.name: w.default for w in schema.widgets}
    if isinstance(raw, Mapping):
        # the dict form is keyed by widget name; dynamic combos expand by their stored values
        return {w.name: raw[w.name] for w in schema.widgets_for(raw) if w.name in raw}
    values: dict[str, Any] = {}
    position = 0

    def read(specs) -> None:
        nonlocal position
        for spec in specs:
            if spec.is_autogrow or not spec.is_widget:
                continue
            if position >= len(raw):
                if spec.required:
                    layout = ", ".join(w.name + (f" +{len(w.extras)} frontend-only" if w.extras else "")
                                       for w in schema.widgets_for(values))
                    raise ConversionError(
                        f"node {node['id']} ({node['type']}): widgets_values has {len(raw)} values, the schema "
                        f"expects more ({layout}); was the workflow saved with another version of the node?")
                values[spec.name] = spec.default
            else:
                values[spec.name] = raw[position]
            position += 1 + len(spec.extras)
            if spec.dynamic:
                read(spec.sub_inputs(values[spec.name]))

    # Frontend extensions may append their own widgets (previews, refresh buttons) after
    # the schema's; like the frontend, read the schema's values from the front.
    read(schema.inputs)
    return values


def ui_to_api(ui: Mapping[str, Any], schemas: SchemaSet) -> dict[str, dict]:
    """UI-format workflow -> API-format prompt.  Raises :class:`ConversionError`."""
    if "nodes" not in ui:
        raise ConversionError("not a UI-format workflow (no 'nodes' list)")
    nodes = {int(n["id"]): n for n in ui["nodes"]}
    links = _links_table(ui)
    subgraphs = {s.get("id") for s in (ui.get("definitions") or {}).get("subgraphs", [])}

    def resolve(link_id: int | None, seen: frozenset = frozenset()):
        """-> ("link", node_id, slot) | ("value", v) | None (dropped)."""
        if link_id is None or link_id not in links:
            return None
        if link_id in seen:
            raise ConversionError(f"link {link_id} forms a cycle through frontend-only nodes")
        seen = seen | {link_id}
        origin_id, origin_slot, _, _, link_type = links[link_id]
        origin = nodes.get(origin_id)
        if origin is None:
            raise ConversionError(f"link {link_id} starts at node {origin_id}, which does not exist")
        kind = origin["type"]
        if kind == "Reroute":
            return resolve((origin.get("inputs") or [{}])[0].get("link"), seen)
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            if not values:
                raise ConversionError(f"node {origin_id} (PrimitiveNode) has no value")
            return ("value", values[0])
        mode = origin.get("mode", 0)
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            return resolve(_bypass_input_link(origin, origin_slot), seen)
        return ("link", str(origin_id), origin_slot)

    api: dict[str, dict] = {}
    for node_id in sorted(nodes):
        node = nodes[node_id]
        kind = node["type"]
        if kind in FRONTEND_ONLY_NOTES or kind in ("Reroute", "PrimitiveNode"):
            continue
        if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        if kind in subgraphs:
            raise ConversionError(f"node {node_id} is a subgraph ({kind}); unpack it in the editor first")
        schema = schemas.get(kind)
        if schema is None:
            raise ConversionError(f"node {node_id}: unknown node type {kind!r} (not in the node schemas)")
        inputs: dict[str, Any] = {}
        values = _widget_values(node, schema)
        linked = {}
        for slot in node.get("inputs") or []:
            name = (slot.get("widget") or {}).get("name", slot.get("name"))
            if slot.get("link") is not None:
                linked[name] = resolve(slot["link"])
        for spec in schema.expand({**values, **linked}):
            if spec.name in linked:
                target = linked[spec.name]
                if target is None:
                    continue
                inputs[spec.name] = [target[1], target[2]] if target[0] == "link" else target[1]
            elif spec.is_widget and spec.name in values:
                inputs[spec.name] = values[spec.name]
        entry: dict[str, Any] = {"class_type": kind, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        api[str(node_id)] = entry
    return api


def _bypass_input_link(node: Mapping[str, Any], out_slot: int) -> int | None:
    """The input link a bypassed node passes to output ``out_slot`` (frontend rule:
    same slot index if the type matches, else the first input of the output's type)."""
    inputs = node.get("inputs") or []
    outputs = node.get("outputs") or []
    out_type = outputs[out_slot].get("type", "*") if out_slot < len(outputs) else "*"

    def matches(slot):
        return out_type == "*" or slot.get("type") in (out_type, "*")

    if out_slot < len(inputs) and matches(inputs[out_slot]):
        return inputs[out_slot].get("link")
    for slot in inputs:
        if slot.get("type") == out_type:
            return slot.get("link")
    return None


# --------------------------------------------------------------------------- API -> UI


def _depths(api: Mapping[str, Mapping]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str, stack: tuple = ()) -> int:
        if node_id in depth:
            return depth[node_id]
        if node_id in stack:
            raise ConversionError(f"node {node_id}: the graph has a cycle ({' -> '.join(stack + (node_id,))})")
        sources = [v[0] for v in api[node_id].get("inputs", {}).values() if is_link(v)]
        d = 1 + max((visit(str(s), stack + (node_id,)) for s in sources if str(s) in api), default=-1)
        depth[node_id] = d
        return d

    for node_id in api:
        visit(node_id)
    return depth


def is_link(value: Any) -> bool:
    """An API input value that is a link ``[source_id, output_index]``."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _node_height(schema: NodeSchema, given: Mapping[str, Any]) -> int:
    """Pixels the frontend needs for the node: title, one row per socket that is not a
    widget (inputs and outputs side by side), then the widgets (frontend-only extras too)."""
    expanded = schema.expand(given)
    widgets = [s for s in expanded if s.is_widget]
    sockets = sum(1 for s in expanded if not s.is_widget)
    rows = sum(1 + len(w.extras) for w in widgets)
    multiline = sum(1 for w in widgets if w.widget_type == "STRING" and w.options.get("multiline"))
    media = any(w.options.get(k) for w in widgets for k in MEDIA_UPLOADS)
    return (TITLE_HEIGHT + SLOT_HEIGHT * max(sockets, len(schema.outputs), 1) + WIDGET_HEIGHT * rows
            + (MULTILINE_HEIGHT - WIDGET_HEIGHT) * multiline + MEDIA_PREVIEW_HEIGHT * media)


def api_to_ui(api: Mapping[str, Mapping], schemas: SchemaSet, name: str = "workflow",
              layout_schemas: Sequence[SchemaSet] = ()) -> dict:
    """API-format prompt -> UI-format workflow (deterministic layout and ids).

    API node ids must be integers written as strings: UI node ids are integers.
    ``layout_schemas``: further schema sets (other ComfyUI versions) the file must also
    look right in; each node gets the tallest size any of them needs, so nodes that grew
    in a newer version (more outputs or widgets) do not overlap there.
    """
    for node_id, node in api.items():
        if not str(node_id).isdigit():
            raise ConversionError(f"node {node_id!r}: API node ids must be integers as strings for the UI format")
        if node.get("class_type") not in schemas:
            raise ConversionError(f"node {node_id}: unknown node type {node.get('class_type')!r}")
    depth = _depths(api)
    order_ids = sorted(api, key=lambda i: (depth[i], int(i)))
    ui_nodes: dict[str, dict] = {}
    links: list[list] = []
    outputs_links: dict[tuple[str, int], list[int]] = {}
    column_y: dict[int, float] = {}

    for order, node_id in enumerate(order_ids):
        node = api[node_id]
        schema = schemas[node["class_type"]]
        given = node.get("inputs", {})
        expanded = schema.expand(given)
        unknown = sorted(set(given) - {s.name for s in expanded})
        if unknown:
            raise ConversionError(f"node {node_id} ({schema.class_type}): unknown inputs {unknown}")
        inputs, widgets_values = [], []
        for spec in expanded:
            value = given.get(spec.name)
            linked = is_link(value)
            if not spec.is_widget or linked:
                slot = {"name": spec.name, "type": spec.type, "link": None}
                if spec.is_widget:
                    slot["widget"] = {"name": spec.name}
                if linked:
                    src, src_slot = str(value[0]), value[1]
                    if src not in api:
                        raise ConversionError(f"node {node_id} input {spec.name}: links to missing node {src}")
                    link_id = len(links) + 1
                    src_schema = schemas[api[src]["class_type"]]
                    if src_slot >= len(src_schema.outputs):
                        raise ConversionError(f"node {node_id} input {spec.name}: node {src} has no output {src_slot}")
                    links.append([link_id, int(src), src_slot, int(node_id), len(inputs), src_schema.outputs[src_slot]])
                    outputs_links.setdefault((src, src_slot), []).append(link_id)
                    slot["link"] = link_id
                inputs.append(slot)
            if spec.is_widget:
                widgets_values.append(spec.default if (linked or spec.name not in given) else value)
                widgets_values.extend(spec.extras)
        col = depth[node_id]
        y = column_y.get(col, ORIGIN[1])
        height = max(_node_height(other[schema.class_type], given)
                     for other in (schemas, *layout_schemas) if schema.class_type in other)
        column_y[col] = y + height + ROW_GAP
        properties: dict[str, Any] = {"Node name for S&R": schema.class_type}
        # a download prompt only for files with a public direct download (client.model_sources)
        models = [entry for entry in (model_entry(given[w.name], schema.model_folder(w.name)) for w in expanded
                                      if w.is_widget and schema.model_folder(w.name) and isinstance(given.get(w.name), str))
                  if entry is not None]
        if models:
            properties["models"] = models
        shown = [(node.get("_meta") or {}).get("title")] or []
        if not shown[0]:   # the frontend shows the display name, which may differ between versions
            shown = [other[schema.class_type].display_name or schema.class_type
                     for other in (schemas, *layout_schemas) if schema.class_type in other]
        width = max(NODE_WIDTH, *(math.ceil(TITLE_CHAR_WIDTH * len(t) + TITLE_PADDING) for t in shown))
        ui_node = {"id": int(node_id), "type": schema.class_type, "pos": [col, y],
                   "size": [width, height], "flags": {}, "order": order, "mode": 0,
                   "inputs": inputs, "outputs": [], "properties": properties, "widgets_values": widgets_values}
        title = (node.get("_meta") or {}).get("title")
        if title:
            ui_node["title"] = title
        ui_nodes[node_id] = ui_node

    # columns side by side, each as wide as its widest node (nodes carry their column in pos[0])
    column_width: dict[int, float] = {}
    for ui_node in ui_nodes.values():
        column_width[ui_node["pos"][0]] = max(column_width.get(ui_node["pos"][0], 0), ui_node["size"][0])
    column_x, x = {}, ORIGIN[0]
    for col in sorted(column_width):
        column_x[col] = x
        x += column_width[col] + COLUMN_GAP
    for ui_node in ui_nodes.values():
        ui_node["pos"][0] = column_x[ui_node["pos"][0]]

    for node_id, ui_node in ui_nodes.items():
        schema = schemas[api[node_id]["class_type"]]
        ui_node["outputs"] = [{"name": schema.output_names[i] if i < len(schema.output_names) else t, "type": t,
                               "links": outputs_links.get((node_id, i), []), "slot_index": i}
                              for i, t in enumerate(schema.outputs)]
    return {
        "id": str(uuid.uuid5(_WORKFLOW_NAMESPACE, name)),
        "revision": 0,
        "last_node_id": max((int(i) for i in api), default=0),
        "last_link_id": len(links),
        "nodes": [ui_nodes[i] for i in sorted(ui_nodes, key=int)],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0.0, 0.0]}},
        "version": UI_VERSION,
    }
