"""Low-rank adapters (LoRA) on a frozen network's Linear layers, in the kohya key layout.

LoRA (Hu et al. 2021, arXiv 2106.09685, Eq. 3): a frozen ``W`` gains ``(alpha / r) B A`` with
``A (r, in)`` initialised like ``nn.Linear`` (Kaiming-uniform, a = sqrt 5, as the reference
``loralib`` does) and ``B (out, r)`` at zero, so an untrained adapter changes nothing.

Adapters are attached with forward hooks for the duration of a ``with`` block
(:func:`lora_hooks`); the network's own modules and state dict never change.  Keys follow
the kohya layout that ComfyUI's ``LoraLoader`` maps for SD UNets
(``comfy/lora.py::model_lora_keys_unet``: ``lora_unet_`` + the diffusers module path with
dots as underscores)::

    lora_unet_<path_with_underscores>.lora_down.weight   (r, in)
    lora_unet_<path_with_underscores>.lora_up.weight     (out, r)
    lora_unet_<path_with_underscores>.alpha              ()  scale = alpha / r

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

__all__ = ["SD_ATTENTION_TARGETS", "KOHYA_UNET_PREFIX", "LoRAAdapter", "LoRASet", "lora_hooks", "save_lora", "load_lora"]

# Target modules of diffusers' SD LoRA script (examples/text_to_image/train_text_to_image_lora.py:
# LoraConfig(target_modules=["to_k", "to_q", "to_v", "to_out.0"])): every attention projection.
SD_ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# Prefix ComfyUI maps onto the diffusion model for UNet LoRAs (comfy/lora.py).
KOHYA_UNET_PREFIX = "lora_unet_"
_KEY = re.compile(r"^(?P<name>.+)\.(?P<part>lora_down\.weight|lora_up\.weight|alpha)$")


class LoRAAdapter(nn.Module):
    """The low-rank branch of one Linear: ``x -> (alpha / r) * lora_up(lora_down(x))``."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float | None = None):
        super().__init__()
        if isinstance(rank, bool) or int(rank) != rank or rank < 1:
            raise ValueError(f"rank: expected a positive integer, got {rank!r}")
        self.rank = int(rank)
        self.lora_down = nn.Linear(in_features, self.rank, bias=False)
        self.lora_up = nn.Linear(self.rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.register_buffer("alpha", torch.tensor(float(self.rank if alpha is None else alpha)))

    def forward(self, x: Tensor) -> Tensor:
        return self.lora_up(self.lora_down(x)) * (self.alpha / self.rank).to(x.dtype)

    def delta_weight(self) -> Tensor:
        """``(alpha / r) B A``, the change of the base weight ``(out, in)``."""
        return (self.lora_up.weight @ self.lora_down.weight) * (self.alpha / self.rank)


class LoRASet(nn.Module):
    """One :class:`LoRAAdapter` per target Linear, keyed by ``prefix + path`` (dots -> ``_``).

    shapes: ``{module path: (in_features, out_features)}``.
    """

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int, alpha: float | None = None,
                 prefix: str = KOHYA_UNET_PREFIX):
        super().__init__()
        if not shapes:
            raise ValueError("shapes: a LoRA set needs at least one target module")
        self.prefix = prefix
        self.paths = tuple(shapes)
        for path, (fan_in, fan_out) in shapes.items():
            self.add_module(self.key(path), LoRAAdapter(fan_in, fan_out, rank, alpha))

    def key(self, path: str) -> str:
        return self.prefix + path.replace(".", "_")

    def adapter(self, path: str) -> LoRAAdapter:
        return self._modules[self.key(path)]

    @staticmethod
    def for_model(model: nn.Module, rank: int, alpha: float | None = None,
                  targets: Sequence[str] = SD_ATTENTION_TARGETS, prefix: str = KOHYA_UNET_PREFIX) -> "LoRASet":
        """Adapters for every ``nn.Linear`` of ``model`` whose path ends with one of ``targets``."""
        shapes = {path: (m.in_features, m.out_features) for path, m in _targets(model, targets).items()}
        if not shapes:
            raise ValueError(f"{type(model).__name__}: no Linear layer named like {list(targets)}")
        return LoRASet(shapes, rank, alpha, prefix)


