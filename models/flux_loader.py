"""Loading Flux, the XLabs ControlNet and the Flux VAE from the files ComfyUI users have.

- ``flux1-dev.safetensors`` (``models/diffusion_models``): BFL keys, bf16 or fp8; a full ComfyUI
  checkpoint's ``model.diffusion_model.`` prefix is stripped.  Read tensor by tensor onto the
  device in the requested dtype (the module is built on the meta device), so host memory holds
  one tensor at a time.
- ``flux-hed-controlnet-v3.safetensors`` (``models/controlnet``): XLabs keys.
- ``ae.safetensors`` (``models/vae``, BFL/LDM keys) or a diffusers ``vae/`` folder: diffusers'
  ``AutoencoderKL`` (the LDM keys converted by diffusers' own single-file converter), with the
  sizes read from the tensors and FLUX.1-dev's latent scale and shift.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor

from .flux import (
    Flux,
    FluxParams,
    XLabsControlNet,
    controlnet_depth_from_state_dict,
    flux_params_from_state_dict,
)

__all__ = ["read_safetensors", "load_flux", "load_xlabs_controlnet", "load_flux_vae", "FLUX_AE_SCALE",
           "FLUX_AE_SHIFT", "flux_vae_config"]

# x-flux src/flux/util.py ae_params (= FLUX.1-dev vae/config.json scaling_factor, shift_factor)
FLUX_AE_SCALE = 0.3611
FLUX_AE_SHIFT = 0.1159
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
_VAE_PREFIXES = ("first_stage_model.", "vae.")


def read_safetensors(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None,
                     prefixes: tuple[str, ...] = _PREFIXES) -> dict[str, Tensor]:
    """A safetensors file's floating-point tensors, each moved to ``device`` / ``dtype`` as it is
    read; the first of ``prefixes`` that keys carry is stripped (keys without it are dropped)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        prefix = next((p for p in prefixes if any(k.startswith(p) for k in keys)), "")
        out = {}
        for k in keys:
            if not k.startswith(prefix):
                continue
            t = f.get_tensor(k)
            out[k[len(prefix):]] = t.to(device, dtype) if dtype is not None and t.is_floating_point() else t.to(device)
    return out


def _assign(module: torch.nn.Module, sd: dict[str, Tensor], source: str) -> None:
    own = set(module.state_dict())
    missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
    if missing or unexpected:
        raise ValueError(f"{source}: does not match {type(module).__name__}: missing {missing[:8]}"
                         f"{' …' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}{' …' if len(unexpected) > 8 else ''}")
    module.load_state_dict(sd, strict=True, assign=True)


def load_flux(path: str | os.PathLike, device="cpu", dtype: torch.dtype = torch.bfloat16,
              axes_dim: tuple[int, ...] | None = None) -> Flux:
    """Flux from a BFL-layout safetensors file (sizes from its shapes).  ValueError naming the file
    when it is not one."""
    sd = read_safetensors(path, device, dtype)
    try:
        params = flux_params_from_state_dict(sd, axes_dim)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    with torch.device("meta"):
        model = Flux(params)
    _assign(model, sd, str(path))
    return model


def load_xlabs_controlnet(path: str | os.PathLike, params: FluxParams, device="cpu",
                          dtype: torch.dtype = torch.bfloat16) -> XLabsControlNet:
    """An XLabs Flux ControlNet for a Flux of ``params``.  ValueError when the file is not one or
    its width differs from the Flux's."""
    sd = read_safetensors(path, device, dtype, prefixes=("",))
    try:
        depth = controlnet_depth_from_state_dict(sd)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    width = sd["img_in.weight"].shape[0]
    if width != params.hidden_size:
        raise ValueError(f"{path}: a ControlNet of width {width} for a Flux of width {params.hidden_size}")
    with torch.device("meta"):
        model = XLabsControlNet(params, depth)
    _assign(model, sd, str(path))
    return model


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd for m in [rx.match(k)] if m}
    return max(found) + 1 if found else 0


def flux_vae_config(sd: dict[str, Tensor]) -> dict:
    """diffusers ``AutoencoderKL`` config of an LDM-layout Flux VAE state dict (FLUX.1-dev's
    ``vae/config.json`` with the sizes read from the tensors)."""
    levels = _count(sd, r"^encoder\.down\.(\d+)\.")
    if levels == 0 or "encoder.conv_out.weight" not in sd:
        raise ValueError("not an LDM/BFL-layout VAE (no encoder.down.N / encoder.conv_out)")
    channels = [int(sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in range(levels)]
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": int(sd["encoder.conv_out.weight"].shape[0]) // 2,
        "block_out_channels": channels, "layers_per_block": _count(sd, r"^encoder\.down\.0\.block\.(\d+)\."),
        "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
        "act_fn": "silu", "norm_num_groups": 32, "sample_size": 1024, "mid_block_add_attention": True,
        "use_quant_conv": "quant_conv.weight" in sd, "use_post_quant_conv": "post_quant_conv.weight" in sd,
        "scaling_factor": FLUX_AE_SCALE, "shift_factor": FLUX_AE_SHIFT, "force_upcast": True,
    }


def load_flux_vae(path: str | os.PathLike, device="cpu", dtype: torch.dtype = torch.float32):
    """diffusers ``AutoencoderKL`` of the Flux VAE from ``ae.safetensors`` (LDM keys) or a diffusers
    folder (``config.json`` + weights)."""
    from diffusers import AutoencoderKL

    path = Path(path)
    if path.is_dir():
        return AutoencoderKL.from_pretrained(str(path), torch_dtype=dtype).to(device).eval()
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = read_safetensors(path, "cpu", None, prefixes=_VAE_PREFIXES + ("",))
    try:
        config = flux_vae_config(sd)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    converted = convert_ldm_vae_checkpoint(sd, config)
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    _assign(vae, converted, str(path))
    return vae.to(device, dtype).eval()
