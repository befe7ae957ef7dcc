"""Low-rank adapters on ``nn.Linear`` layers (Hu et al. 2021, "LoRA"), for training.

``LoRALinear(base)`` computes ``base(x) + (alpha / rank) * up(down(x))`` with ``up`` starting
at zero, so a freshly wrapped layer is exactly its base.  Saved factors use the key layout
ComfyUI and kohya read: ``<module>.lora_down.weight`` ``(rank, in)``, ``<module>.lora_up.weight``
``(out, rank)``, ``<module>.alpha`` (scalar).

Two variants serve XLabs' Flux LoRA processors (VideoFrom3D's style LoRAs): ``rows`` limits
the update to the first ``rows`` outputs (a single block's qkv inside ``linear1``), and
``down_std`` initialises ``down`` from ``N(0, down_std²)`` (x-flux ``LoRALinearLayer``: 1/rank)
instead of nn.Linear's Kaiming-uniform.  ``dtype`` keeps the factors in another precision than
the frozen base (float32 factors on a bfloat16 model); the input is cast to it and the update
back, as x-flux's layer does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["LoRALinear", "add_lora", "remove_lora", "lora_state_dict", "SD_ATTENTION_TARGETS", "KOHYA_UNET_PREFIX",
           "kohya_unet_name", "linear_targets", "read_kohya_lora", "merge_kohya_lora"]


class LoRALinear(nn.Module):
    """``base(x) + scale * lora_up(lora_down(x))``, ``scale = alpha / rank`` (alpha defaults to rank).

    rows: update only the first ``rows`` outputs (``lora_up`` is ``(rows, rank)``).  down_std:
    normal init of ``lora_down`` with this std (default: Kaiming-uniform).  dtype: the factors'
    dtype (default: the base weight's).  generator: a CPU generator for the init (default:
    torch's global one)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None, *, rows: int | None = None,
                 down_std: float | None = None, dtype: torch.dtype | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA wraps nn.Linear layers, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if rows is not None and not 0 < rows <= base.out_features:
            raise ValueError(f"LoRA rows must be in 1..{base.out_features}, got {rows}")
        self.base = base
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        self.rows = base.out_features if rows is None else int(rows)
        w = base.weight
        dtype = w.dtype if dtype is None else dtype
        self.lora_down = nn.Linear(base.in_features, rank, bias=False, device=w.device, dtype=dtype)
        self.lora_up = nn.Linear(rank, self.rows, bias=False, device=w.device, dtype=dtype)
        # LoRA paper §4.1: A random (kaiming-uniform as nn.Linear), B zero, so the product starts at 0.
        init = torch.empty(self.lora_down.weight.shape, dtype=torch.float32)  # drawn on the CPU: any device, one seed
        if down_std is None:
            nn.init.kaiming_uniform_(init, a=math.sqrt(5), generator=generator)
        else:
            nn.init.normal_(init, std=down_std, generator=generator)
        with torch.no_grad():
            self.lora_down.weight.copy_(init)
        nn.init.zeros_(self.lora_up.weight)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self, x: Tensor) -> Tensor:
        """The update ``scale * up(down(x))``: ``(..., rows)`` in ``x``'s dtype."""
        d = self.lora_up(self.lora_down(x.to(self.lora_down.weight.dtype))) * self.scale
        return d.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        d = self.delta(x)
        if self.rows == self.base.out_features:
            return out + d
        return torch.cat([out[..., : self.rows] + d, out[..., self.rows:]], dim=-1)

    @torch.no_grad()
    def merged_weight(self) -> Tensor:
        """``W + scale * up @ down`` (on the first ``rows`` rows) in the base weight's dtype."""
        delta = self.lora_up.weight.float() @ self.lora_down.weight.float()
        w = self.base.weight.float().clone()
        w[: self.rows] += self.scale * delta
        return w.to(self.base.weight.dtype)


def add_lora(root: nn.Module, names: Iterable[str], rank: int, alpha: float | None = None, *,
             rows: Mapping[str, int] | None = None, down_std: float | None = None,
             dtype: torch.dtype | None = None, generator: torch.Generator | None = None) -> dict[str, LoRALinear]:
    """Replace the ``nn.Linear`` submodules ``names`` of ``root`` by :class:`LoRALinear`.
    Returns ``{name: wrapper}``; the base layers keep their parameters (freeze them yourself).
    rows: ``{name: rows}`` for layers updated on their first rows only."""
    out = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        base = getattr(parent, child)
        wrapper = LoRALinear(base, rank, alpha, rows=(rows or {}).get(name), down_std=down_std, dtype=dtype,
                             generator=generator)
        setattr(parent, child, wrapper)
        out[name] = wrapper
    return out


