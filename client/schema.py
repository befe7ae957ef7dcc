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

Facts from the ComfyUI frontend 1.27.10 bundled with ComfyUI 0.3.64
(``useIntWidget``, ``addValueControlWidgets``, ``useImageUploadWidget``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO",
                          # widgets the frontend's core extensions register for core nodes
                          "AUDIO_RECORD", "WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION"})
# INT inputs with these names get a control widget even without the option (frontend legacy rule).
LEGACY_SEED_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
# Value the frontend stores for the upload button widget (``node.addWidget("button", name, "image")``).
UPLOAD_WIDGET_VALUE = "image"
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")

# Model-file combos of the core nodes and the ``models/<folder>`` they list
# (``folder_paths.get_filename_list(<folder>)`` in ComfyUI 0.3.64 nodes.py / comfy_extras).
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

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def default(self) -> Any:
        if "default" in self.options:
            return self.options["default"]
        if self.type == "COMBO":
            return self.choices[0] if self.choices else None
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(self.type)

    @property
    def has_control(self) -> bool:
        if not self.is_widget:
            return False
        if self.type == "INT":
            flag = self.options.get("control_after_generate")
            return bool(flag) if flag is not None else self.name in LEGACY_SEED_NAMES
        return self.type == "COMBO" and bool(self.options.get("control_after_generate"))

    @property
    def extras(self) -> tuple:
        """Default values of the frontend-only widgets saved after this one."""
        if not self.is_widget:
            return ()
        if self.has_control:
            # a combo's control brings a filter-list STRING widget as well
            return ("fixed", "") if self.type == "COMBO" else ("fixed",)
        if self.type == "COMBO" and any(self.options.get(k) for k in UPLOAD_OPTIONS):
            return (UPLOAD_WIDGET_VALUE,)
        if self.type == "COMBO" and self.options.get("audio_upload"):
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
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    @property
    def widgets(self) -> tuple[InputSpec, ...]:
        return tuple(s for s in self.inputs if s.is_widget)

    @property
    def links(self) -> tuple[InputSpec, ...]:
        return tuple(s for s in self.inputs if not s.is_widget)

    def model_folder(self, input_name: str) -> str | None:
        """The ``models/<folder>`` a model-file combo lists, or None for other inputs."""
        folder = CORE_MODEL_FOLDERS.get((self.class_type, input_name))
        if folder:
            return folder
        spec = self.input(input_name)
        if spec is None or spec.type != "COMBO" or spec.is_upload:
            return None
        match = _TOOLTIP_FOLDER.search(str(spec.options.get("tooltip", "")))
        return match.group(1) if match else None


def _parse_input(name: str, raw: Any, required: bool, where: str) -> InputSpec:
    if not isinstance(raw, (list, tuple)) or not raw:
        raise SchemaError(f"{where}: input {name!r} is not a [type, options] list: {raw!r}")
    kind, options = raw[0], (raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {})
    if isinstance(kind, list):
        return InputSpec(name, "COMBO", required, options, tuple(kind))
    if kind == "COMBO":
        return InputSpec(name, "COMBO", required, options, tuple(options.get("options", ())))
    return InputSpec(name, str(kind), required, options, None)


def parse_node(class_type: str, info: Mapping[str, Any]) -> NodeSchema:
    """One ``/object_info`` entry -> :class:`NodeSchema`."""
    where = f"node {class_type}"
    inputs = info.get("input", {})
    order = info.get("input_order", {})
    specs = []
    for section, required in (("required", True), ("optional", False)):
        raw = inputs.get(section, {}) or {}
        names = list(order.get(section, raw.keys()))
        names += [n for n in raw if n not in names]
        specs += [_parse_input(n, raw[n], required, where) for n in names if n in raw]
    outputs = tuple(str(t) if not isinstance(t, list) else "COMBO" for t in info.get("output", ()))
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


def strip_object_info(object_info: Mapping[str, Any]) -> dict:
    """A copy without prose (descriptions, tooltips): the interface facts only, small
    enough to ship with the pack for offline checks."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()
                    if k not in ("tooltip", "description", "output_tooltips", "search_aliases")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {name: clean(info) for name, info in object_info.items()}


PACK_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = PACK_ROOT / "workflows" / "schemas"
CORE_SCHEMA_FILE = SCHEMA_DIR / "core_object_info-0.3.64.json"
PACK_SCHEMA_FILE = SCHEMA_DIR / "pano360_object_info.json"


def default_schema_files() -> list[Path]:
    """The shipped schema files: ComfyUI core, then the pack's own (if recorded)."""
    return [p for p in (CORE_SCHEMA_FILE, PACK_SCHEMA_FILE) if p.is_file()]
