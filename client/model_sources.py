"""Where users download the model files the bundled workflows load.

A UI workflow's loader node carries ``properties.models`` entries ``{name, url,
directory}`` (as ComfyUI's official templates do): the frontend validates them when a
workflow loads and offers to download a missing file from ``url`` into
``models/<directory>``.  ``api_to_ui`` writes an entry only for a file listed in
:data:`PUBLIC_MODELS` (a direct download of exactly that file), never a guess;
:data:`NOT_PUBLIC` names the files with no such download and why, so ``workflows check``
can insist that every model file a bundled workflow needs is in one of the two.

The URLs are the ones ComfyUI's own templates use (package ``comfyui-workflow-templates``
0.1.95 / ``comfyui-workflow-templates-json`` 0.1.50, e.g. ``default.json``,
``text_to_video_wan.json``, ``image_to_video.json``), or the model owner's repository.
"""

from __future__ import annotations

from types import MappingProxyType

_HF = "https://huggingface.co"
_WAN21 = f"{_HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"

PUBLIC_MODELS = MappingProxyType({
    # templates/default.json
    "v1-5-pruned-emaonly-fp16.safetensors":
        f"{_HF}/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors?download=true",
    # templates/image_to_video.json
    "svd.safetensors": f"{_HF}/stabilityai/stable-video-diffusion-img2vid/resolve/main/svd.safetensors?download=true",
    # templates/txt_to_image_to_video.json (SVD-XT, Look Beyond stage 3's base model)
    "svd_xt.safetensors": f"{_HF}/stabilityai/stable-video-diffusion-img2vid-xt/resolve/main/svd_xt.safetensors?download=true",
    # templates/text_to_video_wan.json
    "wan2.1_t2v_1.3B_fp16.safetensors": f"{_WAN21}/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors?download=true",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": f"{_WAN21}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors?download=true",
    "wan_2.1_vae.safetensors": f"{_WAN21}/vae/wan_2.1_vae.safetensors?download=true",
    # templates flux_redux_model_example.json, flux_dev_example.json (Flux for VideoFrom3D's anchor views)
    "flux1-dev.safetensors": f"{_HF}/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors",
    "ae.safetensors": f"{_HF}/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors",
    "t5xxl_fp16.safetensors": f"{_HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors?download=true",
    "clip_l.safetensors": f"{_HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors?download=true",
    # VideoFrom3D's ControlNet (its README): XLabs' HED ControlNet v3 for Flux
    "flux-hed-controlnet-v3.safetensors":
        f"{_HF}/XLabs-AI/flux-controlnet-hed-v3/resolve/main/flux-hed-controlnet-v3.safetensors",
    # templates/video_ltx2_3_t2v.json (comfyui-workflow-templates-json 0.1.50, ComfyUI 0.33)
    "ltx-2.3-22b-dev-fp8.safetensors": f"{_HF}/Lightricks/LTX-2.3-fp8/resolve/main/ltx-2.3-22b-dev-fp8.safetensors",
    "ltx_2.3_22b_distilled_1.1_lora_dynamic_fro09_avg_rank_111_bf16.safetensors":
        f"{_HF}/Comfy-Org/ltx-2.3/resolve/main/split_files/loras/"
        "ltx_2.3_22b_distilled_1.1_lora_dynamic_fro09_avg_rank_111_bf16.safetensors",
    "gemma_3_12B_it_fp4_mixed.safetensors":
        f"{_HF}/Comfy-Org/ltx-2/resolve/main/split_files/text_encoders/gemma_3_12B_it_fp4_mixed.safetensors",
    # Stability AI's SD VAE fine-tuned with EMA (Look Beyond's VAE; the MSE twin is in the templates)
    "vae-ft-ema-560000-ema-pruned.safetensors":
        f"{_HF}/stabilityai/sd-vae-ft-ema-original/resolve/main/vae-ft-ema-560000-ema-pruned.safetensors?download=true",
})

NOT_PUBLIC = MappingProxyType({
    "panodit_xl2.safetensors": "Look Beyond published no PanoDiT weights; train or convert your own (docs/panodit.md)",
    "pretrained-weights/unet/diffusion_pytorch_model.safetensors":
        "Argus's UNet is a Google Drive folder (README of the Argus repository), not a direct download",
    "cogvideox_5b_i2v_vae.safetensors": "THUDM/CogVideoX-5b-I2V's vae/diffusion_pytorch_model.safetensors saved "
                                        "under this name (no file of this name to download)",
    "checkpoint-1350": "VideoFrom3D's GGI checkpoint is a Google Drive folder (README of the VideoFrom3D repository)",
    "videofrom3d_style_lora.safetensors": "a per-style Flux LoRA the user trains (docs/videofrom3d.md)",
    "videofrom3d_style_controlnet_lora.safetensors": "a per-style ControlNet LoRA the user trains (docs/videofrom3d.md)",
    "videopanda_adapter.safetensors": "the VideoPanda adapter the user trains (docs/videopanda.md)",
    "pano_sd_lora.safetensors": "DiffPano published no weights; the Pano-SD LoRA the user trains "
                                "(python -m pano360 train-diffpano --stage lora, docs/diffpano.md)",
    "diffpano_epipolar.safetensors": "DiffPano published no weights; the epipolar modules the user trains "
                                     "(python -m pano360 train-diffpano --stage epipolar, docs/diffpano.md)",
    "svd_keyframe_interpolation/unet/diffusion_pytorch_model.safetensors":
        "svd_keyframe_interpolation's fine-tuned UNet is a Google Drive folder (README of jeanne-wang/svd_keyframe_interpolation), "
        "not a direct download; its unet/ folder goes to models/lookbeyond/svd_keyframe_interpolation/",
    "HunyuanWorld-PanoDiT-Text.safetensors":
        "tencent/HunyuanWorld-1 publishes it as HunyuanWorld-PanoDiT-Text/lora.safetensors; saved under this name "
        "(a download prompt cannot rename a file, docs/workflows.md)",
    "PanoWan_latest-lora.safetensors":
        "YOUSIKI/PanoWan's latest-lora.ckpt converted with python -m pano360 lora-keys (its bare keys are not "
        "read by ComfyUI's LoRA loader, docs/workflows.md)",
    "Seamless-Equirectangular-LTX2.3.safetensors":
        "the LoRA of TheBurgstall/Seamless-Equirectangular-LTX2.3-LoRA saved under this name; its published file "
        "name could not be verified here (docs/workflows.md)",
    "open_clip_vit_h14_text.safetensors":
        "an OpenCLIP ViT-H/14 text encoder in ComfyUI's CLIP-H format, made by the user (docs/panodit.md); no file of this name is published",
})


def model_entry(filename: str, directory: str) -> dict | None:
    """The ``properties.models`` entry for ``filename`` in ``models/<directory>``, or None
    when the file has no public direct download."""
    url = PUBLIC_MODELS.get(filename)
    if url is None:
        return None
    return {"name": filename, "url": url, "directory": directory}
