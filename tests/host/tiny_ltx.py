"""A tiny random-weight LTX-2.3 audio+video checkpoint in the official single-file layout (host tests).

One safetensors file holds what ComfyUI's LTX-2 loaders read from ``ltx-2.3-22b-dev*.safetensors``:
the AV transformer under ``model.diffusion_model.``, the video VAE under ``vae.``, the audio VAE
under ``audio_vae.`` and its vocoder under ``vocoder.``, with the file's ``config`` metadata
(``transformer`` / ``vae`` / ``audio_vae`` / ``vocoder`` sections) that ComfyUI reads to size
each part (comfy/model_detection.py, comfy/sd.py, comfy/ldm/lightricks/vae/audio_vae.py).  Every
module is ComfyUI's own class at a tiny width; only the sizes the sampler and nodes fix stay:
128 video latent channels at x32 space / x8 time (EmptyLTXVLatentVideo, latent_formats.LTXAV),
8 audio latent channels x 16 frequency bins (the AV model's audio patchify: 128 = 8 x 16).
Import only with ComfyUI importable (the ``comfy_in_process`` fixture).
"""

from __future__ import annotations

import json

import torch

from tiny_comfy import random_init_

# The AV transformer (comfy/ldm/lightricks/av_model.py LTXAVModel) with one block, two heads of
# width 8 per modality and LTX-2.3's switches (gated attention, cross-attention AdaLN, caption
# projection before the connectors); ``caption_channels`` stands for Gemma's hidden width (3840).
TRANSFORMER = {
    "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "cross_attention_dim": 16,
    "audio_attention_head_dim": 8, "audio_num_attention_heads": 2, "audio_cross_attention_dim": 16,
    "caption_channels": 24, "connector_attention_head_dim": 8, "connector_num_attention_heads": 2,
    "connector_num_layers": 1, "apply_gated_attention": True, "cross_attention_adaln": True,
    "caption_proj_before_connector": True,
}

# The video VAE (causal_video_autoencoder.VideoVAE, LTX-2's block layout: patch 4 and three
# x2 space-time stages = x32 / x8) at base width 8 with one residual layer per stage.
VIDEO_VAE = {
    "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
    "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                       ["compress_all_res", {"multiplier": 2}], ["compress_all_res", {"multiplier": 2}]],
    "decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}]],
    "encoder_base_channels": 8, "decoder_base_channels": 8, "norm_layer": "pixel_norm", "patch_size": 4,
    "latent_log_var": "uniform", "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": True,
}

# The audio VAE (causal_audio_autoencoder, the default 64 mel bins / 8 latent channels at width 8)
# and a two-stage HiFi-GAN vocoder (vocoders/vocoder.py) at width 16.
AUDIO_VAE = {
    "model": {"params": {"ddconfig": {
        "double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "downsample_time": False,
        "in_channels": 2, "out_ch": 2, "ch": 8, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "attn_resolutions": [],
        "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height"},
        "sampling_rate": 16000}},
    "preprocessing": {"stft": {"filter_length": 1024, "hop_length": 160}},
}
VOCODER = {"resblock_kernel_sizes": [3], "upsample_rates": [2, 2], "upsample_kernel_sizes": [4, 4],
           "resblock_dilation_sizes": [[1, 3, 5]], "upsample_initial_channel": 16, "stereo": True,
           "activation": "snake"}

CONFIG = {"transformer": TRANSFORMER, "vae": VIDEO_VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER}


def _latent_statistics_(vae: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded per-channel latent statistics: ComfyUI allocates the VAEs' ``mean-of-means`` /
    ``std-of-means`` buffers with ``torch.empty`` (the checkpoint fills them), so a random
    init must set them or decoding reads uninitialised memory."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in vae.named_buffers():
            if name.endswith("mean-of-means"):
                buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.1)
            elif name.endswith("std-of-means"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=g))
    return vae


def av_model():
    """ComfyUI's LTXAV BaseModel (supported_models.LTXAV) at :data:`TRANSFORMER`, random weights."""
    import comfy.supported_models as sm

    return random_init_(sm.LTXAV({"image_model": "ltxav", **TRANSFORMER}).get_model({}))


def write_checkpoint(path) -> None:
    """Save the tiny AV model, video VAE, audio VAE and vocoder as one LTX-2-layout checkpoint."""
    from comfy.ldm.lightricks.vae.audio_vae import AudioVAE
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
    from safetensors.torch import save_file

    meta = {"config": json.dumps(CONFIG)}
    sd = {f"model.diffusion_model.{k}": v for k, v in av_model().diffusion_model.state_dict().items()}
    sd.update({f"vae.{k}": v for k, v in _latent_statistics_(random_init_(VideoVAE(config=VIDEO_VAE), std=0.1), 1).state_dict().items()})
    audio = _latent_statistics_(random_init_(AudioVAE(metadata=meta), std=0.1), 2)
    sd.update({f"audio_vae.{k[len('autoencoder.'):]}": v for k, v in audio.state_dict().items()
               if k.startswith("autoencoder.")})
    sd.update({k: v for k, v in audio.state_dict().items() if k.startswith("vocoder.")})
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=meta)
