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


class NodeInputError(ValueError):
    """A bad input, named by node and input, with what was expected."""

    def __init__(self, node_id: str, input_name: str, expected: str, got: str):
        self.node_id, self.input_name = node_id, input_name
        super().__init__(f"{node_id}: input '{input_name}': expected {expected}, got {got}")


def describe(x) -> str:
    """Short description of a value for error messages."""
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {list(x.shape)} ({x.dtype})"
    return f"{type(x).__name__} {x!r}"[:200]


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
