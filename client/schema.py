"""Node schemas from ComfyUI ``/object_info`` answers (recorded files or a live server).

The ComfyUI frontend decides from a node's schema which inputs are *widgets* (values
edited on the node and stored in the UI workflow's ``widgets_values``) and which are
*links* (sockets).  This module reproduces that decision, so UI and API workflows can be
converted and validated without a running frontend:

- ``INT``, ``FLOAT``, ``STRING``, ``BOOLEAN`` and combos (a list of options, or the V3
  ``"COMBO"`` type with ``options``) are widgets, unless ``forceInput`` is set;
  every other type is a link.
- Widget order is ``input_order["required"]`` then ``input_order["optional"]``
  (object_info's ``input`` dicts are not ordered reliably; ComfyUI 0.3.64 sends
  ``input_order`` for that purpose).
- Some widgets bring frontend-only companions that are saved in ``widgets_values`` but
  never sent to the server: the ``control_after_generate`` combo after an INT marked
  ``control_after_generate`` (or named ``seed``/``noise_seed``, the frontend's legacy
  rule), and the upload button after a combo marked ``image_upload`` / ``video_upload``
  / ``animated_image_upload`` (value ``"image"``) or ``audio_upload`` (two ``None``).

ComfyUI 0.33 (frontend 1.49) adds V3 dynamic inputs, which the tools understand too:

- ``COMFY_DYNAMICCOMBO_V3``: a combo widget whose chosen option brings its own inputs,
  named ``<combo>.<input>`` (nested combos nest the names: ``format.codec.encoding``).
  The frontend inserts the chosen option's widgets right after the combo widget
  (required, then optional), so ``widgets_values`` depends on the values themselves;
  ``POST /prompt`` takes the dotted names.
- ``COMFY_AUTOGROW_V3``: link sockets ``<input>.<prefix><i>`` (or ``<input>.<name>``)
  from a template, the first ``min`` of them required.
- ``COMFY_MATCHTYPE_V3``: a socket accepting the template's ``allowed_types``; outputs of
  that type take the linked input's type (any type, for these tools).
- More widget types (``COLOR``, ``CURVE``, ``BOUNDING_BOX``, ...); an input with
  ``"hidden": true`` still has a (hidden) widget whose value is saved.

Facts from the ComfyUI frontends 1.27.10 (ComfyUI 0.3.64: ``useIntWidget``,
``addValueControlWidgets``, ``useImageUploadWidget``) and 1.49.6 (ComfyUI 0.33:
``dynamicComboWidget``, ``applyAutogrow``, the widget constructor table), checked
against both in ``tests/host/test_workflows_frontend.py``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
AUTOGROW = "COMFY_AUTOGROW_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO",
                          # widgets the frontend's core extensions register for core nodes
                          "AUDIO_RECORD", "WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION",
                          # frontend 1.49's widget constructors (ComfyUI 0.33)
                          "MARKDOWN", "COLOR", "COLORS", "IMAGECOMPARE", "BOUNDING_BOX", "BOUNDING_BOXES",
                          "CHART", "GALLERIA", "PAINTER", "COMPOSITOR", "TEXTAREA", "CURVE", "RANGE",
                          "VIDEO_EDIT", DYNAMIC_COMBO})
COMBO_TYPES = frozenset({"COMBO", DYNAMIC_COMBO})
# INT inputs with these names get a control widget even without the option (frontend legacy rule).
LEGACY_SEED_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
# Value the frontend stores for the upload button widget (``node.addWidget("button", name, "image")``).
UPLOAD_WIDGET_VALUE = "image"
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")

# Model-file combos of the core nodes and the ``models/<folder>`` they list
# (``folder_paths.get_filename_list(<folder>)`` in ComfyUI 0.3.64 nodes.py / comfy_extras, and
# the newer loaders a bundled workflow for a newer ComfyUI uses).
CORE_MODEL_FOLDERS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLora", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLoraModelOnly", "ckpt_name"): "checkpoints",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name1"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name2"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name4"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("DiffusersLoader", "model_path"): "diffusers",
    ("GLIGENLoader", "gligen_name"): "gligen",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("CreateHookLora", "lora_name"): "loras",
    ("CreateHookLoraModelOnly", "lora_name"): "loras",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
    ("ModelPatchLoader", "name"): "model_patches",
    ("AudioEncoderLoader", "audio_encoder_name"): "audio_encoders",
    # ComfyUI 0.33 comfy_extras/nodes_lt_audio.py (LTX-2 audio+video)
    ("LTXAVTextEncoderLoader", "text_encoder"): "text_encoders",
    ("LTXAVTextEncoderLoader", "ckpt_name"): "checkpoints",
    ("LTXVAudioVAELoader", "ckpt_name"): "checkpoints",
}
# A pack loader names its folder in the tooltip ("... in models/panodit"), which is the
# fallback for nodes missing from the table above.
_TOOLTIP_FOLDER = re.compile(r"models/([A-Za-z0-9_.-]+)")


class SchemaError(ValueError):
    """A schema file or answer that is not a ComfyUI ``/object_info`` mapping."""


@dataclass(frozen=True)
class InputSpec:
    """One input of a node as the frontend sees it.

    ``type`` is ``"COMBO"`` for combos (``choices`` then holds the options).  ``extras``
    are the default values of the frontend-only widgets that follow this widget in
    ``widgets_values`` (empty for links and plain widgets).
    """

    name: str
    type: str
    required: bool
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple | None = None
    # COMFY_DYNAMICCOMBO_V3: (option key, the inputs that option brings), names dotted
    dynamic: tuple[tuple[str, tuple["InputSpec", ...]], ...] = ()
    # COMFY_AUTOGROW_V3: the sockets the template can grow, in order, names dotted
    grows: tuple["InputSpec", ...] = ()

    @property
    def widget_type(self) -> str:
        """The widget an input shows: its type, or ``widgetType`` for an input that accepts
        several types (``"FLOAT,INT"`` with ``widgetType`` ``FLOAT``, ComfyUI 0.33)."""
        return str(self.options.get("widgetType") or self.type)

    @property
    def is_widget(self) -> bool:
        return self.widget_type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def is_combo(self) -> bool:
        return self.type in COMBO_TYPES

    @property
    def is_autogrow(self) -> bool:
        return self.type == AUTOGROW

    @property
    def default(self) -> Any:
        if "default" in self.options:
            return self.options["default"]
        if self.is_combo:
            return self.choices[0] if self.choices else None
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(self.widget_type)

    def sub_inputs(self, value: Any) -> tuple["InputSpec", ...]:
        """The inputs the dynamic combo's option ``value`` brings (empty otherwise)."""
        for key, inputs in self.dynamic:
            if key == value:
                return inputs
        return ()

    @property
    def has_control(self) -> bool:
        if not self.is_widget:
            return False
        if self.widget_type == "INT":
            flag = self.options.get("control_after_generate")
            return bool(flag) if flag is not None else self.name in LEGACY_SEED_NAMES
        return self.is_combo and bool(self.options.get("control_after_generate"))

    @property
    def extras(self) -> tuple:
        """Default values of the frontend-only widgets saved after this one."""
        if not self.is_widget:
            return ()
        if self.has_control:
            # a combo's control brings a filter-list STRING widget as well
            return ("fixed", "") if self.is_combo else ("fixed",)
        if self.is_combo and any(self.options.get(k) for k in UPLOAD_OPTIONS):
            return (UPLOAD_WIDGET_VALUE,)
        if self.is_combo and self.options.get("audio_upload"):
            return (None, None)
        return ()

    @property
    def is_upload(self) -> bool:
        return any(self.options.get(k) for k in UPLOAD_OPTIONS + ("audio_upload",))


