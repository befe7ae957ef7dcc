"""Check an API-format workflow against node schemas, the way ``POST /prompt`` would.

Every problem is an :class:`Issue` naming the node, its type and the input.  Two
severities:

- ``"error"``: the server would reject the prompt (unknown node type or input, a required
  input missing, a link to a missing node or output, a link whose type does not match, a
  value of the wrong kind, out of range or not among the options);
- ``"needs"``: the workflow is fine but needs a file the schemas cannot vouch for: a
  model file (``needs model file X in models/<folder>``; recorded schemas list no model
  files at all) or an input image/video (``needs input file X in input/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

from .convert import is_link
from .schema import InputSpec, NodeSchema, SchemaSet

Severity = Literal["error", "needs"]
MAX_LISTED_OPTIONS = 8


@dataclass(frozen=True)
class Issue:
    node_id: str
    class_type: str
    input: str | None
    kind: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})" if self.node_id else "workflow"
        if self.input:
            where += f" input {self.input}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ModelNeed:
    node_id: str
    class_type: str
    input: str
    filename: str
    folder: str

    def __str__(self) -> str:
        return f"models/{self.folder}/{self.filename} (node {self.node_id} {self.class_type}.{self.input})"


def types_compatible(output_type: str, input_type: str) -> bool:
    """LiteGraph's rule: equal, either side ``*``, or comma-separated alternatives that overlap."""
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    outs = {t.strip() for t in str(output_type).split(",")}
    ins = {t.strip() for t in str(input_type).split(",")}
    return bool(outs & ins)


def _check_value(node_id: str, schema: NodeSchema, spec: InputSpec, value: Any) -> list[Issue]:
    def issue(kind, message, severity="error"):
        return [Issue(node_id, schema.class_type, spec.name, kind, message, severity)]

    opts = spec.options
    kind = spec.widget_type
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return issue("invalid_value", f"expected a number ({kind}), got {value!r}")
        if kind == "INT" and isinstance(value, float) and not value.is_integer():
            return issue("invalid_value", f"expected an integer, got {value!r}")
        if "min" in opts and value < opts["min"]:
            return issue("value_smaller_than_min", f"{value} is below the minimum {opts['min']}")
        if "max" in opts and value > opts["max"]:
            return issue("value_bigger_than_max", f"{value} is above the maximum {opts['max']}")
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return issue("invalid_value", f"expected true or false, got {value!r}")
    elif kind == "STRING":
        if not isinstance(value, str):
            return issue("invalid_value", f"expected a string, got {value!r}")
    elif spec.is_combo:
        choices = spec.choices or ()
        folder = schema.model_folder(spec.name)
        if folder is not None:
            if value not in choices:
                return issue("needs_model", f"needs model file {value!r} in models/{folder}", "needs")
        elif spec.is_upload:
            if value not in choices:
                return issue("needs_input_file", f"needs input file {value!r} in input/", "needs")
        elif value not in choices:
            shown = ", ".join(repr(c) for c in choices[:MAX_LISTED_OPTIONS])
            more = f" and {len(choices) - MAX_LISTED_OPTIONS} more" if len(choices) > MAX_LISTED_OPTIONS else ""
            return issue("value_not_in_list", f"{value!r} is not one of {shown}{more}")
    return []


def validate_prompt(api: Mapping[str, Any], schemas: SchemaSet,
                    skip_values: Iterable[tuple[str, str]] = ()) -> list[Issue]:
    """All issues of an API-format prompt (empty list: the server would accept it).

    ``skip_values``: ``(node_id, input)`` pairs whose value is set later (e.g. by a batch
    sweep) and is not checked here.
    """
    skip = {(str(n), i) for n, i in skip_values}
    issues: list[Issue] = []
    if not isinstance(api, Mapping) or not api:
        return [Issue("", "", None, "invalid_prompt", "an API workflow is a non-empty mapping of node id -> node")]
    has_output = False
    for node_id, node in api.items():
        node_id = str(node_id)
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            issues.append(Issue(node_id, "?", None, "invalid_prompt", "node has no class_type"))
            continue
        class_type = node["class_type"]
        schema = schemas.get(class_type)
        if schema is None:
            issues.append(Issue(node_id, class_type, None, "missing_node_type",
                                f"node type {class_type!r} does not exist in the node schemas"))
            continue
        has_output |= schema.output_node
        inputs = node.get("inputs", {})
        if not isinstance(inputs, Mapping):
            issues.append(Issue(node_id, class_type, None, "invalid_prompt", "'inputs' must be a mapping"))
            continue
        expanded = schema.expand(inputs, defaults=False)   # dynamic combos bring their chosen option's inputs
        names = [s.name for s in expanded]
        for name in inputs:
            if name not in names:
                issues.append(Issue(node_id, class_type, name, "unknown_input",
                                    f"{class_type} has no input {name!r}; its inputs are {', '.join(names)}"))
        for spec in expanded:
            if spec.name not in inputs:
                if spec.required:
                    issues.append(Issue(node_id, class_type, spec.name, "required_input_missing",
                                        f"required input ({spec.type}) is missing"))
                continue
            value = inputs[spec.name]
            if is_link(value):
                issues += _check_link(api, schemas, node_id, schema, spec, value)
            elif not spec.is_widget:
                issues.append(Issue(node_id, class_type, spec.name, "invalid_link",
                                    f"expected a link [node_id, output_index] to a {spec.type} output, got {value!r}"))
            elif (node_id, spec.name) not in skip:
                issues += _check_value(node_id, schema, spec, value)
    if not has_output and not any(i.kind == "missing_node_type" for i in issues):
        issues.append(Issue("", "", None, "prompt_no_outputs", "the workflow has no output node (e.g. SaveImage)"))
    return issues


def _check_link(api, schemas, node_id, schema, spec, value) -> list[Issue]:
    src, slot = str(value[0]), value[1]
    def issue(message):
        return [Issue(node_id, schema.class_type, spec.name, "invalid_link", message)]
    if src not in api:
        return issue(f"links to node {src}, which does not exist")
    src_schema = schemas.get(api[src].get("class_type"))
    if src_schema is None:
        return []   # reported at the source node
    if not 0 <= slot < len(src_schema.outputs):
        return issue(f"links to output {slot} of node {src} ({src_schema.class_type}), which has "
                     f"{len(src_schema.outputs)} outputs")
    out_type = src_schema.outputs[slot]
    if not types_compatible(out_type, spec.type):
        return issue(f"expects {spec.type} but is linked to output {slot} of node {src} "
                     f"({src_schema.class_type}), which is {out_type}")
    return []


def models_needed(api: Mapping[str, Any], schemas: SchemaSet) -> list[ModelNeed]:
    """The model files an API workflow loads, with the ``models/<folder>`` each goes in."""
    needs = []
    for node_id, node in api.items():
        schema = schemas.get(node.get("class_type"))
        if schema is None:
            continue
        for spec in schema.widgets_for(node.get("inputs", {})):
            value = node.get("inputs", {}).get(spec.name)
            folder = schema.model_folder(spec.name)
            if folder and isinstance(value, str):
                needs.append(ModelNeed(str(node_id), schema.class_type, spec.name, value, folder))
    return needs


def errors_only(issues: Iterable[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity == "error"]
