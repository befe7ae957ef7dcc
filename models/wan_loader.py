"""Load Wan 2.1 text-to-video weights into diffusers classes (for training).

Two layouts are read:

* the official / ComfyUI single file (``wan2.1_t2v_1.3B_fp16.safetensors`` as ComfyUI's
  ``models/diffusion_models`` holds it; an optional ``model.diffusion_model.`` prefix),
  renamed with :func:`.videopanda_wan.official_to_diffusers_key`, dimensions read from the
  tensor shapes;
* a diffusers folder (``config.json`` + weights, e.g. ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers/transformer``).

The VAE likewise: ComfyUI's ``wan_2.1_vae.safetensors`` (converted with diffusers' own
``convert_wan_vae_to_diffusers``) or a diffusers ``vae`` folder.  Loading is strict: missing
or unexpected keys are named with the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .videopanda_adapter import VideoPandaConfig, config_from_wan_state_dict
from .videopanda_wan import official_to_diffusers_key, wan_diffusers_config

__all__ = ["load_wan_transformer", "load_wan_vae", "WanLatents", "OFFICIAL_PREFIXES"]

OFFICIAL_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


def _read(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if path.suffix.lower() not in (".safetensors", ".sft"):
        raise ValueError(f"{path}: expected a .safetensors file or a diffusers folder")
    return load_file(str(path))


def load_wan_transformer(path: str | Path, dtype: torch.dtype = torch.float32):
    """A diffusers ``WanTransformer3DModel`` from an official/ComfyUI file or a diffusers
    folder, and its :class:`VideoPandaConfig`."""
    from diffusers import WanTransformer3DModel

    path = Path(path)
    if path.is_dir():
        model = WanTransformer3DModel.from_pretrained(str(path), torch_dtype=dtype)
        c = model.config
        cfg = VideoPandaConfig(dim=c.num_attention_heads * c.attention_head_dim, num_heads=c.num_attention_heads,
                               num_layers=c.num_layers, in_channels=c.in_channels, patch_size=tuple(c.patch_size),
                               freq_dim=c.freq_dim, eps=c.eps)
        return model, cfg
    sd = _read(path)
    for prefix in OFFICIAL_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    try:
        cfg = config_from_wan_state_dict(sd)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    ffn = int(sd["blocks.0.ffn.0.weight"].shape[0])
    text_dim = int(sd["text_embedding.0.weight"].shape[1])
    # Built on the CPU (not the meta device): its rotary tables are buffers computed at init.
    model = WanTransformer3DModel(**wan_diffusers_config(cfg, ffn_dim=ffn, text_dim=text_dim))
    if dtype != torch.float32:
        model = model.to(dtype)
    try:
        converted = {official_to_diffusers_key(k): v.to(dtype) for k, v in sd.items()}
    except KeyError as e:
        raise ValueError(f"{path}: {e.args[0]}") from None
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: not a Wan 2.1 text-to-video transformer: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}")
    model.load_state_dict(converted, strict=True)
    return model.eval(), cfg


class WanLatents:
    """Encode/decode view videos with a diffusers ``AutoencoderKLWan`` in the sampler's latent
    space: ``(z - mean) / std`` with the VAE's ``latents_mean``/``latents_std`` (what
    ComfyUI's ``latent_formats.Wan21.process_in`` and diffusers' Wan pipelines do).  Views are
    coded one at a time to bound memory."""

    def __init__(self, vae, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.vae = vae.to(device=device).eval().requires_grad_(False)
        if next(vae.parameters()).dtype != dtype:
            self.vae = self.vae.to(dtype)
        self.device, self.dtype = torch.device(device), dtype
        c = vae.config
        self.mean = torch.tensor(c.latents_mean, dtype=torch.float32).reshape(1, -1, 1, 1, 1)
        self.std = torch.tensor(c.latents_std, dtype=torch.float32).reshape(1, -1, 1, 1, 1)

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """``(V, 3, N, H, W)`` in [-1, 1] -> ``(V, C, (N - 1) / 4 + 1, H / 8, W / 8)`` float32 on the CPU."""
        out = []
        for view in video:
            z = self.vae.encode(view[None].to(self.device, self.dtype)).latent_dist.mode().float().cpu()
            out.append((z - self.mean) / self.std)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """The inverse of :meth:`encode`, ``(V, 3, N, H, W)`` in [-1, 1] on the CPU."""
        out = []
        for z in latents:
            z = (z[None].float().cpu() * self.std + self.mean).to(self.device, self.dtype)
            out.append(self.vae.decode(z).sample.float().clamp(-1, 1).cpu())
        return torch.cat(out)


def load_wan_vae(path: str | Path, dtype: torch.dtype = torch.float32):
    """A diffusers ``AutoencoderKLWan`` from ComfyUI's single file or a diffusers folder."""
    from diffusers import AutoencoderKLWan

    path = Path(path)
    if path.is_dir():
        return AutoencoderKLWan.from_pretrained(str(path), torch_dtype=dtype).eval()
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    converted = convert_wan_vae_to_diffusers(_read(path))
    vae = AutoencoderKLWan()
    missing, unexpected = vae.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: not a Wan 2.1 VAE: missing {sorted(missing)[:6]}, unexpected {sorted(unexpected)[:6]}")
    return vae.to(dtype).eval()