@dataclass(frozen=True)
class NodeSchema:
    """One node type: inputs in frontend order (required, then optional), outputs."""

    class_type: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...]
    output_node: bool = False
    display_name: str = ""
    category: str = ""

    def input(self, name: str) -> InputSpec | None:
        """The input called ``name``, including any dynamic combo option's input and any
        autogrow socket (whichever option brings it)."""
        for spec in _all_specs(self.inputs):
            if spec.name == name:
                return spec
        return None

    def expand(self, values: Mapping[str, Any] | None = None, defaults: bool = True) -> tuple[InputSpec, ...]:
        """Every input the node has for these ``values`` (API inputs or widget values by
        name; missing ones take their defaults), in frontend order: each dynamic combo is
        followed by the inputs of its chosen option (recursively); an autogrow input is
        replaced by its sockets (the given ones, at least ``min``).  Static nodes: ``inputs``.
        ``defaults=False``: a dynamic combo absent from ``values`` brings no inputs (the
        server then expects none of them, as it does)."""
        return tuple(_expand(self.inputs, values or {}, defaults))

    @property
    def widgets(self) -> tuple[InputSpec, ...]:
        """Widgets for default values (see :meth:`expand` for given values)."""
        return tuple(s for s in self.expand() if s.is_widget)

    def widgets_for(self, values: Mapping[str, Any] | None) -> tuple[InputSpec, ...]:
        return tuple(s for s in self.expand(values) if s.is_widget)

    @property
    def links(self) -> tuple[InputSpec, ...]:
        return tuple(s for s in self.expand() if not s.is_widget)

    def model_folder(self, input_name: str) -> str | None:
        """The ``models/<folder>`` a model-file combo lists, or None for other inputs."""
        folder = CORE_MODEL_FOLDERS.get((self.class_type, input_name))
        if folder:
            return folder
        spec = self.input(input_name)
        if spec is None or spec.type != "COMBO" or spec.is_upload:  # (dynamic combos list options, not files)
            return None
        match = _TOOLTIP_FOLDER.search(str(spec.options.get("tooltip", "")))
        return match.group(1) if match else None


