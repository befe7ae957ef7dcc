"""VideoFrom3D's GGI transformer: loading ``checkpoint-1350``, merging its LoRA, and the two homes
it runs in (ComfyUI's native CogVideoX, diffusers' ``CogVideoXTransformer3DModel``).

``checkpoint-1350/transformer`` (Google Drive, README of KIMGEONUNG/VideoFrom3D) holds a
``config.json`` and sharded safetensors of a CogVideoX-5B-I2V transformer whose
``patch_embed.proj`` takes 48 channels and which carries a PEFT LoRA (r = alpha = 2048 on
``to_q``, ``to_k``, ``to_v``, ``to_out.0``, keys ``….base_layer.*``, ``….lora_A.default.weight``,
``….lora_B.default.weight``); ``ggi.py`` loads it strictly into that model.  Merging
``W + (alpha / r)·B·A`` gives a plain 48-channel transformer (golden key lists:
tests/data/vf3d_ggi_keys.json).

ComfyUI 0.33's native ``comfy.ldm.cogvideo`` names the same weights differently
(:func:`convert_ggi_to_comfy`) and must be built with ``spatial_interpolation_scale = 1``: its
CogVideoX-1.0 rotary embedding multiplies positions by that scale, diffusers' pipeline (what the
weights were trained with) does not; with 1 the two agree to float rounding (tests/host).  Its
model detection also drops the rotary embedding when a learned positional embedding is present,
which 5B-I2V has both of, so the configuration is given explicitly (:func:`comfy_unet_config`).
"""

from __future__ import annotations

import glob
import json
import os
import re

import torch
from torch import Tensor

__all__ = [
    "GGI_IN_CHANNELS",
    "GGI_LORA_SCALE",
    "COGVIDEOX_5B_I2V",
    "ggi_config",
    "read_sharded_safetensors",
    "merge_peft_lora",
    "convert_ggi_to_comfy",
    "comfy_unet_config",
    "rotary_embedding",
    "DiffusersGGI",
]

GGI_IN_CHANNELS = 48  # ggi.py: noise 16 + image 16 + HED 16
GGI_LORA_SCALE = 1.0  # ggi.py LoraConfig(r=2048, lora_alpha=2048): alpha / r

# THUDM/CogVideoX-5b-I2V transformer/config.json
COGVIDEOX_5B_I2V = dict(
    activation_fn="gelu-approximate", attention_bias=True, attention_head_dim=64, dropout=0.0, flip_sin_to_cos=True,
    freq_shift=0, in_channels=32, max_text_seq_length=226, norm_elementwise_affine=True, norm_eps=1e-05,
    num_attention_heads=48, num_layers=42, out_channels=16, patch_size=2, sample_frames=49, sample_height=60,
    sample_width=90, spatial_interpolation_scale=1.875, temporal_compression_ratio=4,
    temporal_interpolation_scale=1.0, text_embed_dim=4096, time_embed_dim=512, timestep_activation_fn="silu",
    use_learned_positional_embeddings=True, use_rotary_positional_embeddings=True,
)
_LORA_KEY = re.compile(r"^(.*)\.lora_([AB])\.(?:default\.)?weight$")
_BASE_KEY = re.compile(r"^(.*)\.base_layer\.(weight|bias)$")
_DIFFUSERS_CONFIG_KEYS = set(COGVIDEOX_5B_I2V) | {"patch_bias", "patch_size_t", "ofs_embed_dim",
                                                  "use_rotary_positional_embeddings"}


def ggi_config(config_json: str | os.PathLike | None = None) -> dict:
    """The diffusers configuration of the GGI transformer: 5B-I2V with 48 input channels, or what a
    checkpoint's ``config.json`` says (its ``in_channels`` must be 48)."""
    cfg = dict(COGVIDEOX_5B_I2V, in_channels=GGI_IN_CHANNELS)
    if config_json is not None:
        with open(config_json, encoding="utf-8") as f:
            raw = json.load(f)
        cfg.update({k: v for k, v in raw.items() if k in _DIFFUSERS_CONFIG_KEYS})
        if cfg["in_channels"] != GGI_IN_CHANNELS:
            raise ValueError(f"{os.fspath(config_json)}: in_channels is {cfg['in_channels']}, a GGI transformer "
                             f"has {GGI_IN_CHANNELS} (16 noisy + 16 anchor + 16 HED)")
    return cfg


