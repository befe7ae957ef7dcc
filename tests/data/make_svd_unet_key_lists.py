"""Regenerate the SVD UNet golden key lists (run by hand, not part of the test suite).

Writes two JSON files next to this script, each a sorted ``{key: shape}`` map:

- ``svd_unet_diffusers_keys.json``: diffusers' ``UNetSpatioTemporalConditionModel`` built
  with the configuration published in ``stabilityai/stable-video-diffusion-img2vid``
  ``unet/config.json`` (the diffusers class defaults are that configuration).
- ``svd_unet_comfy_keys.json``: ComfyUI's own ``UNetModel`` built with the unet config
  ComfyUI's ``model_detection.detect_unet_config`` produces for an SVD checkpoint plus
  ``supported_models.SVD_img2vid.unet_extra_config``.

Both models are instantiated on the ``meta`` device (no memory, no weights).  The two lists
are independent references of the two layouts: the converter in
``models/argus_unet.py`` is tested against them.

Usage:  COMFYUI_ROOT=/path/to/ComfyUI python tests/data/make_svd_unet_key_lists.py
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import torch

HERE = pathlib.Path(__file__).resolve().parent

# stabilityai/stable-video-diffusion-img2vid, unet/config.json
SVD_DIFFUSERS_CONFIG = dict(
    sample_size=96,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=768,
    layers_per_block=2,
    cross_attention_dim=1024,
    transformer_layers_per_block=1,
    num_attention_heads=(5, 10, 20, 20),
    num_frames=14,
)

# What comfy/model_detection.py detect_unet_config returns for SVD's SGM keys, merged with
# comfy/supported_models.py SVD_img2vid.unet_extra_config (ComfyUI 0.3.64).
SVD_COMFY_UNET_CONFIG = dict(
    use_checkpoint=False,
    image_size=32,
    use_spatial_transformer=True,
    legacy=False,
    num_classes="sequential",
    adm_in_channels=768,
    in_channels=8,
    out_channels=4,
    model_channels=320,
    num_res_blocks=[2, 2, 2, 2],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    channel_mult=[1, 2, 4, 4],
    transformer_depth_middle=1,
    use_linear_in_transformer=True,
    context_dim=1024,
    extra_ff_mix_layer=True,
    use_spatial_context=True,
    merge_strategy="learned_with_images",
    merge_factor=0.0,
    video_kernel_size=[3, 1, 1],
    use_temporal_resblock=True,
    use_temporal_attention=True,
    disable_temporal_crossattention=False,
    num_heads=-1,
    num_head_channels=64,
)


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in sorted(module.state_dict().items())}


def main() -> None:
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device("meta"):
        diffusers_unet = UNetSpatioTemporalConditionModel(**SVD_DIFFUSERS_CONFIG)
    (HERE / "svd_unet_diffusers_keys.json").write_text(json.dumps(_shapes(diffusers_unet), indent=0) + "\n")

    sys.path.insert(0, os.environ["COMFYUI_ROOT"])
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # no CUDA here; the model is built on "meta" anyway
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    comfy_unet = UNetModel(**SVD_COMFY_UNET_CONFIG, device="meta")
    (HERE / "svd_unet_comfy_keys.json").write_text(json.dumps(_shapes(comfy_unet), indent=0) + "\n")


if __name__ == "__main__":
    main()
