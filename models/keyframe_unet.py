"""Weights of SVD keyframe inbetweening: svd_keyframe_interpolation's temporal-attention delta.

``jeanne-wang/svd_keyframe_interpolation`` fine-tunes SVD *img2vid* (14 frames) on reversed
videos and releases the whole UNet (diffusers layout).  Its ``keyframe_interpolation.py`` (and
Look Beyond's ``videogen.py --delta_mode temporal_attn_delta``, the default) does not run that UNet
as is: it adds only ``finetuned - img2vid`` of the first temporal self-attention's value and
output projections to SVD-*xt*'s UNet::

    merged[k] = xt[k] + (finetuned[k] - img2vid[k])   for k containing
        temporal_transformer_blocks.0.attn1.to_v   or   temporal_transformer_blocks.0.attn1.to_out.0

(16 layers x {to_v.weight, to_out.0.weight, to_out.0.bias} in SVD).  ``full`` mode instead runs
the fine-tuned UNet whole for the backward pass.

Keys here are ComfyUI's (SGM) names, e.g. ``input_blocks.1.1.time_stack.0.attn1.to_v.weight``;
files in diffusers layout are renamed with :mod:`models.svd_unet`'s converter, and a
``.safetensors`` file is read lazily (only the 48 tensors a delta needs, not the 1.5-4 GB file).

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from .svd_unet import SGM_PREFIXES, diffusers_to_sgm_key, infer_svd_unet_layout, is_diffusers_svd_unet

__all__ = [
    "DELTA_LEAVES",
    "temporal_attn1_layers",
    "is_delta_key",
    "read_delta_tensors",
    "temporal_attention_delta",
]

# keyframe_interpolation.py main(): the substrings that select the delta (diffusers names).
DIFFUSERS_DELTA_SUBSTRINGS = ("temporal_transformer_blocks.0.attn1.to_v", "temporal_transformer_blocks.0.attn1.to_out.0")
# The same parameters in ComfyUI's SGM layout, relative to a layer prefix "<block>.time_stack.0".
DELTA_LEAVES = ("attn1.to_v.weight", "attn1.to_out.0.weight", "attn1.to_out.0.bias")
_SGM_LAYER_RE = re.compile(r"^(.+\.time_stack\.0)\.attn1\.to_q\.weight$")


def temporal_attn1_layers(keys: Iterable[str]) -> list[str]:
    """The layer prefixes (``<block>.time_stack.0``) of every spatio-temporal transformer's first
    temporal block, from SGM keys, sorted as they appear in the UNet (input, middle, output)."""
    order = {"input_blocks": 0, "middle_block": 1, "output_blocks": 2}

    def rank(prefix: str):
        parts = prefix.split(".")
        return order.get(parts[0], 3), [int(p) if p.isdigit() else p for p in parts[1:]]

    layers = {m.group(1) for k in keys if (m := _SGM_LAYER_RE.match(k))}
    # ResBlocks also have a "time_stack" (their temporal half), but no attn1: only transformers match.
    return sorted(layers, key=rank)


def is_delta_key(key: str) -> bool:
    """Whether an SGM key (no prefix) is one of the delta's parameters."""
    return any(key.endswith(".time_stack.0." + leaf) for leaf in DELTA_LEAVES)


def _select(keys: list[str], source: str) -> dict[str, str]:
    """``{file key: unprefixed SGM key}`` of the delta parameters among a file's keys."""
    if is_diffusers_svd_unet(keys):
        layout = infer_svd_unet_layout(keys)
        return {k: diffusers_to_sgm_key(k, layout) for k in keys
                if any(s in k for s in DIFFUSERS_DELTA_SUBSTRINGS)}
    prefix = next((p for p in SGM_PREFIXES if any(k.startswith(p) for k in keys)), "")
    return {k: k[len(prefix):] for k in keys if k.startswith(prefix) and is_delta_key(k[len(prefix):])}


def read_delta_tensors(path: str, load_file=None) -> dict[str, Tensor]:
    """The delta parameters of an SVD UNet file (diffusers or SGM, bare UNet or whole checkpoint),
    under SGM names.  ``.safetensors`` files are read lazily; other formats go through
    ``load_file(path) -> state dict`` (ComfyUI's weights-only loader in the nodes).

    ValueError naming the file when it holds no SVD temporal attention.
    """
    source = os.path.basename(path)
    if path.endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            picked = _select(keys, source)
            out = {sgm: f.get_tensor(k) for k, sgm in picked.items()}
    else:
        if load_file is None:
            raise ValueError(f"{source}: not a .safetensors file and no loader given")
        sd = load_file(path)
        picked = _select(list(sd), source)
        out = {sgm: sd[k] for k, sgm in picked.items()}
    if not out:
        raise ValueError(f"{source}: no temporal attention (time_stack.0.attn1 / temporal_transformer_blocks.0.attn1) "
                         "found; expected an SVD UNet or SVD checkpoint")
    return out


def temporal_attention_delta(base: Mapping[str, Tensor], finetuned: Mapping[str, Tensor], reference: Mapping[str, Tensor],
                             sources: tuple[str, str, str] = ("base", "finetuned", "reference")) -> dict[str, Tensor]:
    """``base + (finetuned - reference)`` for every delta key of ``base`` (at least float32
    arithmetic, returned in ``base``'s dtypes).

    All three: ``{SGM key: tensor}`` holding at least the delta keys of ``base``'s layers.
    ValueError names the file (``sources``) and the key that is missing or has another shape:
    a fine-tuned UNet of another architecture is refused, never half-merged.
    """
    keys = sorted(k for k in base if is_delta_key(k))
    if not keys:
        raise ValueError(f"{sources[0]}: no temporal attention parameters to merge into")
    out = {}
    for key in keys:
        for name, sd in zip(sources[1:], (finetuned, reference)):
            if key not in sd:
                raise ValueError(f"{name}: missing {key} (not the same UNet architecture as {sources[0]})")
            if tuple(sd[key].shape) != tuple(base[key].shape):
                raise ValueError(f"{name}: {key} has shape {tuple(sd[key].shape)}, {sources[0]} has {tuple(base[key].shape)}")
        work = torch.promote_types(base[key].dtype, torch.float32)
        delta = finetuned[key].to(work) - reference[key].to(work)
        merged = base[key].to(work) + delta.to(base[key].device)
        out[key] = merged.to(base[key].dtype)
    return out
