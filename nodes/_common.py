"""Small helpers shared by the node modules: error messages and layout changes.

Host-free: importable without ComfyUI (tests use it directly).
"""

from __future__ import annotations

import json
import math
import os

import torch

ANGLE_CONVENTION = (
    "Degrees. Sphere convention: the equirect centre column looks forward (longitude 0); "
    "+yaw turns right, +pitch looks up, +roll turns clockwise; row 0 is latitude +90; "
    "sampling wraps across the 0/360° seam."
)


# ComfyUI's executor runs a V3 node as a class clone named "<class>Clone"
# (comfy_api.internal.shallow_clone_class, 0.3.64 and 0.33), so ``cls.__name__`` inside
# ``execute`` is not the node's id.
EXECUTOR_CLONE_SUFFIX = "Clone"


def node_name(node_id: str) -> str:
    """The node id a message should show for ``cls.__name__`` seen inside ``execute``."""
    return node_id.removesuffix(EXECUTOR_CLONE_SUFFIX) if node_id.startswith("Pano360") else node_id


class NodeInputError(ValueError):
    """A bad input, named by node and input, with what was expected."""

    def __init__(self, node_id: str, input_name: str, expected: str, got: str):
        node_id = node_name(node_id)
        self.node_id, self.input_name = node_id, input_name
        super().__init__(f"{node_id}: input '{input_name}': expected {expected}, got {got}")


def is_nested_latent(x) -> bool:
    """ComfyUI 0.33's ``comfy.nested_tensor.NestedTensor``: the packed streams of an
    audio+video latent (LTX-2, MiniMax H3), not a torch.Tensor (see nodes/_host.py)."""
    return not isinstance(x, torch.Tensor) and getattr(x, "is_nested", False) is True and hasattr(x, "tensors")


def describe(x) -> str:
    """Short description of a value for error messages."""
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {list(x.shape)} ({x.dtype})"
    if is_nested_latent(x):
        shapes = ", ".join(str(list(t.shape)) for t in x.tensors)
        return f"an audio+video (nested) latent of {len(x.tensors)} streams {shapes}"
    if isinstance(x, dict) and "samples" in x:
        return f"LATENT with samples {describe(x['samples'])}"
    return f"{type(x).__name__} {x!r}"[:200]


def latent_samples(latent, node_id: str, input_name: str) -> torch.Tensor:
    """The ``samples`` tensor of a LATENT; NodeInputError naming the input otherwise,
    including for an audio+video latent, whose streams must be separated first."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if is_nested_latent(samples):
        raise NodeInputError(node_id, input_name, "a LATENT of one image or video stream "
                             "(separate an audio+video latent first, e.g. with LTXV Separate AV Latent)",
                             describe(samples))
    if not isinstance(samples, torch.Tensor):
        raise NodeInputError(node_id, input_name, "a LATENT", describe(latent))
    return samples


def image_to_bchw(image: torch.Tensor, node_id: str, input_name: str) -> torch.Tensor:
    """ComfyUI IMAGE ``[B,H,W,C]`` -> ``(B,C,H,W)`` view (no copy: channels-last memory)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise NodeInputError(node_id, input_name, "an IMAGE [B,H,W,C] with C in 1, 3, 4", describe(image))
    return image.movedim(-1, 1)


def equirect_to_bchw(image: torch.Tensor, node_id: str, input_name: str) -> torch.Tensor:
    """An equirect IMAGE ``[B,H,W,C]`` -> ``(B,C,H,W)`` view: width = 2 x height, height >= 2."""
    x = image_to_bchw(image, node_id, input_name)
    h, w = x.shape[-2], x.shape[-1]
    if w != 2 * h:
        raise NodeInputError(node_id, input_name, "an equirect IMAGE with width = 2 x height", f"{w}x{h} (WxH)")
    if h < 2:
        raise NodeInputError(node_id, input_name, "an equirect IMAGE at least 2 pixels high", f"{w}x{h} (WxH)")
    return x


def bchw_to_image(x: torch.Tensor) -> torch.Tensor:
    """``(B,C,H,W)`` -> ComfyUI IMAGE ``[B,H,W,C]`` float32, contiguous, clamped to 0..1."""
    return x.movedim(1, -1).clamp(0.0, 1.0).to(torch.float32).contiguous()


def mask_to_bhw(mask: torch.Tensor, node_id: str, input_name: str) -> torch.Tensor:
    """ComfyUI MASK ``[B,H,W]`` or ``[H,W]`` -> ``[B,H,W]``."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise NodeInputError(node_id, input_name, "a MASK [B,H,W] or [H,W]", describe(mask))
    return mask.unsqueeze(0) if mask.ndim == 2 else mask


def node_id(cls) -> str:
    """The node's ID (``define_schema().node_id``, e.g. ``Pano360Rig``) for messages.

    ComfyUI runs a clone of a V3 node class (``PREPARE_CLASS_CLONE``, named ``<class>Clone``),
    so ``cls.__name__`` inside ``execute`` is not the ID users see."""
    return cls.define_schema().node_id


def _widget_problem(spec, value) -> tuple[str, str] | None:
    """(expected, got) when ``value`` breaks ``spec``'s range, choices or finiteness."""
    low, high = getattr(spec, "min", None), getattr(spec, "max", None)
    options = getattr(spec, "options", None)
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number" + (f" in [{low}, {high}]" if low is not None and high is not None else ""), repr(value)
    if options is not None:
        if value not in options:
            shown = list(options) if len(options) <= 20 else f"one of {len(options)} names listed by the widget"
            return f"one of {shown}", repr(value)
        return None
    if low is not None and value < low:
        return f"at least {low}", repr(value)
    if high is not None and value > high:
        return f"at most {high}", repr(value)
    return None


