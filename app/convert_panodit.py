"""``python -m pano360 convert-panodit IN.pt OUT.safetensors [--key ema|model]``.

Converts an official Look Beyond PanoDiT training checkpoint (or any PanoDiT state dict)
to safetensors after a strict check against the matching module.  Reading never unpickles
objects outside ``pano_dit_loader.ALLOWED_GLOBALS``.
"""

from __future__ import annotations

import argparse
import logging
import pickle

from ..models.pano_dit_loader import CHECKPOINT_KEYS, convert_to_safetensors

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="official .pt checkpoint (dict with model/ema/opt/args) or .safetensors")
    parser.add_argument("dst", help="output .safetensors file (models/panodit/ in ComfyUI)")
    parser.add_argument(
        "--key",
        choices=("auto",) + CHECKPOINT_KEYS,
        default="auto",
        help="which weights to export: ema (preferred by 'auto' when present) or model",
    )


def run(args: argparse.Namespace) -> int:
    try:
        info = convert_to_safetensors(args.src, args.dst, key=args.key)
    except (OSError, ValueError, pickle.UnpicklingError) as exc:  # incl. ForbiddenPickleError
        log.error("convert-panodit: %s", exc)
        return 2
    log.info("wrote %s: %s weights ('%s') from %s", args.dst, info["variant"], info["key"], args.src)
    return 0