def read_sharded_safetensors(folder: str | os.PathLike, device="cpu") -> dict[str, Tensor]:
    """All tensors of a diffusers folder's safetensors shards (``*.safetensors``, or the files an
    ``*.safetensors.index.json`` lists).  ValueError when there are none or a key repeats."""
    from safetensors.torch import load_file

    folder = os.fspath(folder)
    index = glob.glob(os.path.join(folder, "*.safetensors.index.json"))
    if index:
        with open(index[0], encoding="utf-8") as f:
            files = sorted({os.path.join(folder, v) for v in json.load(f)["weight_map"].values()})
    else:
        files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise ValueError(f"{folder}: no *.safetensors shards")
    sd: dict[str, Tensor] = {}
    for path in files:
        part = load_file(path, device=device)
        clash = set(part) & set(sd)
        if clash:
            raise ValueError(f"{path}: keys repeated across shards: {sorted(clash)[:5]}")
        sd.update(part)
    return sd


def merge_peft_lora(sd: dict[str, Tensor], scale: float = GGI_LORA_SCALE) -> dict[str, Tensor]:
    """PEFT keys -> plain keys with ``W + scale·B·A`` (computed in float32, stored in W's dtype).

    A state dict without LoRA keys is returned unchanged (a copy).  ValueError when a LoRA lacks
    its base layer or one of its two factors.
    """
    out: dict[str, Tensor] = {}
    loras: dict[str, dict[str, Tensor]] = {}
    for k, v in sd.items():
        m = _LORA_KEY.match(k)
        if m:
            loras.setdefault(m.group(1), {})[m.group(2)] = v
            continue
        b = _BASE_KEY.match(k)
        out[f"{b.group(1)}.{b.group(2)}" if b else k] = v
    for name, ab in loras.items():
        if set(ab) != {"A", "B"} or f"{name}.weight" not in out:
            raise ValueError(f"LoRA {name}: needs lora_A, lora_B and a base layer, found {sorted(ab)}")
        w = out[f"{name}.weight"]
        delta = ab["B"].float() @ ab["A"].float()
        out[f"{name}.weight"] = (w.float() + scale * delta).to(w.dtype)
    return out


_COMFY_RENAMES = (
    ("transformer_blocks.", "blocks."),
    (".attn1.to_q.", ".q."),
    (".attn1.to_k.", ".k."),
    (".attn1.to_v.", ".v."),
    (".attn1.norm_q.", ".norm_q."),
    (".attn1.norm_k.", ".norm_k."),
    (".attn1.to_out.0.", ".attn_out."),
    (".ff.net.0.proj.", ".ff_proj."),
    (".ff.net.2.", ".ff_out."),
    ("time_embedding.linear_", "time_embedding_linear_"),
    ("ofs_embedding.linear_", "ofs_embedding_linear_"),
)


