"""Regenerate the VideoFrom3D GGI golden key lists (run by hand, not part of the test suite).

Writes ``vf3d_ggi_keys.json`` next to this script with three sorted ``{key: shape}`` maps:

- ``checkpoint_1350``: the keys and shapes of GGI's ``checkpoint-1350/transformer`` safetensors
  shards, built the way the official ``ggi.py`` builds the model it loads them into *strictly*:
  diffusers' ``CogVideoXTransformer3DModel`` with the configuration published in
  ``THUDM/CogVideoX-5b-I2V`` ``transformer/config.json``, ``patch_embed.proj`` widened to 48
  input channels by the official ``myutils.ch_channel_cnn``, then a PEFT LoRA (r = alpha = 2048 on
  ``to_q``, ``to_k``, ``to_v``, ``to_out.0``) added with ``add_adapter``.
- ``merged``: the same model without the adapter (what merging ``W + B·A`` gives).
- ``comfy``: ComfyUI's native ``comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel`` (ComfyUI
  0.33) built from the configuration ComfyUI's ``model_detection`` reads from such a checkpoint.

Every model is built on the ``meta`` device (no memory, no weights).  The official code is
imported from a checkout given on the command line, never vendored.  Two of its imports that
the key list does not need (``skimage``, ``plyfile``, pulled in by ``colmap.py``) are stubbed
when they are not installed.

Usage (needs diffusers and peft)::

    COMFYUI_ROOT=/path/to/ComfyUI-0.33 python tests/data/make_vf3d_ggi_keys.py /path/to/VideoFrom3D
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import types

import torch

HERE = pathlib.Path(__file__).resolve().parent

# THUDM/CogVideoX-5b-I2V, transformer/config.json.
COGVIDEOX_5B_I2V_CONFIG = dict(
    activation_fn="gelu-approximate",
    attention_bias=True,
    attention_head_dim=64,
    dropout=0.0,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=32,
    max_text_seq_length=226,
    norm_elementwise_affine=True,
    norm_eps=1e-05,
    num_attention_heads=48,
    num_layers=42,
    out_channels=16,
    patch_size=2,
    sample_frames=49,
    sample_height=60,
    sample_width=90,
    spatial_interpolation_scale=1.875,
    temporal_compression_ratio=4,
    temporal_interpolation_scale=1.0,
    text_embed_dim=4096,
    time_embed_dim=512,
    timestep_activation_fn="silu",
    use_learned_positional_embeddings=True,
    use_rotary_positional_embeddings=True,
)
GGI_IN_CHANNELS = 48  # ggi.py: noise 16 + image 16 + HED 16
GGI_LORA_RANK = 2048  # ggi.py: LoraConfig(r=2048, lora_alpha=2048, ...)
GGI_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


def _stub_missing(name: str, **attrs) -> None:
    try:
        __import__(name)
    except ImportError:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            mod = sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        for k, v in attrs.items():
            setattr(mod, k, v)


def _shapes(sd) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in sorted(sd.items())}


def official_keys(videofrom3d: str) -> tuple[dict, dict]:
    from diffusers import CogVideoXTransformer3DModel
    from peft import LoraConfig

    _stub_missing("skimage.transform", resize=None)
    _stub_missing("plyfile", PlyData=None, PlyElement=None)
    sys.path.insert(0, videofrom3d)
    from myutils import ch_channel_cnn  # the official code, from the checkout

    with torch.device("meta"):
        model = CogVideoXTransformer3DModel(**COGVIDEOX_5B_I2V_CONFIG)
        ch_channel_cnn(model, GGI_IN_CHANNELS)
        merged = _shapes(model.state_dict())
        model.add_adapter(LoraConfig(r=GGI_LORA_RANK, lora_alpha=GGI_LORA_RANK, init_lora_weights=True,
                                     target_modules=GGI_LORA_TARGETS))
        checkpoint = _shapes(model.state_dict())
    return checkpoint, merged


def comfy_keys(merged: dict) -> dict:
    root = os.environ.get("COMFYUI_ROOT")
    if not root:
        raise SystemExit("set COMFYUI_ROOT to a ComfyUI 0.33 source tree")
    sys.path.insert(0, root)
    import comfy.options  # noqa: F401
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # as main.py --cpu: model_management needs it without CUDA
    import comfy.ops
    from comfy.ldm.cogvideo.model import CogVideoXTransformer3DModel

    # What comfy/model_detection.py reads from a 5B-class checkpoint with 48 input channels and a
    # learned positional embedding (use_rotary is then False there: ComfyUI's detection only
    # distinguishes the two; the key list does not depend on it).
    cfg = dict(image_model="cogvideox", num_attention_heads=48, attention_head_dim=64, time_embed_dim=512,
               num_layers=42, in_channels=GGI_IN_CHANNELS, patch_size=2, text_embed_dim=4096,
               use_learned_positional_embeddings=True, use_rotary_positional_embeddings=True)
    with torch.device("meta"):
        model = CogVideoXTransformer3DModel(**cfg, operations=comfy.ops.disable_weight_init)
    return _shapes(model.state_dict())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("videofrom3d", help="a checkout of ant-arktis/VideoFrom3D (or KIMGEONUNG/VideoFrom3D)")
    args = p.parse_args()
    checkpoint, merged = official_keys(args.videofrom3d)
    comfy = comfy_keys(merged)
    out = HERE / "vf3d_ggi_keys.json"
    out.write_text(json.dumps({"checkpoint_1350": checkpoint, "merged": merged, "comfy": comfy}, indent=0) + "\n")
    print(f"{out}: {len(checkpoint)} checkpoint keys, {len(merged)} merged, {len(comfy)} comfy")  # noqa: T201


if __name__ == "__main__":
    main()
