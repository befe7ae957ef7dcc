"""``python -m pano360 lora-keys IN OUT.safetensors``: make a LoRA's keys loadable by ComfyUI.

For LoRAs saved with bare module names (DiffSynth-Studio/PEFT, e.g. PanoWan's
``latest-lora.ckpt`` for Wan 2.1): prefixes them with ``diffusion_model.`` so ComfyUI's
stock LoRA loaders map them (models/lora_keys.py).  Reads weights-only torch files or
safetensors; writes safetensors, never over an existing file.
"""

from __future__ import annotations

import argparse
import logging

from ..models.lora_keys import convert_lora_file

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="the LoRA file (.safetensors, .ckpt, .pt, .pth, .bin)")
    parser.add_argument("dst", help="output .safetensors (put it in ComfyUI's models/loras/)")


def run(args: argparse.Namespace) -> int:
    try:
        info = convert_lora_file(args.src, args.dst)
    except (OSError, ValueError) as exc:
        log.error("lora-keys: %s", exc)
        return 2
    log.info("wrote %s: %d tensors, %d keys prefixed with diffusion_model.", args.dst, info["keys"], info["renamed"])
    return 0
