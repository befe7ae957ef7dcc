"""Build random-weight, correctly shaped model files for host tests, with ComfyUI's own classes.

No weights can be downloaded, so host tests that load models through ComfyUI's stock
loaders use files whose keys and shapes are real but whose values are a seeded random
init.  Every network is instantiated from ComfyUI's own classes (so the keys are
exactly what its loaders expect) and saved through ComfyUI's own ``*_for_saving``
key mapping.

``sd15``: the smallest checkpoint that ``CheckpointLoaderSimple`` still loads as SD1.5
(``supported_models.SD15``, ``model_type EPS``) without a missing-key warning, on
ComfyUI 0.3.64 and 0.33:

* UNet: SD15 is matched on ``model_channels`` 320, ``context_dim`` 768, no linear
  projections and no ADM input (``supported_models.SD15.unet_config``); depth and the
  number of resolution levels are read from the keys (``model_detection.detect_unet_config``)
  and are not part of the match.  So one level with one res block + one cross-attention
  transformer, a middle block and two decoder blocks with one transformer each (where
  DiffPano's epipolar attention and the Pano-SD LoRA go): 25.8M parameters instead of 860M
  (fp16, 49 MiB).
* CLIP-L and the VAE cannot shrink: ``SD15.clip_target`` builds the fixed CLIP-L config
  (``sd1_clip_config.json``) and 0.3.64 builds the SD VAE from a fixed ddconfig
  (``comfy/sd.py``); a smaller file would load with missing (uninitialised) weights.
  Their matrices are stored as float8 (e4m3fn), which the loaders upcast to the compute
  dtype while loading (``load_state_dict`` copies into fp16/fp32 parameters), like any fp8
  checkpoint; norms, biases and embeddings stay fp16.  That halves them: 123M + 84M
  parameters in 234 MiB.

Total: 283 MiB (a real-size random SD1.5 is 2.0 GiB); built in a few seconds.

Init (seeded): biases 0, other 1-D weights (norm scales) 1, embeddings N(0, 0.02),
every other weight N(0, 1/fan_in), which keeps activations finite through every block.
Outputs of the models are noise; shapes, keys and code paths are real.

Usage (ComfyUI's dependencies must be installed in the interpreter)::

    python tests/host/make_random_models.py --comfyui /path/to/ComfyUI --out-dir DIR [--model sd15]

writes ``DIR/<FILENAMES[model]>``; an existing file built by this version of the script
(``BUILD_VERSION`` in its metadata) is kept.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import math
import os
import pathlib
import sys
import time

log = logging.getLogger("pano360.make_random_models")

SEED = 360
# Bump when a builder changes what it writes: caches holding an older file rebuild it.
BUILD_VERSION = "3"
METADATA_KEY = "pano360_build"
FILENAMES = {"sd15": "pano360_tiny_sd15.safetensors"}

# The smallest UNet ComfyUI's detection still matches to supported_models.SD15 (see the
# module docstring).  Keys as in comfy/model_detection.py's SD15 config; the differences
# from the real SD1.5 (channel_mult [1, 2, 4, 4], 2 res blocks per level, a middle block
# with one transformer) are only depth and levels, which detection reads from the keys.
SD15_TINY_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [1], "transformer_depth": [1], "channel_mult": [1],
    # a middle block and decoder blocks with one transformer each: the places DiffPano's
    # epipolar attention and the Pano-SD LoRA patch (mid_block / up_blocks attentions)
    "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1], "use_linear_in_transformer": False,
    "context_dim": 768, "num_heads": 8, "use_temporal_attention": False, "use_temporal_resblock": False,
}

# Default SD1.x/2.x VAE of comfy/sd.py (VAE.__init__).
SD_VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}
UNET_PREFIX = "model.diffusion_model."


def random_init_(module, generator) -> None:
    """Seeded init of every floating-point parameter and buffer of ``module`` in place."""
    import torch

    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("bias"):
                tensor.zero_()
            elif tensor.ndim <= 1:
                tensor.fill_(1.0)
            elif "embedding" in name:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
            else:
                fan_in = math.prod(tensor.shape[1:])
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))


def _storage_dtype(key: str, tensor):
    """fp16 for the UNet, norms, biases and embeddings; float8 for CLIP/VAE matrices."""
    import torch

    if key.startswith(UNET_PREFIX) or tensor.ndim < 2 or "embedding" in key:
        return torch.float16
    return torch.float8_e4m3fn


def _state_dict_for_saving(model, clip_sd: dict, vae_sd: dict) -> dict:
    """``BaseModel.state_dict_for_saving`` of either host: 0.33 takes the UNet state dict
    as its first argument, 0.3.64 reads it from the model itself."""
    if "unet_state_dict" in inspect.signature(model.state_dict_for_saving).parameters:
        return model.state_dict_for_saving(model.diffusion_model.state_dict(), clip_sd, vae_sd)
    return model.state_dict_for_saving(clip_sd, vae_sd)


def build_sd15(out: pathlib.Path) -> None:
    """Write the tiny random SD1.5 checkpoint to ``out``, atomically."""
    import torch
    import comfy.model_detection
    import comfy.sd1_clip
    import comfy.utils
    from comfy.ldm.models.autoencoder import AutoencoderKL

    gen = torch.Generator().manual_seed(SEED)
    model_config = comfy.model_detection.model_config_from_unet_config(dict(SD15_TINY_UNET_CONFIG))
    if model_config is None or type(model_config).__name__ != "SD15":
        raise RuntimeError(f"tiny SD1.5 unet config detected as {type(model_config).__name__}, expected SD15")
    model_config.set_inference_dtype(torch.float16, None)
    model = model_config.get_model({}, device="cpu")
    random_init_(model.diffusion_model, gen)

    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float16)
    random_init_(clip, gen)

    vae = AutoencoderKL(ddconfig=dict(SD_VAE_DDCONFIG), embed_dim=4)
    random_init_(vae, gen)

    sd = _state_dict_for_saving(model, clip.state_dict(), vae.state_dict())
    sd = {k: (v.to(_storage_dtype(k, v)) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    detected = comfy.model_detection.model_config_from_unet(sd, UNET_PREFIX)
    if type(detected).__name__ != "SD15":
        raise RuntimeError(f"the saved keys are detected as {type(detected).__name__}, expected SD15")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    comfy.utils.save_torch_file(sd, str(tmp), metadata={
        "pano360": "tiny random SD1.5-shaped weights for tests", METADATA_KEY: BUILD_VERSION})
    os.replace(tmp, out)
    log.info("wrote %s: %d tensors, %.2fM params, %.1f MiB", out, len(sd),
             sum(v.numel() for v in sd.values()) / 1e6, out.stat().st_size / 2**20)


BUILDERS = {"sd15": build_sd15}


def is_current(path: pathlib.Path) -> bool:
    """True when ``path`` exists and was written by this BUILD_VERSION."""
    if not path.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get(METADATA_KEY) == BUILD_VERSION
    except Exception:  # noqa: BLE001  (a truncated or foreign file: rebuild it)
        return False


def ensure(model: str, out_dir: pathlib.Path) -> pathlib.Path:
    """The file of ``model`` in ``out_dir``, built unless a current one is there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILENAMES[model]
    if is_current(path):
        log.info("%s is current (build %s)", path, BUILD_VERSION)
        return path
    start = time.perf_counter()
    BUILDERS[model](path)
    log.info("built %s in %.1f s", model, time.perf_counter() - start)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=pathlib.Path, required=True, help="ComfyUI root folder")
    parser.add_argument("--model", choices=sorted(BUILDERS), default="sd15")
    parser.add_argument("--out-dir", type=pathlib.Path, required=True, help="folder of the .safetensors file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(args.comfyui.resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    ensure(args.model, args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
