"""Low-rank adapters on ``nn.Linear`` layers (Hu et al. 2021, "LoRA"), for training.

``LoRALinear(base)`` computes ``base(x) + (alpha / rank) * up(down(x))`` with ``up`` starting
at zero, so a freshly wrapped layer is exactly its base.  Saved factors use the key layout
ComfyUI and kohya read: ``<module>.lora_down.weight`` ``(rank, in)``, ``<module>.lora_up.weight``
``(out, rank)``, ``<module>.alpha`` (scalar).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["LoRALinear", "add_lora", "remove_lora", "lora_state_dict"]


class LoRALinear(nn.Module):
    """``base(x) + scale * lora_up(lora_down(x))``, ``scale = alpha / rank`` (alpha defaults to rank)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA wraps nn.Linear layers, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        w = base.weight
        self.lora_down = nn.Linear(base.in_features, rank, bias=False, device=w.device, dtype=w.dtype)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False, device=w.device, dtype=w.dtype)
        # LoRA paper §4.1: A random (kaiming-uniform as nn.Linear), B zero, so the product starts at 0.
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.lora_up(self.lora_down(x)) * self.scale

    @torch.no_grad()
    def merged_weight(self) -> Tensor:
        """``W + scale * up @ down`` in the base weight's dtype."""
        delta = self.lora_up.weight.float() @ self.lora_down.weight.float()
        return (self.base.weight.float() + self.scale * delta).to(self.base.weight.dtype)


def add_lora(root: nn.Module, names: Iterable[str], rank: int, alpha: float | None = None) -> dict[str, LoRALinear]:
    """Replace the ``nn.Linear`` submodules ``names`` of ``root`` by :class:`LoRALinear`.
    Returns ``{name: wrapper}``; the base layers keep their parameters (freeze them yourself)."""
    out = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        base = getattr(parent, child)
        wrapper = LoRALinear(base, rank, alpha)
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
