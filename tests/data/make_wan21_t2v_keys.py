"""Regenerate the Wan 2.1 T2V 1.3B golden key list (run by hand, not part of the test suite).

Writes ``wan21_t2v_1_3B_comfy_keys.json`` next to this script: the sorted ``{key: shape}``
map of ComfyUI's own ``comfy.ldm.wan.model.WanModel`` built with the unet config that
``comfy/model_detection.py detect_unet_config`` returns for the official checkpoint
(``wan2.1_t2v_1.3B_fp16.safetensors``: dim 1536, ffn 8960, 30 blocks, 16 channels; the
published ``Wan-AI/Wan2.1-T2V-1.3B`` config.json has the same numbers).  ComfyUI loads that
file with these keys, so the list is the official layout.  The script also checks that
ComfyUI's detection maps the list back onto the same config.  Built on the ``meta`` device.

Usage:  COMFYUI_ROOT=/path/to/ComfyUI python tests/data/make_wan21_t2v_keys.py
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import torch

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "wan21_t2v_1_3B_comfy_keys.json"

# Wan-AI/Wan2.1-T2V-1.3B config.json: dim 1536, ffn_dim 8960, num_heads 12, num_layers 30,
# in_dim 16, out_dim 16, freq_dim 256, text_dim 4096, model_type t2v.
WAN21_T2V_1_3B = dict(model_type="t2v", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16,
                      out_dim=16, freq_dim=256, text_dim=4096)


def main() -> int:
    root = os.environ.get("COMFYUI_ROOT")
    if not root:
        sys.exit("set COMFYUI_ROOT to a ComfyUI checkout")
    sys.path.insert(0, str(HERE.parent / "host"))
    import comfy_env

    comfy_env.import_comfy(pathlib.Path(root))
    import comfy.model_detection
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    with torch.device("meta"):
        model = WanModel(operations=comfy.ops.disable_weight_init, device="meta", dtype=torch.float16,
                         **WAN21_T2V_1_3B)
    sd = model.state_dict()
    detected = comfy.model_detection.detect_unet_config(sd, "")
    for k in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "freq_dim"):
        if detected[k] != WAN21_T2V_1_3B[k]:
            sys.exit(f"ComfyUI detects {k}={detected[k]}, expected {WAN21_T2V_1_3B[k]}")
    if detected["model_type"] != "t2v":
        sys.exit(f"ComfyUI detects model_type {detected['model_type']!r}")
    keys = {k: list(v.shape) for k, v in sorted(sd.items())}
    OUT.write_text(json.dumps(keys, indent=0, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({len(keys)} keys)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
