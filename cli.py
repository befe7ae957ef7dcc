"""Command-line entry point: ``python -m pano360 <command> [options]``.

Each command lives in its own module and exposes ``add_arguments(parser)`` and
``run(args) -> int``.  Commands never import ComfyUI.
"""

from __future__ import annotations

import argparse
import importlib
import logging

# command name -> (module relative to the pack, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (".app.demo", "the main job on the bundled default panorama (no weights, no server)"),
    "convert-panodit": (".app.convert_panodit", "PanoDiT checkpoint (.pt, EMA preferred) -> safetensors"),
    "lora-keys": (".app.lora_keys", "prefix a LoRA's bare keys (DiffSynth/PEFT, e.g. PanoWan) so ComfyUI's LoRA loaders map them"),
    "workflows": (".client.workflows_cli", "build and check the bundled workflows (UI files from API twins, schema validation)"),
    "batch": (".client.batch", "queue a sweep of an API workflow on one or more ComfyUI servers, resumable"),
    "train-videopanda": (".app.train_videopanda", "train VideoPanda's multi-view adapter for Wan 2.1 on a folder of 360° videos"),
    "train-diffpano": (".app.train_diffpano", "train DiffPano's Pano-SD LoRA or its epipolar modules (GPU; tiny runs on CPU)"),
    "train-videofrom3d-lora": (".app.train_videofrom3d_lora",
                               "train VideoFrom3D's style LoRA (Flux + XLabs HED ControlNet) on reference images"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pano360", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name, __package__)
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    return int(modules[args.command].run(args) or 0)