def _all_specs(specs: Iterable[InputSpec]):
    for spec in specs:
        yield spec
        yield from spec.grows
        for _key, inputs in spec.dynamic:
            yield from _all_specs(inputs)


def _expand(specs: Iterable[InputSpec], values: Mapping[str, Any], defaults: bool = True):
    for spec in specs:
        if spec.is_autogrow:
            minimum = int(spec.options.get("template", {}).get("min", 1) or 0)
            for i, socket in enumerate(spec.grows):
                if i < minimum or socket.name in values:
                    yield socket
            continue
        yield spec
        if spec.dynamic and (defaults or spec.name in values):
            yield from _expand(spec.sub_inputs(values.get(spec.name, spec.default)), values, defaults)


def _section_inputs(raw_inputs: Mapping[str, Any], order: Mapping[str, Any], prefix: str, required: bool,
                    where: str) -> list[InputSpec]:
    """``required`` then ``optional`` inputs of one ``input`` mapping, names prefixed."""
    specs = []
    for section, section_required in (("required", True), ("optional", False)):
        raw = raw_inputs.get(section, {}) or {}
        names = list(order.get(section, raw.keys())) if order else list(raw.keys())
        names += [n for n in raw if n not in names]
        specs += [_parse_input(prefix + n, raw[n], required and section_required, where) for n in names if n in raw]
    return specs


