"""Argus UNet: diffusers ``UNetSpatioTemporalConditionModel`` keys -> ComfyUI's SVD (SGM) keys.

Argus (Luo et al., ICCV 2025) fine-tunes every parameter of Stable Video Diffusion's UNet and
releases it in diffusers layout (``<dir>/unet/config.json`` + ``diffusion_pytorch_model.safetensors``).
The architecture is unchanged, so ComfyUI's own SVD UNet runs it once the keys are renamed to the
original SGM layout.  ComfyUI 0.3.64's ``comfy.utils.unet_to_diffusers`` covers only the spatial
parts of a UNet (no ``temporal_res_block``, ``time_mixer``, ``temporal_transformer_blocks``,
``time_pos_embed``), so the whole mapping lives here, derived from the two layouts:

- ``tests/data/svd_unet_diffusers_keys.json``: diffusers' module with the official SVD config,
- ``tests/data/svd_unet_comfy_keys.json``: ComfyUI's ``UNetModel`` with its SVD config,

which the tests check the mapping against (one-to-one, same shapes).

Block layout (``L`` = layers per block, levels counted from the top of the UNet):

=====================================  ======================================
diffusers                              SGM / ComfyUI
=====================================  ======================================
``down_blocks.x.resnets.i``            ``input_blocks.{1+(L+1)x+i}.0``
``down_blocks.x.attentions.i``         ``input_blocks.{1+(L+1)x+i}.1``
``down_blocks.x.downsamplers.0.conv``  ``input_blocks.{1+(L+1)x+L}.0.op``
``mid_block.resnets.0 / .1``           ``middle_block.0 / .2``
``mid_block.attentions.0``             ``middle_block.1``
``up_blocks.x.resnets.i``              ``output_blocks.{(L+1)x+i}.0``
``up_blocks.x.attentions.i``           ``output_blocks.{(L+1)x+i}.1``
``up_blocks.x.upsamplers.0.conv``      ``output_blocks.{(L+1)x+L}.{1|2}.conv`` (2 after attention)
=====================================  ======================================

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

__all__ = [
    "SVDUNetLayout",
    "SVD_HEAD_CHANNELS",
    "infer_svd_unet_layout",
    "expected_diffusers_svd_unet_keys",
    "diffusers_to_sgm_key",
    "convert_diffusers_svd_unet_keys",
    "is_diffusers_svd_unet",
    "strip_sgm_prefix",
    "head_channels_from_config",
    "read_unet_source",
]

# SVD attention heads are 64 channels wide: diffusers config num_attention_heads (5, 10, 20, 20)
# over block_out_channels (320, 640, 1280, 1280); ComfyUI SVD_img2vid.unet_extra_config
# num_head_channels = 64.
SVD_HEAD_CHANNELS = 64
# What diffusers uses for fields a config.json leaves out (UNetSpatioTemporalConditionModel.__init__).
DIFFUSERS_DEFAULT_BLOCK_OUT_CHANNELS = (320, 640, 1280, 1280)
DIFFUSERS_DEFAULT_NUM_ATTENTION_HEADS = (5, 10, 20, 20)

# Prefixes a UNet saved from a full SGM/ComfyUI checkpoint carries.
SGM_PREFIXES = ("model.diffusion_model.", "diffusion_model.")

_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

# SpatioTemporalResBlock sub-layers -> SGM ResBlock sub-layers.
_RESNET_LAYERS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_RESNET_HALVES = {"spatial_res_block": "", "temporal_res_block": "time_stack."}

# Leaves of a (spatial or temporal) BasicTransformerBlock: identical names in both layouts.
_ATTENTION_LEAVES = tuple(
    f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias")
)
_SPATIAL_BLOCK_LEAVES = _ATTENTION_LEAVES + tuple(
    f"{m}.{wb}" for m in ("norm1", "norm2", "norm3", "ff.net.0.proj", "ff.net.2") for wb in ("weight", "bias")
)
_TEMPORAL_BLOCK_LEAVES = _SPATIAL_BLOCK_LEAVES + tuple(
    f"{m}.{wb}" for m in ("norm_in", "ff_in.net.0.proj", "ff_in.net.2") for wb in ("weight", "bias")
)
_BLOCK_LEAF_RE = "|".join(re.escape(x) for x in _TEMPORAL_BLOCK_LEAVES)

_RES_RE = re.compile(r"^(spatial_res_block|temporal_res_block)\.(" + "|".join(_RESNET_LAYERS) + r")\.(weight|bias)$")
_ATTN_RE = re.compile(
    r"^(?:(norm|proj_in|proj_out)\.(weight|bias)"
    r"|(transformer_blocks|temporal_transformer_blocks)\.(\d+)\.(" + _BLOCK_LEAF_RE + r")"
    r"|time_pos_embed\.linear_([12])\.(weight|bias)"
    r"|time_mixer\.mix_factor)$"
)
_BLOCK_RE = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)$")
_MID_RE = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class SVDUNetLayout:
    """Shape of an SVD-family UNet, as far as key names depend on it.

    levels: number of resolution levels (``len(block_out_channels)``; SVD: 4).
    layers_per_block: resnets per down level (SVD: 2; up levels have one more).
    transformer_depth: transformer blocks per attention module (SVD: 1).
    Attention sits on every down level but the last and every up level but the first,
    as in diffusers' ``CrossAttnDownBlockSpatioTemporal`` x3 + ``DownBlockSpatioTemporal``
    (SVD's ``down_block_types``).
    """

    levels: int = 4
    layers_per_block: int = 2
    transformer_depth: int = 1

    def down_has_attention(self, level: int) -> bool:
        return level < self.levels - 1

    def up_has_attention(self, level: int) -> bool:
        return level > 0


def _count(keys: Iterable[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_svd_unet_layout(keys: Iterable[str]) -> SVDUNetLayout:
    """Read the layout from diffusers key names; ValueError if it is not an SVD-family UNet."""
    keys = list(keys)
    levels = _count(keys, r"^down_blocks\.(\d+)\.")
    layers = _count(keys, r"^down_blocks\.0\.resnets\.(\d+)\.")
    depth = _count(keys, r"^down_blocks\.0\.attentions\.0\.transformer_blocks\.(\d+)\.")
    if levels < 2 or layers < 1 or depth < 1:
        raise ValueError(
            "state dict: not a diffusers UNetSpatioTemporalConditionModel (found "
            f"{levels} down blocks, {layers} resnets and {depth} transformer blocks in the first one)"
        )
    return SVDUNetLayout(levels=levels, layers_per_block=layers, transformer_depth=depth)


def _resnet_keys(prefix: str, shapes: Mapping[str, torch.Size]) -> list[str]:
    out = [f"{prefix}.time_mixer.mix_factor"]
    for half in _RESNET_HALVES:
        for layer in ("norm1", "conv1", "time_emb_proj", "norm2", "conv2"):
            out += [f"{prefix}.{half}.{layer}.weight", f"{prefix}.{half}.{layer}.bias"]
    conv1 = shapes.get(f"{prefix}.spatial_res_block.conv1.weight")
    if conv1 is not None and conv1[0] != conv1[1]:  # channel change -> 1x1 shortcut
        out += [f"{prefix}.spatial_res_block.conv_shortcut.weight", f"{prefix}.spatial_res_block.conv_shortcut.bias"]
    return out


def _attention_keys(prefix: str, depth: int) -> list[str]:
    out = [f"{prefix}.{m}.{wb}" for m in ("norm", "proj_in", "proj_out") for wb in ("weight", "bias")]
    out += [f"{prefix}.time_pos_embed.linear_{i}.{wb}" for i in (1, 2) for wb in ("weight", "bias")]
    out.append(f"{prefix}.time_mixer.mix_factor")
    for t in range(depth):
        out += [f"{prefix}.transformer_blocks.{t}.{leaf}" for leaf in _SPATIAL_BLOCK_LEAVES]
        out += [f"{prefix}.temporal_transformer_blocks.{t}.{leaf}" for leaf in _TEMPORAL_BLOCK_LEAVES]
    return out


def expected_diffusers_svd_unet_keys(layout: SVDUNetLayout, shapes: Mapping[str, torch.Size]) -> set[str]:
    """Every key a complete diffusers SVD UNet of ``layout`` has.

    shapes: the file's ``{key: shape}``; only used to decide which resnets change their channel
    count (those carry a ``conv_shortcut``).
    """
    keys = [f"{name}.{wb}" for name in _TOP_LEVEL for wb in ("weight", "bias")]
    L = layout.layers_per_block
    for x in range(layout.levels):
        for i in range(L):
            keys += _resnet_keys(f"down_blocks.{x}.resnets.{i}", shapes)
            if layout.down_has_attention(x):
                keys += _attention_keys(f"down_blocks.{x}.attentions.{i}", layout.transformer_depth)
        if x < layout.levels - 1:
            keys += [f"down_blocks.{x}.downsamplers.0.conv.weight", f"down_blocks.{x}.downsamplers.0.conv.bias"]
    keys += _resnet_keys("mid_block.resnets.0", shapes) + _resnet_keys("mid_block.resnets.1", shapes)
    keys += _attention_keys("mid_block.attentions.0", layout.transformer_depth)
    for x in range(layout.levels):
        for i in range(L + 1):
            keys += _resnet_keys(f"up_blocks.{x}.resnets.{i}", shapes)
            if layout.up_has_attention(x):
                keys += _attention_keys(f"up_blocks.{x}.attentions.{i}", layout.transformer_depth)
        if x < layout.levels - 1:
            keys += [f"up_blocks.{x}.upsamplers.0.conv.weight", f"up_blocks.{x}.upsamplers.0.conv.bias"]
    return set(keys)


def _resnet_rest(rest: str, key: str) -> str:
    if rest == "time_mixer.mix_factor":
        return rest
    m = _RES_RE.match(rest)
    if m is None:
        raise ValueError(f"state dict: unknown resnet key {key!r}")
    return f"{_RESNET_HALVES[m.group(1)]}{_RESNET_LAYERS[m.group(2)]}.{m.group(3)}"


def _attention_rest(rest: str, key: str) -> str:
    m = _ATTN_RE.match(rest)
    if m is None:
        raise ValueError(f"state dict: unknown attention key {key!r}")
    if m.group(1):
        return rest
    if m.group(3):
        stack = "transformer_blocks" if m.group(3) == "transformer_blocks" else "time_stack"
        return f"{stack}.{m.group(4)}.{m.group(5)}"
    if m.group(6):
        return f"time_pos_embed.{0 if m.group(6) == '1' else 2}.{m.group(7)}"
    return rest  # time_mixer.mix_factor


def diffusers_to_sgm_key(key: str, layout: SVDUNetLayout) -> str:
    """One diffusers SVD UNet key -> its SGM/ComfyUI name; ValueError for an unknown key."""
    L = layout.layers_per_block
    for src, dst in _TOP_LEVEL.items():
        if key in (f"{src}.weight", f"{src}.bias"):
            return dst + key[len(src):]
    m = _MID_RE.match(key)
    if m is not None:
        kind, i, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "resnets" and i in (0, 1):
            return f"middle_block.{2 * i}.{_resnet_rest(rest, key)}"
        if kind == "attentions" and i == 0:
            return f"middle_block.1.{_attention_rest(rest, key)}"
        raise ValueError(f"state dict: unknown mid-block key {key!r}")
    m = _BLOCK_RE.match(key)
    if m is None:
        raise ValueError(f"state dict: unknown key {key!r} (not a diffusers SVD UNet key)")
    side, x, kind, i, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
    if side == "down_blocks":
        base = 1 + (L + 1) * x
        if kind == "resnets":
            return f"input_blocks.{base + i}.0.{_resnet_rest(rest, key)}"
        if kind == "attentions":
            return f"input_blocks.{base + i}.1.{_attention_rest(rest, key)}"
        if kind == "downsamplers" and i == 0 and rest in ("conv.weight", "conv.bias"):
            return f"input_blocks.{base + L}.0.op.{rest[len('conv.'):]}"
    else:
        base = (L + 1) * x
        if kind == "resnets":
            return f"output_blocks.{base + i}.0.{_resnet_rest(rest, key)}"
        if kind == "attentions":
            return f"output_blocks.{base + i}.1.{_attention_rest(rest, key)}"
        if kind == "upsamplers" and i == 0 and rest in ("conv.weight", "conv.bias"):
            slot = 2 if layout.up_has_attention(x) else 1
            return f"output_blocks.{base + L}.{slot}.{rest}"
    raise ValueError(f"state dict: unknown key {key!r}")


def _listing(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def convert_diffusers_svd_unet_keys(sd: Mapping[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """Rename a diffusers SVD UNet state dict to ComfyUI's SVD (SGM) layout.

    sd: ``{diffusers key: tensor}`` of a complete ``UNetSpatioTemporalConditionModel``.
    source: the file name, for error messages.
    Returns a new dict ``{sgm key: same tensor}`` (tensors are not copied).
    Raises ValueError naming the missing or unexpected keys when ``sd`` is incomplete or has
    extra entries: a partial UNet is refused, never loaded with random weights.
    """
    layout = infer_svd_unet_layout(sd.keys())
    expected = expected_diffusers_svd_unet_keys(layout, {k: v.shape for k, v in sd.items()})
    missing, unexpected = expected - set(sd), set(sd) - expected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        raise ValueError(f"{source}: not a complete SVD UNet ({layout}); " + "; ".join(parts))
    out = {diffusers_to_sgm_key(k, layout): v for k, v in sd.items()}
    if len(out) != len(sd):  # a mapping bug, not a user error: keep it loud
        raise ValueError(f"{source}: key conversion is not one-to-one ({len(sd)} -> {len(out)} keys)")
    return out


def is_diffusers_svd_unet(keys: Iterable[str]) -> bool:
    """True for diffusers layout (``down_blocks.*``), False for SGM (``input_blocks.*``)."""
    keys = list(keys)
    if any(k.startswith("down_blocks.") for k in keys):
        return True
    if any(k.startswith(p + "input_blocks.") or k.startswith("input_blocks.") for p in SGM_PREFIXES for k in keys):
        return False
    raise ValueError("state dict: neither a diffusers (down_blocks.*) nor an SGM (input_blocks.*) UNet")


def strip_sgm_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SGM keys with any ``model.diffusion_model.`` prefix removed; other entries (VAE, CLIP) dropped
    when the file is a full checkpoint."""
    for prefix in SGM_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def head_channels_from_config(config: Mapping) -> int:
    """Channels per attention head from a diffusers ``unet/config.json`` (SVD: 64).

    ComfyUI's UNet is built with a fixed head width, diffusers with a head count per level, so
    the widths must agree across levels.
    """
    channels = list(config.get("block_out_channels", DIFFUSERS_DEFAULT_BLOCK_OUT_CHANNELS))
    heads = config.get("num_attention_heads", DIFFUSERS_DEFAULT_NUM_ATTENTION_HEADS)
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(channels)
    widths = {c // h for c, h in zip(channels, heads)}
    if len(widths) != 1 or any(c % h for c, h in zip(channels, heads)):
        raise ValueError(
            f"unet config: block_out_channels {channels} over num_attention_heads {heads} give "
            "unequal head widths; ComfyUI's SVD UNet needs one head width"
        )
    return widths.pop()


def read_unet_source(path: str) -> tuple[str, dict | None]:
    """Resolve a diffusers folder or a single file to (weights file, config dict or None).

    Accepts ``<dir>`` containing ``unet/``, the ``unet`` folder itself, or a ``.safetensors`` file
    (a ``config.json`` beside it is read when present).
    """
    if os.path.isdir(path):
        for folder in (os.path.join(path, "unet"), path):
            weights = os.path.join(folder, "diffusion_pytorch_model.safetensors")
            if os.path.isfile(weights):
                config_path = os.path.join(folder, "config.json")
                return weights, _read_json(config_path)
        raise ValueError(f"unet path: {path!r} has no unet/diffusion_pytorch_model.safetensors")
    if not os.path.isfile(path):
        raise ValueError(f"unet path: {path!r} does not exist")
    config_path = os.path.join(os.path.dirname(path), "config.json")
    return path, _read_json(config_path)


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
