"""Tiny random-weight ComfyUI models built in memory with ComfyUI's own classes (host tests).

No files, no downloads: each builder instantiates the model class ComfyUI's loaders would
(``supported_models`` configs, ``comfy.ldm`` networks) at a tiny size, initialises it with a
seeded random init and, where a sampler needs it, wraps it in a ``ModelPatcher`` on the CPU.
Import only inside tests that run with ComfyUI importable (the ``comfy_in_process`` fixture).
"""

from __future__ import annotations

import torch

SEED = 15
CONTEXT_DIM = 32  # text embedding width of the tiny UNet

# An SD1.5-shaped UNet (comfy/supported_models.py SD15) at 1/10 of the widths, 2 levels.
TINY_SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
    "transformer_depth": [1, 1], "channel_mult": [1, 2], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": CONTEXT_DIM, "num_heads": 2,
    "transformer_depth_output": [1, 1, 1, 1], "use_temporal_attention": False, "use_temporal_resblock": False,
}

# Flux (comfy/ldm/flux/model.py FluxParams) with one double and one single block; axes
# (index, height, width) sum to hidden_size / num_heads like the real 16/56/56 of 3072/24.
TINY_FLUX = dict(in_channels=4, out_channels=4, vec_in_dim=8, context_in_dim=8, hidden_size=32, mlp_ratio=2.0,
                 num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000, patch_size=2,
                 qkv_bias=True, guidance_embed=False)

# Wan (comfy/ldm/wan/model.py WanModel) with one block; its head dim 24 splits into the
# t/h/w rope axes d - 4(d//6), 2(d//6), 2(d//6) = 8/8/8 as WanModel computes it.
TINY_WAN = dict(model_type="t2v", patch_size=(1, 2, 2), text_len=8, in_dim=4, dim=48, ffn_dim=96, freq_dim=16,
                text_dim=8, out_dim=4, num_heads=2, num_layers=1)


def random_init_(module: torch.nn.Module, seed: int = SEED, std: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def sd15_patcher():
    """A ModelPatcher of a tiny SD1.5-shaped BaseModel (EPS) on the CPU."""
    import comfy.model_patcher
    import comfy.supported_models

    model = comfy.supported_models.SD15(dict(TINY_SD15_UNET)).get_model({})
    random_init_(model)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def text(seed: int, tokens: int = 7) -> list:
    """A CONDITIONING of random 'text' for the tiny UNet."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, CONTEXT_DIM, generator=g), {}]]


def flux_model():
    """ComfyUI's Flux network at :data:`TINY_FLUX` (0.33's FluxParams also needs
    ``txt_ids_dims``: empty = Flux.1's text ids, all zero)."""
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.ops

    fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    extra = {"txt_ids_dims": []} if "txt_ids_dims" in fields else {}
    return random_init_(comfy.ldm.flux.model.Flux(operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                                                  device="cpu", **TINY_FLUX, **extra))


def wan_model():
    import comfy.ldm.wan.model
    import comfy.ops

    return random_init_(comfy.ldm.wan.model.WanModel(operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                                                     device="cpu", **TINY_WAN))


def sd_vae():
    """ComfyUI's VAE object around a random SD/Flux-architecture autoencoder (ComfyUI's
    ``AutoencoderKL``, 4 latent channels, the x8 layout of the SD VAE at a quarter of its
    widths), built through ``comfy.sd.VAE``'s ``config`` path."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    net = AutoencoderKL(ddconfig=dict(ddconfig), embed_dim=4)
    random_init_(net, std=0.1)
    return comfy.sd.VAE(sd=net.state_dict(), config={"params": {"ddconfig": ddconfig, "embed_dim": 4}})


def patcher(model):
    import comfy.model_patcher

    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def flux_base_model(latent_channels: int = 16):
    """A tiny Flux BaseModel (supported_models.Flux) for 16-channel Flux latents."""
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.supported_models as sm

    fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    extra = {"txt_ids_dims": []} if "txt_ids_dims" in fields else {}
    config = {**TINY_FLUX, "in_channels": latent_channels, "out_channels": latent_channels, **extra}
    return random_init_(sm.Flux({"image_model": "flux", **config}).get_model({}))


def wan_base_model(latent_channels: int = 16):
    """A tiny Wan 2.1 T2V BaseModel (supported_models.WAN21_T2V) for 16-channel Wan latents."""
    import comfy.supported_models as sm

    config = {**TINY_WAN, "in_dim": latent_channels, "out_dim": latent_channels}
    return random_init_(sm.WAN21_T2V({"image_model": "wan2.1", **config}).get_model({}))


def flux_vae():
    """ComfyUI's VAE around a random AutoencoderKL with Flux's 16 latent channels (x8)."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    net = AutoencoderKL(ddconfig=dict(ddconfig), embed_dim=16)
    random_init_(net, std=0.1)
    return comfy.sd.VAE(sd=net.state_dict(), config={"params": {"ddconfig": ddconfig, "embed_dim": 16}})


def wan_vae():
    """ComfyUI's VAE around a random Wan 2.1 VAE, detected from its state dict by comfy.sd.VAE
    (0.33 reads the width from the weights, so it is built at width 16; 0.3.64 fixes it at 96)."""
    import inspect

    import comfy.ldm.wan.vae
    import comfy.sd

    source = inspect.getsource(comfy.sd.VAE.__init__)
    dim = 16 if 'dim = sd["decoder.head.0.gamma"].shape[0]' in source else 96
    net = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    random_init_(net, std=0.05)
    return comfy.sd.VAE(sd=net.state_dict())


class StubClip:
    """Stands in for a CLIP object where the real text encoder's size is fixed by ComfyUI's
    configs (T5-XXL, umT5, Gemma): CLIPTextEncode's two calls, returning seeded random text
    embeddings (and a pooled vector) of the tiny model's widths."""

    def __init__(self, context_dim: int, pooled_dim: int | None = None, tokens: int = 8):
        self.context_dim, self.pooled_dim, self.tokens = context_dim, pooled_dim, tokens

    def tokenize(self, text: str, **kwargs):
        return {"text": text}

    def encode_from_tokens_scheduled(self, tokens, **kwargs):
        g = torch.Generator().manual_seed(sum(map(ord, tokens["text"])) % (2**31))
        extras = {}
        if self.pooled_dim:
            extras["pooled_output"] = torch.randn(1, self.pooled_dim, generator=g)
        return [[torch.randn(1, self.tokens, self.context_dim, generator=g), extras]]


def lora_for(model, path, targets: tuple[str, ...], rank: int = 2, seed: int = SEED) -> list[str]:
    """Write a LoRA (ComfyUI's generic ``diffusion_model.<module>.lora_A/B.weight`` keys) for
    the Linear layers of ``model.diffusion_model`` whose names end with ``targets``; returns
    the weight keys it patches."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd, keys = {}, []
    for name, module in model.diffusion_model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(targets):
            out_f, in_f = module.weight.shape
            sd[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=g) * 0.5
            sd[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.5
            keys.append(f"diffusion_model.{name}.weight")
    if not keys:
        raise ValueError(f"no Linear layer ends with {targets}")
    save_file(sd, str(path))
    return keys