def _parse_input(name: str, raw: Any, required: bool, where: str) -> InputSpec:
    if not isinstance(raw, (list, tuple)) or not raw:
        raise SchemaError(f"{where}: input {name!r} is not a [type, options] list: {raw!r}")
    kind, options = raw[0], (raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {})
    if isinstance(kind, list):
        return InputSpec(name, "COMBO", required, options, tuple(kind))
    if kind == "COMBO":
        return InputSpec(name, "COMBO", required, options, tuple(options.get("options", ())))
    if kind == DYNAMIC_COMBO:
        dynamic = []
        for option in options.get("options", ()):
            if not isinstance(option, Mapping) or "key" not in option:
                raise SchemaError(f"{where}: dynamic combo {name!r} has an option without a key: {option!r}")
            # a chosen option's input is required by its own section (the server's
            # parse_class_inputs), whether or not the combo itself is
            dynamic.append((option["key"], tuple(_section_inputs(option.get("inputs") or {}, {}, name + ".",
                                                                 True, where))))
        return InputSpec(name, DYNAMIC_COMBO, required, options, tuple(k for k, _ in dynamic), dynamic=tuple(dynamic))
    if kind == AUTOGROW:
        template = options.get("template") or {}
        inner = template.get("input") or {}
        section = "required" if inner.get("required") else "optional"
        if not inner.get(section):
            raise SchemaError(f"{where}: autogrow input {name!r} has no template input")
        (raw_socket,) = list(inner[section].values())[:1]
        if "names" in template:
            names = list(template["names"])
        else:
            names = [f"{template.get('prefix', '')}{i}" for i in range(int(template.get("max", 1)))]
        minimum = int(template.get("min", 1) or 0)
        grows = tuple(_parse_input(f"{name}.{n}", raw_socket, required and section == "required" and i < minimum, where)
                      for i, n in enumerate(names))
        return InputSpec(name, AUTOGROW, required, options, None, grows=grows)
    if kind == MATCH_TYPE:
        allowed = str((options.get("template") or {}).get("allowed_types", "*")) or "*"
        return InputSpec(name, allowed, required, options, None)
    return InputSpec(name, str(kind), required, options, None)


def parse_node(class_type: str, info: Mapping[str, Any]) -> NodeSchema:
    """One ``/object_info`` entry -> :class:`NodeSchema`."""
    where = f"node {class_type}"
    specs = _section_inputs(info.get("input", {}) or {}, info.get("input_order", {}) or {}, "", True, where)
    # a COMFY_MATCHTYPE_V3 output takes its linked input's type: any type, statically
    outputs = tuple("*" if t == MATCH_TYPE else (str(t) if not isinstance(t, list) else "COMBO")
                    for t in info.get("output", ()))
    names = tuple(info.get("output_name", outputs)) or outputs
    return NodeSchema(class_type, tuple(specs), outputs, names, bool(info.get("output_node", False)),
                      info.get("display_name", class_type) or class_type, info.get("category", ""))


class SchemaSet(Mapping[str, NodeSchema]):
    """All known node types; later sources override earlier ones for the same type."""

    def __init__(self, object_infos: Iterable[Mapping[str, Any]] = ()):
        self._nodes: dict[str, NodeSchema] = {}
        self.sources: list[str] = []
        for info in object_infos:
            self.add(info)

    def add(self, object_info: Mapping[str, Any], source: str = "<dict>") -> None:
        if not isinstance(object_info, Mapping):
            raise SchemaError(f"{source}: expected an /object_info mapping, got {type(object_info).__name__}")
        for class_type, info in object_info.items():
            self._nodes[class_type] = parse_node(class_type, info)
        self.sources.append(source)

    @classmethod
    def from_files(cls, *paths: str | os.PathLike) -> "SchemaSet":
        out = cls()
        for path in paths:
            try:
                data = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise SchemaError(f"cannot read node schemas from {path}: {exc}") from exc
            out.add(data, str(path))
        return out

    def __getitem__(self, class_type: str) -> NodeSchema:
        return self._nodes[class_type]

    def __iter__(self):
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)


async def fetch_object_info(session, base_url: str, class_types: Iterable[str] | None = None) -> dict:
    """``GET /object_info`` (or ``/object_info/<class>`` per type) from a live server."""
    base = base_url.rstrip("/")
    if class_types is None:
        async with session.get(f"{base}/object_info") as resp:
            resp.raise_for_status()
            return await resp.json()
    out: dict = {}
    for class_type in class_types:
        async with session.get(f"{base}/object_info/{class_type}") as resp:
            resp.raise_for_status()
            out.update(await resp.json())
    return out


