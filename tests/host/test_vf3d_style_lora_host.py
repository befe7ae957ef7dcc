"""The style-LoRA trainer against ComfyUI's own classes (both host versions).

- The trainer's Flux, XLabs ControlNet and Flux VAE loaders read state dicts made by ComfyUI's
  own ``Flux``, ``ControlNetFlux`` and ``AutoencodingEngine`` and compute what ComfyUI computes.
- ``python -m pano360 train-videofrom3d-lora`` on those tiny random models writes LoRAs that load
  back: ``lora.safetensors`` through the pack's XLabs Flux LoRA Loader, ``lora_comfyui.safetensors``
  through ComfyUI's stock ``LoraLoaderModelOnly`` (every key applied, the same weights), and
  ``controlnet.lora.safetensors`` through the pack's XLabs ControlNet Loader.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

# Flux's head dim 128 (the rotary split 16/56/56 ComfyUI's detection assumes too), tiny otherwise
FLUX = dict(in_channels=64, out_channels=16, vec_in_dim=8, context_in_dim=12, hidden_size=128, mlp_ratio=2.0,
            num_heads=1, depth=2, depth_single_blocks=5, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
            qkv_bias=True, guidance_embed=True)
# the same VAE layout ComfyUI's Flux VAE has (LDM Encoder/Decoder), at 32 channels and 4 levels (8x)
DDCONFIG = dict(double_z=True, z_channels=16, resolution=256, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 1, 1, 1],
                num_res_blocks=1, attn_resolutions=[], dropout=0.0)
MODEL_TOL = 2e-5  # float32, same weights, two implementations


def _file_keys(sd):
    """ComfyUI 0.33 names the RMSNorm gains ``weight``; checkpoint files (and older ComfyUI) ``scale``."""
    return {(k[: -len(".weight")] + ".scale" if k.endswith("_norm.weight") else k): v.clone() for k, v in sd.items()}


def _randomise(module, std, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture(scope="module")
def comfy_flux(comfy_in_process):
    import comfy.ops
    from comfy.ldm.flux.controlnet import ControlNetFlux
    from comfy.ldm.flux.model import Flux, FluxParams

    params = dict(FLUX)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:  # ComfyUI 0.33's Flux
        params["txt_ids_dims"] = []
    net = Flux(operations=comfy.ops.disable_weight_init, **params)
    if net.img_in.in_features != 64:  # newer ComfyUI counts in_channels before patching
        params["in_channels"] = 16
        net = Flux(operations=comfy.ops.disable_weight_init, **params)
    _randomise(net, 0.05, 0).eval()
    cn = _randomise(ControlNetFlux(latent_input=False, operations=comfy.ops.disable_weight_init,
                                   **dict(params, depth=2, depth_single_blocks=0)), 0.05, 1).eval()
    return net, cn, params


def test_trainer_models_equal_comfyui_flux_and_controlnet(comfy_in_process, comfy_flux):
    from pano360.models.flux import Flux, XLabsControlNet, controlnet_depth_from_state_dict, flux_params_from_state_dict
    from pano360.models.flux import image_ids, patchify, unpatchify

    net, cn, _ = comfy_flux
    flux_sd, cn_sd = _file_keys(net.state_dict()), _file_keys(cn.state_dict())
    ours = Flux(flux_params_from_state_dict(flux_sd))
    ours.load_state_dict(flux_sd, strict=True)
    ours_cn = XLabsControlNet(ours.params, controlnet_depth_from_state_dict(cn_sd))
    ours_cn.load_state_dict(cn_sd, strict=True)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 16, 8, 12, generator=g)
    ctx, y = torch.randn(1, 5, 12, generator=g), torch.randn(1, 8, generator=g)
    hint = torch.rand(1, 3, 64, 96, generator=g)
    t, guidance = torch.tensor([0.63]), torch.tensor([3.5])
    with torch.no_grad():
        control = cn(x, t, ctx, y=y, guidance=guidance, hint=hint)
        # as comfy.controlnet.ControlNet hands it to the model: no single-block residuals here
        ref = net(x, t, ctx, y=y, guidance=guidance, control={"input": list(control["input"]), "output": []})
        ids, txt_ids = image_ids(1, 8, 12), torch.zeros(1, 5, 3)
        residuals = ours_cn(patchify(x), ids, hint * 2 - 1, ctx, txt_ids, t, y, guidance)  # ComfyUI: hint*2-1
        for i, r in enumerate(residuals):
            torch.testing.assert_close(r, control["input"][i], atol=MODEL_TOL, rtol=0)
        got = unpatchify(ours(patchify(x), ids, ctx, txt_ids, t, y, guidance, residuals), 8, 12)
    torch.testing.assert_close(got, ref, atol=MODEL_TOL, rtol=0)
    assert float((ref - net(x, t, ctx, y=y, guidance=guidance)).abs().max()) > 100 * MODEL_TOL  # control matters


def test_flux_vae_loader_equals_comfyui_encoder(comfy_in_process, tmp_path):
    from comfy.ldm.models.autoencoder import AutoencodingEngine

    from pano360.models.flux_loader import load_flux_vae

    enc = {"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": DDCONFIG}
    dec = {"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": DDCONFIG}
    ae = AutoencodingEngine(regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
                            encoder_config=enc, decoder_config=dec)
    _randomise(ae, 0.05, 5).eval()
    save_file({k: v.contiguous() for k, v in ae.state_dict().items()}, str(tmp_path / "ae.safetensors"))
    vae = load_flux_vae(tmp_path / "ae.safetensors")
    x = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        ref = ae.encode(x)  # ComfyUI: the posterior's mode (mean)
        got = vae.encode(x).latent_dist.mean
        torch.testing.assert_close(got, ref, atol=MODEL_TOL, rtol=0)
        torch.testing.assert_close(vae.decode(got).sample, ae.decode(ref), atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def trained(comfy_in_process, comfy_flux, tmp_path_factory):
    """A short CLI run on files made from ComfyUI's tiny Flux and ControlNet."""
    from diffusers import AutoencoderKL

    from pano360.cli import main

    net, cn, _ = comfy_flux
    root = tmp_path_factory.mktemp("vf3d_style")
    save_file(_file_keys(net.state_dict()), str(root / "flux.safetensors"))
    save_file(_file_keys(cn.state_dict()), str(root / "cn.safetensors"))
    torch.manual_seed(7)
    AutoencoderKL(latent_channels=16, block_out_channels=[32] * 4, down_block_types=["DownEncoderBlock2D"] * 4,
                  up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, norm_num_groups=32,
                  scaling_factor=0.3611, shift_factor=0.1159).save_pretrained(str(root / "vae"))
    (root / "img").mkdir()
    (root / "hed").mkdir()
    yy, xx = np.mgrid[0:48, 0:64]
    Image.fromarray(np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)).save(root / "img" / "style.png")
    edge = (((xx % 12) == 0) | ((yy % 12) == 0)).astype(np.uint8) * 255
    Image.fromarray(np.stack([edge] * 3, -1)).save(root / "hed" / "style.png")
    g = torch.Generator().manual_seed(8)
    save_file({"txt": torch.randn(3, 12, generator=g), "vec": torch.randn(8, generator=g)}, str(root / "text.safetensors"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: faster than contending for the shared cores
    try:
        with torch.inference_mode(False), torch.enable_grad():
            main(["train-videofrom3d-lora", "--images", str(root / "img"), "--edges", str(root / "hed"),
                  "--text-embedding", str(root / "text.safetensors"), "--flux", str(root / "flux.safetensors"),
                  "--controlnet", str(root / "cn.safetensors"), "--vae", str(root / "vae"), "--out", str(root / "out"),
                  "--steps", "4", "--save-every", "4", "--eval-every", "4", "--size", "64", "--precision", "fp32",
                  "--lr", "1e-2", "--device", "cpu"])
    finally:
        torch.set_num_threads(n)
    return root / "out" / "checkpoint-4"


def test_trained_lora_loads_through_the_pack_and_stock_loaders(comfy_in_process, comfy_flux, trained, caplog):
    import nodes as comfy_nodes

    from pano360.models.xlabs_lora import merge_xlabs_lora
    from pano360.nodes import _host
    from pano360.nodes import videofrom3d as vf

    net, _, params = comfy_flux
    loras = comfy_in_process.folder_paths.get_folder_paths("loras")[0]
    os.makedirs(loras, exist_ok=True)
    shutil.copy(trained / "lora.safetensors", os.path.join(loras, "vf3d_style_xlabs.safetensors"))
    shutil.copy(trained / "lora_comfyui.safetensors", os.path.join(loras, "vf3d_style_kohya.safetensors"))
    comfy_in_process.folder_paths.filename_list_cache.pop("loras", None)
    model = _host.build_model(net.state_dict(), "Flux", unet_config_overrides=dict(params), dtype=torch.float32,
                              source="tiny flux")
    xlabs = load_file(str(trained / "lora.safetensors"))
    expected = {f"diffusion_model.{k}": v for k, v in
                merge_xlabs_lora({k: v for k, v in _file_keys(net.state_dict()).items()}, xlabs).items()}

    def patched_weights(m):
        m.patch_model()
        try:
            return {k: v.clone() for k, v in m.model.state_dict().items()}
        finally:
            m.unpatch_model()

    pack = vf.Pano360XLabsLoraLoader.execute(model=model, lora_name="vf3d_style_xlabs.safetensors", strength=1.0)[0]
    with caplog.at_level(logging.WARNING):
        stock = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, "vf3d_style_kohya.safetensors", 1.0)[0]
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    assert len(stock.patches) == len(pack.patches) == len(xlabs) // 2  # one patched weight per LoRA pair
    a, b = patched_weights(pack), patched_weights(stock)
    changed = 0
    for k, v in a.items():
        want = expected.get(k.replace("_norm.weight", "_norm.scale"), v)
        torch.testing.assert_close(v, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(b[k], want, atol=1e-6, rtol=0)
        changed += not torch.equal(v, model.model.state_dict()[k])
    assert changed == len(xlabs) // 2  # the LoRA changed every weight it targets (qkv: linear1 rows)


def _controlnet_files(comfy_in_process, cn, trained):
    folder_paths = comfy_in_process.folder_paths
    cn_dir, lora_dir = folder_paths.get_folder_paths("controlnet")[0], folder_paths.get_folder_paths("loras")[0]
    os.makedirs(cn_dir, exist_ok=True)
    os.makedirs(lora_dir, exist_ok=True)
    save_file(_file_keys(cn.state_dict()), os.path.join(cn_dir, "vf3d_tiny_cn.safetensors"))
    shutil.copy(trained / "controlnet.lora.safetensors", os.path.join(lora_dir, "vf3d_style_cn.safetensors"))
    for name in ("controlnet", "loras"):
        folder_paths.filename_list_cache.pop(name, None)
    return load_file(str(trained / "controlnet.lora.safetensors"))


def _expected_merge(cn_sd, lora):
    out = dict(cn_sd)
    for k in lora:
        if k.endswith(".down.weight"):
            stem = k[: -len(".down.weight")]
            block, proc = stem.split(".processor.")
            target = {"qkv_lora1": "img_attn.qkv", "proj_lora1": "img_attn.proj", "qkv_lora2": "txt_attn.qkv",
                      "proj_lora2": "txt_attn.proj"}[proc]
            key = f"{block}.{target}.weight"
            out[key] = cn_sd[key] + lora[f"{stem}.up.weight"].float() @ lora[k].float()
    return out


def test_controlnet_lora_merges_in_the_pack_loader(comfy_in_process, comfy_flux, trained, monkeypatch):
    from pano360.nodes import _host
    from pano360.nodes import videofrom3d as vf

    _, cn, _ = comfy_flux
    lora = _controlnet_files(comfy_in_process, cn, trained)
    seen = {}
    monkeypatch.setattr(_host, "controlnet_from_state_dict", lambda sd: seen.setdefault("sd", sd))
    vf.Pano360XLabsControlNetLoader.execute(control_net_name="vf3d_tiny_cn.safetensors",
                                            lora_name="vf3d_style_cn.safetensors", strength=1.0)
    want = _expected_merge(_file_keys(cn.state_dict()), lora)
    assert set(seen["sd"]) == set(want)
    for k, v in want.items():
        torch.testing.assert_close(seen["sd"][k].float(), v.float(), atol=1e-6, rtol=0)
    assert len(lora) == 2 * 4 * 2  # both ControlNet double blocks, 4 layers each, down + up


@pytest.mark.comfy_min_version((0, 33))  # FluxParams.txt_ids_dims: new in 0.33; deselected on 0.3.64
def test_controlnet_with_lora_builds_in_comfyui(comfy_in_process, trained):
    """ComfyUI builds the merged ControlNet (0.33's detection reads the sizes; 0.3.64's assumes
    Flux-dev's, so there only the merge above is checked)."""
    import comfy.ops
    from comfy.ldm.flux.controlnet import ControlNetFlux
    from comfy.ldm.flux.model import FluxParams

    from pano360.nodes import videofrom3d as vf

    params = dict(FLUX, mlp_ratio=4.0, depth=2, depth_single_blocks=0)
    if "txt_ids_dims" not in {f.name for f in dataclasses.fields(FluxParams)}:
        pytest.skip("ComfyUI 0.3.64 builds only full-size XLabs ControlNets (sizes fixed in its detection)")
    params["txt_ids_dims"] = []
    cn = ControlNetFlux(latent_input=False, operations=comfy.ops.disable_weight_init, **params)
    if cn.img_in.in_features != 64:
        cn = ControlNetFlux(latent_input=False, operations=comfy.ops.disable_weight_init, **dict(params, in_channels=16))
    _randomise(cn, 0.05, 9)
    lora = _controlnet_files(comfy_in_process, cn, trained)
    control = vf.Pano360XLabsControlNetLoader.execute(control_net_name="vf3d_tiny_cn.safetensors",
                                                      lora_name="vf3d_style_cn.safetensors", strength=1.0)[0]
    want = _expected_merge(_file_keys(cn.state_dict()), lora)
    got = _file_keys(control.control_model.state_dict())
    for k in ("double_blocks.0.img_attn.qkv.weight", "double_blocks.1.txt_attn.proj.weight"):
        torch.testing.assert_close(got[k].float(), want[k].float(), atol=1e-6, rtol=0)


def test_save_text_embedding_node_writes_what_the_trainer_reads(comfy_in_process):
    from pano360.nodes import videofrom3d as vf
    from pano360.nodes._common import NodeInputError
    from pano360.pipelines.videofrom3d.style_data import read_text_embedding

    g = torch.Generator().manual_seed(10)
    cond = [[torch.randn(1, 256, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 3.5}]]
    # execute directly: the node has no hidden inputs, and conftest's run_node does not build 0.33's
    # hidden-input holder yet (hosts work in progress)
    paths = [vf.Pano360VF3DSaveTextEmbedding.execute(conditioning=cond, filename_prefix="vf3d/empty_prompt").result[0]
             for _ in range(2)]
    assert [p.rsplit("/", 1)[1] for p in paths] == ["empty_prompt_00001_.safetensors", "empty_prompt_00002_.safetensors"]
    emb = read_text_embedding(paths[0])
    assert torch.equal(emb.txt, cond[0][0][0]) and torch.equal(emb.vec, cond[0][1]["pooled_output"][0])
    with pytest.raises(NodeInputError, match="conditioning"):
        vf.Pano360VF3DSaveTextEmbedding.execute(conditioning=[[torch.zeros(1, 4, 8), {}]], filename_prefix="x")
    with pytest.raises(NodeInputError, match="filename_prefix"):
        vf.Pano360VF3DSaveTextEmbedding.execute(conditioning=cond, filename_prefix="../outside")
