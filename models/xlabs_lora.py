"""XLabs-format Flux LoRAs (VideoFrom3D's style LoRAs and ControlNet LoRAs) on ComfyUI's Flux.

VideoFrom3D trains its distribution-alignment LoRAs with x-flux (``sag_distribution_alignment.py``)
and saves them as attention-processor weights (``src/flux/modules/layers.py``)::

    double_blocks.N.processor.{qkv,proj}_lora{1,2}.{down,up}.weight   (1: image stream, 2: text)
    single_blocks.N.processor.{qkv,proj}_lora.{down,up}.weight

The processors add ``up(down(x))`` to the outputs of ``img_attn.qkv`` / ``img_attn.proj``
(lora1), ``txt_attn.qkv`` / ``txt_attn.proj`` (lora2), the first ``3·hidden`` outputs of a single
block's ``linear1`` (qkv_lora) and all of ``linear2`` (proj_lora, input ``hidden + mlp`` = 15360).
No ``network_alpha`` is saved, so the scale is 1.  ComfyUI's Flux and XLabs ControlNet use the
same (BFL) module names, so a LoRA maps onto weight keys one to one.

Quirk kept out: the official loader multiplies *both* ``down`` and ``up`` by ``--lora_weight``
(``update_model_with_lora``), so its effective strength is the square of that flag; here strength
``s`` means ``W + s·up·down`` (ComfyUI's meaning).  The paper runs at 1, where both agree.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

__all__ = ["XLabsTarget", "xlabs_lora_targets", "is_xlabs_lora", "merge_xlabs_lora", "comfy_lora_inputs",
           "XLABS_LORA_INIT_STD", "xlabs_lora_layers", "xlabs_key", "xlabs_state_dict", "kohya_state_dict"]

# x-flux LoRALinearLayer: ``nn.init.normal_(self.down.weight, std=1 / rank)``, up zero; the
# std of ``down`` at init is XLABS_LORA_INIT_STD / rank.
XLABS_LORA_INIT_STD = 1.0

_DOUBLE = re.compile(r"^double_blocks\.(\d+)\.processor\.(qkv|proj)_lora([12])\.(down|up)\.weight$")
_SINGLE = re.compile(r"^single_blocks\.(\d+)\.processor\.(qkv|proj)_lora\.(down|up)\.weight$")


class XLabsTarget:
    """One LoRA pair and the weight it updates: ``weight_key``; ``rows`` (start, size) when only a
    slice of the output rows is updated (a single block's qkv inside ``linear1``), else None."""

    __slots__ = ("name", "down", "up", "weight_key", "rows")

    def __init__(self, name: str, down: Tensor, up: Tensor, weight_key: str, rows: tuple[int, int] | None):
        self.name, self.down, self.up, self.weight_key, self.rows = name, down, up, weight_key, rows


def is_xlabs_lora(sd: dict) -> bool:
    return any(_DOUBLE.match(k) or _SINGLE.match(k) for k in sd)


def xlabs_lora_targets(lora: dict[str, Tensor], prefix: str = "") -> list[XLabsTarget]:
    """The updates an XLabs LoRA makes.  ``prefix`` is put before every weight key
    (``"diffusion_model."`` for a ComfyUI MODEL).  ValueError for keys that are not XLabs LoRA keys
    or pairs missing a half."""
    pairs: dict[tuple, dict[str, Tensor]] = {}
    for k, v in lora.items():
        m = _DOUBLE.match(k)
        if m:
            block, kind, stream, half = m.groups()
            pairs.setdefault(("double", int(block), kind, stream), {})[half] = v
            continue
        m = _SINGLE.match(k)
        if m:
            block, kind, half = m.groups()
            pairs.setdefault(("single", int(block), kind, ""), {})[half] = v
            continue
        raise ValueError(f"not an XLabs Flux LoRA key: {k!r} (expected double_blocks.N.processor."
                         "{qkv,proj}_lora{1,2}.{down,up}.weight or single_blocks.N.processor.{qkv,proj}_lora...)")
    out = []
    for (kind_b, block, kind, stream), halves in sorted(pairs.items()):
        if set(halves) != {"down", "up"}:
            raise ValueError(f"XLabs LoRA {kind_b}_blocks.{block} {kind}: needs both down and up weights")
        down, up = halves["down"], halves["up"]
        if kind_b == "double":
            attn = "img_attn" if stream == "1" else "txt_attn"
            key, rows = f"{prefix}double_blocks.{block}.{attn}.{kind}.weight", None
        elif kind == "qkv":
            key, rows = f"{prefix}single_blocks.{block}.linear1.weight", (0, up.shape[0])
        else:
            key, rows = f"{prefix}single_blocks.{block}.linear2.weight", None
        out.append(XLabsTarget(f"{kind_b}_blocks.{block}.{kind}{stream}", down, up, key, rows))
    return out


def merge_xlabs_lora(weights: dict[str, Tensor], lora: dict[str, Tensor], strength: float = 1.0,
                     prefix: str = "") -> dict[str, Tensor]:
    """``weights`` with the LoRA merged (a new dict; untouched tensors are shared).  For state dicts
    loaded before ComfyUI builds the model (the XLabs ControlNet).  ValueError naming a missing
    weight key or a shape mismatch."""
    out = dict(weights)
    for t in xlabs_lora_targets(lora, prefix):
        if t.weight_key not in out:
            raise ValueError(f"XLabs LoRA {t.name}: the model has no weight {t.weight_key!r}")
        w = out[t.weight_key]
        delta = t.up.float() @ t.down.float()
        start, size = t.rows if t.rows else (0, w.shape[0])
        if delta.shape != (size, w.shape[1]) or start + size > w.shape[0]:
            raise ValueError(f"XLabs LoRA {t.name}: update {tuple(delta.shape)} does not fit {t.weight_key} "
                             f"{tuple(w.shape)}")
        new = w.float().clone()
        new[start : start + size] += strength * delta
        out[t.weight_key] = new.to(w.dtype)
    return out


def comfy_lora_inputs(lora: dict[str, Tensor], prefix: str = "diffusion_model.") -> tuple[dict, dict]:
    """``(lora_sd, key_map)`` for ComfyUI's own ``comfy.lora.load_lora``: every pair renamed to
    ``xlabs.<name>.lora_{up,down}.weight`` and mapped to its weight key (with ComfyUI's
    ``(key, (dim, start, size))`` slice form for a single block's qkv)."""
    sd, key_map = {}, {}
    for t in xlabs_lora_targets(lora, prefix):
        name = f"xlabs.{t.name}"
        sd[f"{name}.lora_up.weight"] = t.up
        sd[f"{name}.lora_down.weight"] = t.down
        key_map[name] = (t.weight_key, (0, t.rows[0], t.rows[1])) if t.rows else t.weight_key
    return sd, key_map



# ------------------------------------------------------------------- writing (the trainer's side)

# Our trainable module names (BFL layout) -> the x-flux processor LoRA that wraps them.
_PROCESSOR_NAMES = {"img_attn.qkv": "qkv_lora1", "img_attn.proj": "proj_lora1", "txt_attn.qkv": "qkv_lora2",
                    "txt_attn.proj": "proj_lora2", "linear1": "qkv_lora", "linear2": "proj_lora"}
_LAYER = re.compile(r"^(double_blocks|single_blocks)\.(\d+)\.(.+)$")


def xlabs_lora_layers(double_blocks, single_blocks, hidden_size: int) -> tuple[list[str], dict[str, int]]:
    """The ``nn.Linear`` layers x-flux's LoRA processors update, as module names of a BFL-layout Flux
    (or ControlNet), and ``{name: rows}`` for the row-sliced ones: a single block's ``qkv_lora``
    updates only the first ``3 · hidden`` outputs of ``linear1``."""
    names, rows = [], {}
    for i in double_blocks:
        names += [f"double_blocks.{i}.{m}" for m in ("img_attn.qkv", "img_attn.proj", "txt_attn.qkv", "txt_attn.proj")]
    for i in single_blocks:
        names += [f"single_blocks.{i}.linear1", f"single_blocks.{i}.linear2"]
        rows[f"single_blocks.{i}.linear1"] = 3 * hidden_size
    return names, rows


def xlabs_key(module_name: str) -> str:
    """``double_blocks.3.img_attn.qkv`` -> ``double_blocks.3.processor.qkv_lora1`` (the x-flux key
    stem; files add ``.down.weight`` / ``.up.weight``)."""
    m = _LAYER.match(module_name)
    if not m or m.group(3) not in _PROCESSOR_NAMES:
        raise ValueError(f"no XLabs LoRA processor wraps {module_name!r}")
    return f"{m.group(1)}.{m.group(2)}.processor.{_PROCESSOR_NAMES[m.group(3)]}"


def xlabs_state_dict(loras: dict, dtype=None) -> dict[str, Tensor]:
    """Trained :class:`~.lora.LoRALinear` wrappers (scale 1) as an XLabs LoRA file's tensors, the
    layout ``sag_distribution_alignment.py`` saves and :func:`xlabs_lora_targets` reads."""
    out = {}
    for name, w in loras.items():
        if w.scale != 1.0:
            raise ValueError(f"XLabs LoRAs have no alpha (scale 1); {name} has scale {w.scale}")
        key = xlabs_key(name)
        out[f"{key}.down.weight"] = w.lora_down.weight.detach().to("cpu", dtype or w.lora_down.weight.dtype).contiguous()
        out[f"{key}.up.weight"] = w.lora_up.weight.detach().to("cpu", dtype or w.lora_up.weight.dtype).contiguous()
    return out


def kohya_state_dict(loras: dict, dtype=None) -> dict[str, Tensor]:
    """The same LoRA in kohya's Flux layout for ComfyUI's stock LoRA loaders
    (``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``,
    which ``comfy.lora.model_lora_keys_unet`` maps onto ``diffusion_model.<name>.weight``).  A
    row-sliced update becomes a full-height ``up`` with zero rows below the slice (exact)."""
    out = {}
    for name, w in loras.items():
        key = "lora_unet_" + name.replace(".", "_")
        up = w.lora_up.weight.detach().float()
        full = up.new_zeros(w.base.out_features, up.shape[1])
        full[: up.shape[0]] = up
        dt = dtype or w.lora_up.weight.dtype
        out[f"{key}.lora_down.weight"] = w.lora_down.weight.detach().to("cpu", dt).contiguous()
        out[f"{key}.lora_up.weight"] = full.to("cpu", dt).contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(w.alpha))
    return out