def remove_lora(root: nn.Module, loras: Mapping[str, LoRALinear], merge: bool) -> None:
    """Put the base layers back; with ``merge`` their weights become the merged weights."""
    for name, wrapper in loras.items():
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        if merge:
            with torch.no_grad():
                wrapper.base.weight.copy_(wrapper.merged_weight())
        setattr(parent, child, wrapper.base)


def lora_state_dict(loras: Mapping[str, LoRALinear], rename: Callable[[str], str] = lambda n: n) -> dict[str, Tensor]:
    """``{rename(name) + ".lora_down.weight" | ".lora_up.weight" | ".alpha": tensor}`` on CPU."""
    out = {}
    for name, w in loras.items():
        key = rename(name)
        out[f"{key}.lora_down.weight"] = w.lora_down.weight.detach().cpu().contiguous()
        out[f"{key}.lora_up.weight"] = w.lora_up.weight.detach().cpu().contiguous()
        out[f"{key}.alpha"] = torch.tensor(w.alpha)
    return out


# --------------------------------------------------------------------------- SD UNets, kohya files

# Target modules of diffusers' SD LoRA script (examples/text_to_image/train_text_to_image_lora.py:
# LoraConfig(target_modules=["to_k", "to_q", "to_v", "to_out.0"])): every attention projection.
SD_ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# Prefix ComfyUI maps onto the diffusion model for UNet LoRAs (comfy/lora.py::model_lora_keys_unet:
# "lora_unet_" + the diffusers module path with dots as underscores).
KOHYA_UNET_PREFIX = "lora_unet_"
_KOHYA_PARTS = ("lora_down.weight", "lora_up.weight", "alpha")


def kohya_unet_name(name: str) -> str:
    """The kohya key stem of a diffusers UNet module path: ``lora_unet_`` + dots as underscores."""
    return KOHYA_UNET_PREFIX + name.replace(".", "_")


def linear_targets(root: nn.Module, targets: Iterable[str] = SD_ATTENTION_TARGETS) -> list[str]:
    """Paths of the ``nn.Linear`` layers of ``root`` whose path ends with one of ``targets``."""
    targets = tuple(targets)
    return [name for name, m in root.named_modules()
            if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)]


def read_kohya_lora(path, names: Iterable[str], rename: Callable[[str], str] = kohya_unet_name) -> dict[str, tuple]:
    """``{name: (down (r, in), up (out, r), alpha)}`` from a kohya-layout safetensors file whose
    key stems are ``rename(name)`` for the given module ``names``.

    Strict: a key of no given module, or an adapter missing a part, is a ValueError naming the
    file (a LoRA for another model must not load half).  Modules without a key are left out.
    """
    import os

    from safetensors import safe_open

    file = os.path.basename(os.fspath(path))
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from None
    by_stem = {rename(n): n for n in names}
    parts: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        stem, _, part = key.partition(".")
        if stem not in by_stem or part not in _KOHYA_PARTS:
            raise ValueError(f"{file}: unexpected key {key!r} (not a LoRA of this model's target layers)")
        parts.setdefault(by_stem[stem], {})[part] = value
    if not parts:
        raise ValueError(f"{file}: no LoRA weights found")
    out = {}
    for name, p in parts.items():
        missing = [k for k in _KOHYA_PARTS if k not in p]
        if missing:
            raise ValueError(f"{file}: {rename(name)} lacks {missing}")
        out[name] = (p["lora_down.weight"], p["lora_up.weight"], float(p["alpha"]))
    return out


def merge_kohya_lora(root: nn.Module, path, strength: float = 1.0,
                     rename: Callable[[str], str] = kohya_unet_name, targets: Iterable[str] = SD_ATTENTION_TARGETS) -> int:
    """Merge a kohya-layout LoRA into ``root``'s weights in place (``W += strength * alpha/r up down``,
    as ComfyUI's LoraLoader applies it).  Returns the number of layers changed."""
    factors = read_kohya_lora(path, linear_targets(root, targets), rename)
    with torch.no_grad():
        for name, (down, up, alpha) in factors.items():
            layer = root.get_submodule(name)
            if (up.shape[0], down.shape[1]) != tuple(layer.weight.shape) or up.shape[1] != down.shape[0]:
                raise ValueError(f"{rename(name)}: factors {list(up.shape)} x {list(down.shape)} do not fit "
                                 f"{name} {list(layer.weight.shape)}")
            delta = (up.float() @ down.float()) * (strength * alpha / down.shape[0])
            layer.weight += delta.to(layer.weight)
    return len(factors)