PROSE_KEYS = ("tooltip", "description", "output_tooltips", "search_aliases")


def strip_object_info(object_info: Mapping[str, Any]) -> dict:
    """A copy without prose (descriptions, tooltips, search aliases): the interface facts
    only, small enough to ship with the pack for offline checks.  Only prose values are
    dropped (strings, null, or the lists of ``output_tooltips``/``search_aliases``), so an
    input that happens to be *named* ``description`` stays."""
    def is_prose(key, value) -> bool:
        return key in PROSE_KEYS and (value is None or isinstance(value, str)
                                      or (key in ("output_tooltips", "search_aliases") and isinstance(value, list)))

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not is_prose(k, v)}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {name: clean(info) for name, info in object_info.items()}


def dumps_pack_schemas(info: Mapping[str, Any]) -> str:
    """The text of a recorded ``pano360_object_info.json``: nodes sorted, one level of
    indentation per nesting (reviewable diffs), non-ASCII kept."""
    return json.dumps(dict(sorted(info.items())), indent=1, ensure_ascii=False) + "\n"


def dumps_core_schemas(info: Mapping[str, Any]) -> str:
    """The text of a recorded ``core_object_info.json``: prose stripped, compact, nodes
    sorted.  Keys inside a node keep the server's order: the inputs of a dynamic combo's
    option have no ``input_order`` and the frontend lays them out in dict order."""
    return json.dumps(dict(sorted(strip_object_info(info).items())), separators=(",", ":"), ensure_ascii=False) + "\n"


PACK_ROOT = Path(__file__).resolve().parents[1]
# workflows/schemas/<ComfyUI version>/{core,pano360}_object_info.json, one folder per
# supported ComfyUI version (recorded by tests/host/record_schemas.py).
SCHEMA_DIR = PACK_ROOT / "workflows" / "schemas"
CORE_SCHEMA_NAME = "core_object_info.json"
PACK_SCHEMA_NAME = "pano360_object_info.json"


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


def recorded_versions(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """ComfyUI versions with recorded schemas, oldest first."""
    if not Path(schema_dir).is_dir():
        return []
    found = [d.name for d in Path(schema_dir).iterdir() if (d / CORE_SCHEMA_NAME).is_file()]
    return sorted(found, key=_version_key)


def schema_files(version: str | None = None, schema_dir: Path = SCHEMA_DIR) -> list[Path]:
    """The recorded files of ``version`` (default: the oldest supported version): ComfyUI
    core, then the pack's own (if recorded)."""
    versions = recorded_versions(schema_dir)
    if version is None:
        if not versions:
            return []
        version = versions[0]
    elif version not in versions:
        raise SchemaError(f"no recorded schemas for ComfyUI {version} in {schema_dir} (recorded: {', '.join(versions) or 'none'})")
    folder = Path(schema_dir) / version
    return [p for p in (folder / CORE_SCHEMA_NAME, folder / PACK_SCHEMA_NAME) if p.is_file()]


def recorded_schema_sets(schema_dir: Path = SCHEMA_DIR) -> dict[str, "SchemaSet"]:
    """``{version: SchemaSet}`` of every recorded ComfyUI version, oldest first."""
    return {v: SchemaSet.from_files(*schema_files(v, schema_dir)) for v in recorded_versions(schema_dir)}


def default_schema_files() -> list[Path]:
    """The shipped schema files of the oldest supported ComfyUI version."""
    return schema_files()


_OLDEST = recorded_versions()
CORE_SCHEMA_FILE = SCHEMA_DIR / (_OLDEST[0] if _OLDEST else "0.3.64") / CORE_SCHEMA_NAME
PACK_SCHEMA_FILE = SCHEMA_DIR / (_OLDEST[0] if _OLDEST else "0.3.64") / PACK_SCHEMA_NAME
