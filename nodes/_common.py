"""Small helpers shared by the node modules: error messages and layout changes.

Host-free: importable without ComfyUI (tests use it directly).
"""

from __future__ import annotations

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


def bchw_to_image(x: torch.Tensor) -> torch.Tensor:
    """``(B,C,H,W)`` -> ComfyUI IMAGE ``[B,H,W,C]`` float32, contiguous, clamped to 0..1."""
    return x.movedim(1, -1).clamp(0.0, 1.0).to(torch.float32).contiguous()


def mask_to_bhw(mask: torch.Tensor, node_id: str, input_name: str) -> torch.Tensor:
    """ComfyUI MASK ``[B,H,W]`` or ``[H,W]`` -> ``[B,H,W]``."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise NodeInputError(node_id, input_name, "a MASK [B,H,W] or [H,W]", describe(mask))
    return mask.unsqueeze(0) if mask.ndim == 2 else mask


def widget_errors(schema, **values) -> str | None:
    """ComfyUI's own widget checks for the inputs a node's ``validate_inputs`` names.

    ComfyUI 0.3.64 skips its min/max/choice checks for every input that ``validate_inputs``
    accepts (``execution.validate_inputs``), so a node that checks, say, ``width`` against
    ``height`` must re-check ``width``'s range itself.  ``schema`` is the node's
    ``define_schema()``.  A value of ``None`` is a linked input (its value is only known when
    the node runs, where ``execute`` checks it) and is skipped.  Returns the first message, or
    None when every named value is acceptable.
    """
    specs = {spec.id: spec for spec in schema.inputs}
    for name, value in values.items():
        if value is None:
            continue
        spec = specs[name]
        low, high = getattr(spec, "min", None), getattr(spec, "max", None)
        options = getattr(spec, "options", None)
        if low is not None and value < low:
            return f"{schema.node_id}: input '{name}': expected at least {low}, got {value}"
        if high is not None and value > high:
            return f"{schema.node_id}: input '{name}': expected at most {high}, got {value}"
        if options is not None and value not in options:
            return f"{schema.node_id}: input '{name}': expected one of {list(options)}, got {value!r}"
    return None


def known(*values) -> bool:
    """True when none of the values is a linked input (``None`` during validation)."""
    return all(v is not None for v in values)
