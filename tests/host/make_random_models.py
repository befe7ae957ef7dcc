"""Build random-weight, correctly shaped model files for host tests, with ComfyUI's own classes.

No weights can be downloaded, so host tests that load models through ComfyUI's stock
loaders use files whose keys and shapes are real but whose values are a seeded random
init.  Every network is instantiated from ComfyUI's own classes (so the keys are
exactly what its loaders expect) and saved through ComfyUI's own ``*_for_saving``
key mapping:

* ``sd15``: an SD1.5 checkpoint (UNet from ``supported_models.SD15``, CLIP-L from
  ``sd1_clip.SD1ClipModel``, VAE ``AutoencoderKL`` with the default SD ddconfig of
  ``comfy/sd.py``), fp16 safetensors, about 2 GB.  ``CheckpointLoaderSimple`` detects
  it as SD15 / EPS.

Init (seeded): biases 0, other 1-D weights (norm scales) 1, embeddings N(0, 0.02),
every other weight N(0, 1/fan_in), which keeps activations finite through every block.
Outputs of the models are noise; shapes, keys and code paths are real.

Usage (ComfyUI's dependencies must be installed in the interpreter)::

    python tests/host/make_random_models.py --comfyui /path/to/ComfyUI --out sd15.safetensors
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import pathlib
import sys
import time

log = logging.getLogger("pano360.make_random_models")

SEED = 360

# The full UNet configuration of SD1.5 as ComfyUI's model detection derives it from an
# SD1.5 state dict (comfy/model_detection.py, unet_config_from_diffusers_unet, "SD15").
SD15_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
    "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}

# Default SD1.x/2.x VAE of comfy/sd.py (VAE.__init__).
SD_VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}


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


def build_sd15(out: pathlib.Path) -> None:
    """Write a random SD1.5 checkpoint (fp16 safetensors) to ``out``, atomically."""
    import torch
    import comfy.model_detection
    import comfy.sd1_clip
    import comfy.utils
    from comfy.ldm.models.autoencoder import AutoencoderKL

    gen = torch.Generator().manual_seed(SEED)
    model_config = comfy.model_detection.model_config_from_unet_config(dict(SD15_UNET_CONFIG))
    if model_config is None or type(model_config).__name__ != "SD15":
        raise RuntimeError(f"SD1.5 unet config detected as {type(model_config).__name__}, expected SD15")
    model_config.set_inference_dtype(torch.float16, None)
    model = model_config.get_model({}, device="cpu")
    random_init_(model.diffusion_model, gen)

    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float16)
    random_init_(clip, gen)

    vae = AutoencoderKL(ddconfig=dict(SD_VAE_DDCONFIG), embed_dim=4)
    random_init_(vae, gen)

    sd = model.state_dict_for_saving(clip.state_dict(), vae.state_dict())
    sd = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    comfy.utils.save_torch_file(sd, str(tmp), metadata={"pano360": "random SD1.5-shaped weights for tests"})
    os.replace(tmp, out)
    log.info("wrote %s: %d tensors, %.2fM params", out, len(sd), sum(v.numel() for v in sd.values()) / 1e6)


BUILDERS = {"sd15": build_sd15}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=pathlib.Path, required=True, help="ComfyUI root folder")
    parser.add_argument("--model", choices=sorted(BUILDERS), default="sd15")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output .safetensors file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(args.comfyui.resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    BUILDERS[args.model](args.out)
    log.info("built in %.1f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
