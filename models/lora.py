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

__all__ = ["LoRALinear", "add_lora", "remove_lora", "lora_state_dict"]


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