def _targets(model: nn.Module, targets: Sequence[str]) -> dict[str, nn.Linear]:
    out = {}
    for path, m in model.named_modules():
        if isinstance(m, nn.Linear) and any(path == t or path.endswith("." + t) for t in targets):
            out[path] = m
    return out


@contextmanager
def lora_hooks(model: nn.Module, loras: LoRASet) -> Iterator[None]:
    """Add each adapter's branch to its Linear's output while the ``with`` block runs.

    ValueError when a path of ``loras`` is not a Linear of ``model`` of the same shape.
    """
    modules = dict(model.named_modules())
    for path in loras.paths:
        m = modules.get(path)
        a = loras.adapter(path)
        if not isinstance(m, nn.Linear):
            raise ValueError(f"LoRA target {path!r} is not a Linear layer of {type(model).__name__}")
        if (m.in_features, m.out_features) != (a.lora_down.in_features, a.lora_up.out_features):
            raise ValueError(f"LoRA target {path!r}: adapter is {a.lora_down.in_features}->{a.lora_up.out_features}, "
                             f"layer is {m.in_features}->{m.out_features}")
    handles = []
    try:
        for path in loras.paths:
            adapter = loras.adapter(path)
            handles.append(modules[path].register_forward_hook(lambda _m, args, out, a=adapter: out + a(args[0])))
        yield
    finally:
        for h in handles:
            h.remove()


def save_lora(loras: LoRASet, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write the kohya-layout state dict to ``path`` (callers that publish a file wrap this in
    ``media.atomic.atomic_path``)."""
    state = {k: v.detach().contiguous().cpu() for k, v in loras.state_dict().items()}
    save_file(state, os.fspath(path), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_lora(path: str | os.PathLike, prefix: str = KOHYA_UNET_PREFIX,
              paths: Sequence[str] | None = None) -> LoRASet:
    """Read a kohya-layout LoRA.  Module paths cannot be recovered from underscored keys in
    general, so pass ``paths`` (the target module paths) to map them back; without it the
    set is keyed by the underscored names (fine for saving and resuming).  Strict: a key
    outside the layout, or an adapter missing a part, is a ValueError naming the file.
    """
    name = os.path.basename(os.fspath(path))
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ValueError(f"{name}: not a readable safetensors file ({e})") from None
    parts: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        m = _KEY.match(key)
        if m is None or not m["name"].startswith(prefix):
            raise ValueError(f"{name}: unexpected key {key!r} (expected {prefix}*.lora_down/lora_up/alpha)")
        parts.setdefault(m["name"][len(prefix):], {})[m["part"]] = value
    if not parts:
        raise ValueError(f"{name}: no LoRA weights found")
    by_key = {p.replace(".", "_"): p for p in (paths or ())}
    shapes, ranks, alphas = {}, set(), {}
    for stem, p in parts.items():
        missing = {"lora_down.weight", "lora_up.weight", "alpha"} - set(p)
        if missing:
            raise ValueError(f"{name}: {prefix}{stem} lacks {sorted(missing)}")
        if paths is not None and stem not in by_key:
            raise ValueError(f"{name}: {prefix}{stem} matches none of the given module paths")
        down, up = p["lora_down.weight"], p["lora_up.weight"]
        shapes[by_key.get(stem, stem)] = (down.shape[1], up.shape[0])
        ranks.add(down.shape[0])
        alphas[stem] = float(p["alpha"])
    if len(ranks) != 1 or len(set(alphas.values())) != 1:
        raise ValueError(f"{name}: adapters of different ranks {sorted(ranks)} or alphas are not supported")
    loras = LoRASet(shapes, ranks.pop(), next(iter(alphas.values())), prefix)
    loras.load_state_dict(state, strict=True)
    return loras