def widget_errors(schema, **values) -> str | None:
    """ComfyUI's own widget checks for the inputs a node's ``validate_inputs`` names.

    ComfyUI 0.3.64 skips its min/max/choice checks for every input that ``validate_inputs``
    accepts (``execution.validate_inputs``), so a node that checks, say, ``width`` against
    ``height`` must re-check ``width``'s range itself.  NaN and infinity pass ComfyUI's
    min/max checks (every comparison with NaN is false) and are refused here.  ``schema`` is
    the node's ``define_schema()``.  A value of ``None`` is a linked input (its value is only
    known when the node runs, where ``execute`` checks it with :func:`check_widgets`) and is
    skipped.  Returns the first message, or None when every named value is acceptable.
    """
    specs = {spec.id: spec for spec in schema.inputs}
    for name, value in values.items():
        if value is None:
            continue
        problem = _widget_problem(specs[name], value)
        if problem:
            return f"{schema.node_id}: input '{name}': expected {problem[0]}, got {problem[1]}"
    return None


def check_widgets(cls, **values) -> None:
    """At the top of ``execute``: each named widget value within its range, among its choices
    and finite, else :class:`NodeInputError` naming node and input.

    ``execute`` is the one place every value passes: a linked value is unknown at validation,
    ComfyUI 0.3.64 skips choice and range checks of inputs a ``validate_inputs`` names, and
    NaN/infinity (valid JSON to Python) pass every min/max check."""
    schema = cls.define_schema()
    specs = {spec.id: spec for spec in schema.inputs}
    for name, value in values.items():
        if value is None:
            continue
        problem = _widget_problem(specs[name], value)
        if problem:
            raise NodeInputError(schema.node_id, name, *problem)


def finite(value: float, node: str, input_name: str) -> float:
    """``value`` as a float, or :class:`NodeInputError` for NaN / infinity (or a non-number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NodeInputError(node, input_name, "a finite number", repr(value))
    return float(value)


# The deepest nesting of JSON a text input may have: far beyond any rig, keyframe or view list,
# far below Python's recursion limit (json.loads recurses once per level).
MAX_JSON_DEPTH = 64


def parse_json(text: str, node: str, input_name: str, expected: str):
    """JSON text of a widget, or :class:`NodeInputError` naming node and input (never a bare
    JSONDecodeError or RecursionError; NaN and Infinity, which Python's parser accepts, are refused)."""
    if not isinstance(text, str):
        raise NodeInputError(node, input_name, expected, describe(text))
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:   # nesting depth without recursing (strings skipped)
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > MAX_JSON_DEPTH:
        raise NodeInputError(node, input_name, f"{expected} (JSON nested at most {MAX_JSON_DEPTH} deep)",
                             f"JSON nested {deepest} deep")

    def refuse_constant(name):
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        return json.loads(text, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as err:
        raise NodeInputError(node, input_name, expected, f"invalid JSON ({err})"[:300]) from None


def output_path(root: str, relative: str, node: str, input_name: str) -> str:
    """``relative`` (a file, folder or prefix under ComfyUI's output or temp folder ``root``) as
    a normalised absolute path strictly inside ``root``; :class:`NodeInputError` otherwise.

    Every node that writes takes its paths from here.  ``.``/``..`` and absolute paths are
    resolved before the check (``"."`` or ``"./."`` is ``root`` itself, whose *parent* a prefix
    split would write into), like ComfyUI's own save check (``folder_paths.get_save_image_path``)
    but without its gap for ``root`` itself; symlinks a user made inside ``root`` stay usable,
    as they do for ComfyUI's SaveImage."""
    expected = "a name or relative path inside ComfyUI's output folder (not absolute, not '.', no '..' leaving it)"
    if not isinstance(relative, str) or not relative.strip() or "\0" in relative:
        raise NodeInputError(node, input_name, expected, describe(relative))
    base = os.path.abspath(root)
    full = os.path.abspath(os.path.join(base, relative.replace("\\", "/")))
    if full == base or os.path.commonpath([base, full]) != base:
        raise NodeInputError(node, input_name, expected, repr(relative))
    return full


def format_bytes(n: float) -> str:
    """``1234567890`` -> ``"1.2 GB"`` (decimal units, as system monitors show RAM)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def check_fits(need: int, available: int, node: str, input_name: str, what: str, advice: str) -> None:
    """Refuse, before allocating, work whose peak memory ``need`` exceeds ``available`` bytes:
    :class:`NodeInputError` naming node and input, the need, what is free, and what to lower."""
    if need > available:
        raise NodeInputError(node, input_name, f"{what} that fits in the {format_bytes(available)} free ({advice})",
                             f"a request needing {format_bytes(need)}")


def known(*values) -> bool:
    """True when none of the values is a linked input (``None`` during validation)."""
    return all(v is not None for v in values)
