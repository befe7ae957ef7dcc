"""LoRA files whose keys ComfyUI's stock loaders do not map: prefix them for the diffusion model.

ComfyUI maps a DiT LoRA's keys to the model's weights through tables per model family
(``comfy/lora.py`` ``model_lora_keys_unet``, 0.3.64 and 0.33): a generic
``diffusion_model.<module>`` form works for every family, and some families also accept
their official or diffusers names — but Wan has no extra table, so a Wan LoRA saved by
DiffSynth-Studio/PEFT with bare keys (``blocks.0.self_attn.q.lora_A.default.weight``, the
form PanoWan's own loader reads, ``src/diffsynth/models/lora.py``) loads nothing ("lora key
not loaded").  :func:`prefix_lora_keys` adds the ``diffusion_model.`` prefix to such keys
and leaves keys that already carry a known prefix alone, so running it twice changes
nothing.  The weights are not changed (alpha and rank scaling stay as the file has them).
"""

from __future__ import annotations

import os
import pickle

import torch
from torch import Tensor

__all__ = ["LORA_MARKERS", "KNOWN_PREFIXES", "prefix_lora_keys", "read_lora", "convert_lora_file"]

# Segments that mark a LoRA tensor (PEFT/diffusers A/B, kohya down/up, their alpha).
LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_down.", ".lora_up.", ".alpha", ".diff", ".diff_b")
# Prefixes ComfyUI already maps (comfy/lora.py): the generic form, kohya's, diffusers' and
# LyCORIS's.
KNOWN_PREFIXES = ("diffusion_model.", "lora_unet_", "transformer.", "lycoris_", "unet.", "lora_te")


def prefix_lora_keys(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
    """``(state dict with bare LoRA keys prefixed by "diffusion_model.", keys renamed)``.

    A key is renamed when it holds a LoRA marker and starts with none of
    :data:`KNOWN_PREFIXES`.  ValueError when a renamed key would collide with an existing
    one, or when the dict holds no LoRA tensor at all.
    """
    out: dict[str, Tensor] = {}
    renamed = 0
    lora = 0
    for key, value in sd.items():
        is_lora = any(m in key or key.endswith(m.rstrip(".")) for m in LORA_MARKERS)
        lora += is_lora
        new = key
        if is_lora and not key.startswith(KNOWN_PREFIXES):
            new = "diffusion_model." + key
            renamed += 1
        if new in out or (new != key and new in sd):
            raise ValueError(f"key {key!r}: its prefixed name {new!r} is already in the file")
        out[new] = value
    if not lora:
        raise ValueError("the file holds no LoRA tensors (no lora_A/lora_B/lora_down/lora_up keys)")
    return out, renamed


def read_lora(path: str) -> dict[str, Tensor]:
    """A LoRA state dict from .safetensors, or from a weights-only torch file (.ckpt/.pt/.pth/
    .bin: tensors only, never arbitrary objects); a ``{"state_dict": ...}`` wrapper is opened."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: not a weights-only torch file ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    return data


def convert_lora_file(src: str, dst: str) -> dict:
    """Read ``src``, prefix its bare LoRA keys, write ``dst`` (.safetensors) atomically; never
    replaces an existing file.  Returns ``{"keys", "renamed"}``."""
    from safetensors.torch import save_file

    from ..media.atomic import atomic_path

    if not dst.endswith(".safetensors"):
        raise ValueError(f"dst: expected a .safetensors file name, got {dst!r}")
    if os.path.exists(dst):
        raise FileExistsError(f"{dst} exists; choose another name")
    sd, renamed = prefix_lora_keys(read_lora(src))
    with atomic_path(dst) as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, tmp, metadata={"pano360": f"lora-keys from {os.path.basename(src)}"})
    return {"keys": len(sd), "renamed": renamed}
