"""XLabs-format style LoRAs on ComfyUI's own Flux blocks: merged into the weights, and as ComfyUI
LoRA patches through ``comfy.lora.load_lora``, the blocks reproduce the official x-flux blocks with
VideoFrom3D's LoRA attention processors (golden data from tests/data/make_vf3d_xlabs_lora_golden.py)."""

from __future__ import annotations

import pathlib

import torch
from safetensors import safe_open

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
# float32, same operations (attention kernels may differ): agreement to float32 rounding
BLOCK_TOL = 1e-5


def _golden():
    with safe_open(str(DATA / "vf3d_xlabs_lora_golden.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _blocks(meta):
    import comfy.ops
    from comfy.ldm.flux.layers import DoubleStreamBlock, SingleStreamBlock

    h, heads, ratio = int(meta["hidden"]), int(meta["heads"]), float(meta["mlp_ratio"])
    ops = comfy.ops.disable_weight_init
    return (DoubleStreamBlock(h, heads, ratio, qkv_bias=True, operations=ops).eval(),
            SingleStreamBlock(h, heads, ratio, operations=ops).eval())


def _run(double, single, g):
    with torch.no_grad():
        img, txt = double(g["img"], g["txt"], g["vec"], g["pe"])
        out = single(torch.cat([txt, img], 1), g["vec"], g["pe"])
    return img, txt, out


def _weights(g, prefix):
    return {k[len(prefix):]: v for k, v in g.items() if k.startswith(prefix)}


def _load(block, sd):
    """BFL names the RMSNorm gains ``scale``; newer ComfyUI blocks call them ``weight`` (its Flux
    loader renames them the same way)."""
    own = set(block.state_dict())
    block.load_state_dict({(k[:-6] + ".weight" if k.endswith(".scale") and k not in own else k): v
                           for k, v in sd.items()}, strict=True)


def test_merged_xlabs_lora_reproduces_the_official_lora_processors(comfy_in_process):
    from pano360.models.xlabs_lora import merge_xlabs_lora

    g, meta = _golden()
    lora = _weights(g, "lora.")
    flux = {f"double_blocks.0.{k}": v for k, v in _weights(g, "double.").items()}
    flux |= {f"single_blocks.0.{k}": v for k, v in _weights(g, "single.").items()}
    merged = merge_xlabs_lora(flux, lora)
    double, single = _blocks(meta)
    _load(double, _weights(merged, "double_blocks.0."))
    _load(single, _weights(merged, "single_blocks.0."))
    img, txt, out = _run(double, single, g)
    torch.testing.assert_close(img, g["img_out"], atol=BLOCK_TOL, rtol=0)
    torch.testing.assert_close(txt, g["txt_out"], atol=BLOCK_TOL, rtol=0)
    torch.testing.assert_close(out, g["single_out"], atol=BLOCK_TOL, rtol=0)
    # without the LoRA the blocks differ: the case tests something
    _load(double, _weights(g, "double."))
    _load(single, _weights(g, "single."))
    assert float((_run(double, single, g)[2] - g["single_out"]).abs().max()) > 100 * BLOCK_TOL


def test_xlabs_lora_as_comfyui_patches(comfy_in_process):
    import comfy.lora
    import comfy.model_patcher

    from pano360.models.xlabs_lora import comfy_lora_inputs

    g, meta = _golden()

    class Pair(torch.nn.Module):  # holds the two blocks under Flux's module names
        def __init__(self):
            super().__init__()
            d, s = _blocks(meta)
            self.double_blocks = torch.nn.ModuleList([d])
            self.single_blocks = torch.nn.ModuleList([s])

    pair = Pair()
    _load(pair.double_blocks[0], _weights(g, "double."))
    _load(pair.single_blocks[0], _weights(g, "single."))
    patcher = comfy.model_patcher.ModelPatcher(pair, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    lora_sd, key_map = comfy_lora_inputs(_weights(g, "lora."), prefix="")
    patches = comfy.lora.load_lora(lora_sd, key_map)
    assert len(patches) == 6 and len(patcher.add_patches(patches, 1.0)) == 6
    patcher.patch_model()
    try:
        img, txt, out = _run(pair.double_blocks[0], pair.single_blocks[0], g)
    finally:
        patcher.unpatch_model()
    torch.testing.assert_close(out, g["single_out"], atol=BLOCK_TOL, rtol=0)
    torch.testing.assert_close(img, g["img_out"], atol=BLOCK_TOL, rtol=0)
