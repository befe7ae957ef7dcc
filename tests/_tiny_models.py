"""Tiny model configurations shared by host-free and host tests."""

from __future__ import annotations

# A diffusers UNetSpatioTemporalConditionModel small enough for CPU tests, with every block
# kind of SVD's (spatio-temporal cross-attention and plain down/up blocks).
TINY_SVD_CONFIG = dict(
    sample_size=8,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 64),
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=24,
    layers_per_block=1,
    cross_attention_dim=16,
    transformer_layers_per_block=1,
    num_attention_heads=(2, 4),
    num_frames=3,
)

# A tiny Wan 2.1 text-to-video: width 128 with one 128-wide head, because ComfyUI detects Wan's
# heads as dim // 128 (comfy/model_detection.py) and fixes freq_dim 256 and text_dim 4096, so the
# same weights load in diffusers' WanTransformer3DModel and ComfyUI's WanModel.
TINY_WAN = dict(dim=128, num_heads=1, num_layers=2, ffn_dim=256, freq_dim=256, text_dim=4096)
# A narrower one for the pure diffusers tests (two heads, so head splitting is exercised).
NARROW_WAN = dict(dim=32, num_heads=2, num_layers=2, ffn_dim=64, freq_dim=16, text_dim=24)


def diffusers_wan(spec: dict, seed: int = 0, std: float | None = 0.2):
    """A random ``WanTransformer3DModel`` (eval mode) of ``spec`` and its adapter config.

    std: re-draw every parameter from N(0, std) (diffusers' init leaves the attention and
    modulation nearly inert at these widths); None keeps diffusers' init.
    """
    import torch
    from diffusers import WanTransformer3DModel

    from pano360.models.videopanda_adapter import VideoPandaConfig
    from pano360.models.videopanda_wan import wan_diffusers_config

    cfg = VideoPandaConfig(dim=spec["dim"], num_heads=spec["num_heads"], num_layers=spec["num_layers"],
                           freq_dim=spec["freq_dim"])
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**wan_diffusers_config(cfg, ffn_dim=spec["ffn_dim"], text_dim=spec["text_dim"]))
    if std is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval(), cfg