def convert_ggi_to_comfy(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """diffusers ``CogVideoXTransformer3DModel`` keys -> ComfyUI 0.33 ``comfy.ldm.cogvideo`` keys
    (merged LoRA first: PEFT keys are refused)."""
    out = {}
    for k, v in sd.items():
        if ".lora_" in k or ".base_layer." in k:
            raise ValueError(f"convert_ggi_to_comfy: merge the LoRA first (found {k})")
        n = k
        for a, b in _COMFY_RENAMES:
            n = n.replace(a, b)
        out[n] = v
    return out


def comfy_unet_config(cfg: dict) -> dict:
    """ComfyUI's ``unet_config`` for the native CogVideoX model of a diffusers configuration (see the
    module docstring for why ``spatial_interpolation_scale`` is 1 and rotary is kept)."""
    return dict(
        image_model="cogvideox",
        num_attention_heads=cfg["num_attention_heads"],
        attention_head_dim=cfg["attention_head_dim"],
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"],
        time_embed_dim=cfg["time_embed_dim"],
        text_embed_dim=cfg["text_embed_dim"],
        num_layers=cfg["num_layers"],
        sample_width=cfg["sample_width"],
        sample_height=cfg["sample_height"],
        sample_frames=cfg["sample_frames"],
        patch_size=cfg["patch_size"],
        max_text_seq_length=cfg["max_text_seq_length"],
        temporal_compression_ratio=cfg["temporal_compression_ratio"],
        spatial_interpolation_scale=1.0,
        temporal_interpolation_scale=cfg["temporal_interpolation_scale"],
        use_rotary_positional_embeddings=cfg["use_rotary_positional_embeddings"],
        use_learned_positional_embeddings=cfg["use_learned_positional_embeddings"],
    )


def _crop_region(grid_hw: tuple[int, int], base_w: int, base_h: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The region of a ``base_h × base_w`` grid a ``grid_hw`` grid is fitted into (diffusers'
    ``get_resize_crop_region_for_grid``): fit by the limiting side, centre."""
    h, w = grid_hw
    if h / w > base_h / base_w:
        rh, rw = base_h, int(round(base_h / h * w))
    else:
        rw, rh = base_w, int(round(base_w / w * h))
    top, left = int(round((base_h - rh) / 2.0)), int(round((base_w - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def rotary_embedding(cfg: dict, latent_hw: tuple[int, int], latent_frames: int, device=None):
    """The (cos, sin) rotary tables CogVideoX-1.0 pipelines pass to diffusers' transformer
    (``_prepare_rotary_positional_embeddings``), from diffusers' ``get_3d_rotary_pos_embed``."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    p = cfg["patch_size"]
    grid = (latent_hw[0] // p, latent_hw[1] // p)
    crops = _crop_region(grid, cfg["sample_width"] // p, cfg["sample_height"] // p)
    cos, sin = get_3d_rotary_pos_embed(embed_dim=cfg["attention_head_dim"], crops_coords=crops, grid_size=grid,
                                       temporal_size=latent_frames, device=device)
    return cos, sin


class DiffusersGGI(torch.nn.Module):
    """diffusers' ``CogVideoXTransformer3DModel`` behind ComfyUI's layout: ``forward(x (B, C, T, h, w),
    timestep (B,), context (B, L, D)) -> (B, 16, T, h, w)`` with the pipeline's rotary embedding."""

    def __init__(self, cfg: dict):
        super().__init__()
        from diffusers import CogVideoXTransformer3DModel

        self.cfg = dict(cfg)
        self.transformer = CogVideoXTransformer3DModel(**cfg)

    @classmethod
    def from_state_dict(cls, cfg: dict, sd: dict[str, Tensor], dtype=None) -> "DiffusersGGI":
        with torch.device("meta"):
            model = cls(cfg)
        missing, unexpected = model.transformer.load_state_dict(sd, strict=False, assign=True)
        # the learned positional embedding is a persistent buffer; the checkpoint carries it
        if missing or unexpected:
            raise ValueError(f"GGI transformer: missing keys {sorted(missing)[:10]}, unexpected {sorted(unexpected)[:10]}")
        if dtype is not None:
            model = model.to(dtype)
        return model.eval()

    def forward(self, x: Tensor, timestep: Tensor, context: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        rope = rotary_embedding(self.cfg, (h, w), t, device=x.device)
        dtype = next(self.transformer.parameters()).dtype
        out = self.transformer(hidden_states=x.permute(0, 2, 1, 3, 4).to(dtype), encoder_hidden_states=context.to(dtype),
                               timestep=timestep, image_rotary_emb=rope, return_dict=False)[0]
        return out.permute(0, 2, 1, 3, 4)
