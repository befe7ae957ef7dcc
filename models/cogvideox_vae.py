"""The CogVideoX VAE through diffusers, for hosts without a native one (ComfyUI 0.3.64).

The file users have is CogVideoX's own ``vae/diffusion_pytorch_model.safetensors`` (diffusers
keys; THUDM/CogVideoX-5b-I2V), which ComfyUI 0.33's ``VAELoader`` reads natively
(``comfy.ldm.cogvideo.vae``, detected by ``decoder.conv_in.conv.weight`` and
``decoder.mid_block.resnets.0.norm1.norm_layer.weight``).  Here it becomes diffusers'
``AutoencoderKLCogVideoX`` with the sizes read from the tensors, and two functions give it
ComfyUI's VAE conventions:

- :func:`encode_frames`: IMAGE frames ``[T, H, W, C]`` in 0..1 -> raw latents
  ``(1, C', ⌊(T + 3) / 4⌋, H/8, W/8)``, the posterior's mean (what ComfyUI's VAE returns; the
  official ``ggi.py`` samples it);
- :func:`decode_latents`: raw latents ``(B, C', T', h, w)`` -> frames ``[B, 4T' − 3, 8h, 8w, 3]``
  in 0..1, as ComfyUI's ``VAE.decode`` returns video.

Tiling and slicing follow ``ggi.py`` (``enable_slicing``, ``enable_tiling``) when asked.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

__all__ = ["COGVIDEOX_VAE_5B", "cogvideox_vae_config", "is_native_layout", "load_cogvideox_vae", "encode_frames",
           "decode_latents"]

# THUDM/CogVideoX-5b-I2V vae/config.json (the sizes ComfyUI 0.33's detection builds, too)
COGVIDEOX_VAE_5B = dict(
    in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 512), latent_channels=16, layers_per_block=3,
    act_fn="silu", norm_eps=1e-6, norm_num_groups=32, temporal_compression_ratio=4, sample_height=480,
    sample_width=720, scaling_factor=0.7, force_upcast=True, use_quant_conv=False, use_post_quant_conv=False,
)
_DOWN = re.compile(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.")


def cogvideox_vae_config(sd: dict[str, Tensor]) -> dict:
    """The diffusers config of a CogVideoX VAE state dict (diffusers keys): 5B-I2V's settings with
    block widths, depth and latent channels read from the tensors."""
    if "decoder.conv_in.conv.weight" not in sd or "encoder.conv_out.conv.weight" not in sd:
        raise ValueError("not a CogVideoX VAE in diffusers layout (no decoder.conv_in.conv / encoder.conv_out.conv)")
    blocks: dict[int, int] = {}
    for k in sd:
        m = _DOWN.match(k)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    levels = sorted(blocks)
    widths = tuple(int(sd[f"encoder.down_blocks.{i}.resnets.0.conv2.conv.weight"].shape[0]) for i in levels)
    return dict(COGVIDEOX_VAE_5B, block_out_channels=widths, layers_per_block=blocks[0],
                latent_channels=int(sd["encoder.conv_out.conv.weight"].shape[0]) // 2,
                use_quant_conv="quant_conv.weight" in sd, use_post_quant_conv="post_quant_conv.weight" in sd)


def is_native_layout(config: dict) -> bool:
    """Whether ComfyUI 0.33's detection builds this layout (it fixes the 5B/2B sizes)."""
    return (tuple(config["block_out_channels"]) == COGVIDEOX_VAE_5B["block_out_channels"]
            and config["layers_per_block"] == COGVIDEOX_VAE_5B["layers_per_block"]
            and not config["use_quant_conv"] and not config["use_post_quant_conv"])


def load_cogvideox_vae(sd: dict[str, Tensor], dtype: torch.dtype = torch.float32, tiling: bool = True,
                       source: str = "vae"):
    """diffusers ``AutoencoderKLCogVideoX`` holding ``sd`` (strict), in ``dtype``, on the CPU."""
    from diffusers import AutoencoderKLCogVideoX

    config = cogvideox_vae_config(sd)
    with torch.device("meta"):
        vae = AutoencoderKLCogVideoX(**config)
    own = set(vae.state_dict())
    missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
    if missing or unexpected:
        raise ValueError(f"{source}: does not match AutoencoderKLCogVideoX {config['block_out_channels']}: missing "
                         f"{missing[:6]}, unexpected {unexpected[:6]}")
    vae.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    if tiling:
        vae.enable_slicing()
        vae.enable_tiling()
    return vae.eval()


def _param(vae) -> Tensor:
    return next(vae.parameters())


@torch.no_grad()
def encode_frames(vae, frames: Tensor) -> Tensor:
    """IMAGE ``[T, H, W, C]`` (0..1; one video) -> raw latent mean ``(1, C', T', H/8, W/8)`` float32."""
    p = _param(vae)
    x = frames[..., :3].movedim(-1, 0)[None].to(p.device, p.dtype) * 2 - 1  # (1, 3, T, H, W)
    return vae.encode(x).latent_dist.mean.float()


@torch.no_grad()
def decode_latents(vae, latents: Tensor) -> Tensor:
    """Raw latents ``(B, C', T', h, w)`` -> frames ``[B, T, 8h, 8w, 3]`` in 0..1, float32."""
    p = _param(vae)
    x = vae.decode(latents.to(p.device, p.dtype)).sample.float()  # (B, 3, T, H, W) in [-1, 1]
    return ((x + 1) / 2).clamp(0, 1).movedim(1, -1)
