"""The distribution-alignment LoRA trainer held to VideoFrom3D's own training code.

Golden data (tests/data/make_vf3d_style_lora_golden.py) come from the official x-flux Flux and
ControlNet with the official LoRA processors on a tiny config: one training step's prediction,
loss and LoRA gradients, the 1000 training times and the dataset's prepared images."""

from __future__ import annotations

import pathlib

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from pano360.models.flux import Flux, XLabsControlNet, controlnet_depth_from_state_dict, flux_params_from_state_dict
from pano360.pipelines.videofrom3d.style_data import ASPECT_CHOICES, prepare_pair
from pano360.pipelines.videofrom3d.style_lora import StyleLoRA, StyleLoRAConfig, TextEmbedding, style_loss, training_times

DATA = pathlib.Path(__file__).resolve().parents[2] / "data"
# float32, the same operations in another order (attention kernel, rope layout): float32 rounding
MODEL_TOL = 2e-5
# gradients: error relative to the tensor's largest gradient (measured 7e-7)
GRAD_REL_TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(DATA / "vf3d_style_lora_golden.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _part(g, prefix):
    return {k[len(prefix):]: v for k, v in g.items() if k.startswith(prefix)}


def build(g, meta, rank=None, **cfg):
    flux_sd, cn_sd = _part(g, "flux."), _part(g, "controlnet.")
    params = flux_params_from_state_dict(flux_sd, axes_dim=tuple(int(a) for a in meta["axes_dim"].split(",")))
    flux = Flux(params)
    flux.load_state_dict(flux_sd, strict=True)
    cn = XLabsControlNet(params, controlnet_depth_from_state_dict(cn_sd))
    cn.load_state_dict(cn_sd, strict=True)
    config = StyleLoRAConfig(rank=rank or int(meta["rank"]), precision="fp32", **cfg)
    return StyleLoRA(flux, cn, config)


def _official_lora(g, prefix):
    return {k: v for k, v in _part(g, prefix).items()}


def test_official_weights_load_strictly_with_detected_sizes(golden):
    g, meta = golden
    model = build(g, meta)
    p = model.flux.params
    assert (p.hidden_size, p.num_heads, p.depth, p.depth_single_blocks) == (32, 2, 3, 6)
    assert len(model.controlnet.double_blocks) == 2


def test_training_step_matches_the_official_loss_and_lora_gradients(golden):
    g, meta = golden
    model = build(g, meta)
    model.load_xlabs(_official_lora(g, "lora."), _official_lora(g, "cnlora."))
    model.train()
    text = TextEmbedding(g["txt"][0], g["vec"][0])
    loss = style_loss(model, g["x_1_latent"], g["control"], text, g["t"], g["x_0"])
    torch.testing.assert_close(loss.reshape(1), g["loss"], atol=MODEL_TOL, rtol=0)
    loss.backward()
    from pano360.models.xlabs_lora import xlabs_key

    checked = reached = 0
    for loras, prefix in ((model.flux_lora, "grad.lora."), (model.control_lora, "grad.cnlora.")):
        for name, w in loras.items():
            for half, prm in (("down", w.lora_down.weight), ("up", w.lora_up.weight)):
                ref = g[f"{prefix}{xlabs_key(name)}.{half}.weight"]
                got = torch.zeros_like(prm) if prm.grad is None else prm.grad
                scale = float(ref.abs().max())
                assert float((got - ref).abs().max()) <= GRAD_REL_TOL * scale, (name, half)
                checked += 1
                reached += scale > 0
    assert checked == len(_part(g, "grad."))  # every official LoRA weight has its counterpart
    assert reached == checked - 2  # all but the last ControlNet block's text proj (unused output)


def test_saved_lora_has_the_official_keys_and_values(golden):
    from pano360.models.xlabs_lora import xlabs_state_dict

    g, meta = golden
    model = build(g, meta)
    model.load_xlabs(_official_lora(g, "lora."), _official_lora(g, "cnlora."))
    for loras, prefix in ((model.flux_lora, "lora."), (model.control_lora, "cnlora.")):
        saved, ref = xlabs_state_dict(loras), _official_lora(g, prefix)
        assert set(saved) == set(ref)
        for k in ref:
            assert torch.equal(saved[k], ref[k])


def test_fresh_lora_follows_the_official_init_and_leaves_flux_unchanged(golden):
    g, meta = golden
    model = build(g, meta, rank=16, double_blocks=(0,), single_blocks=(1,))
    w = model.flux_lora["double_blocks.0.img_attn.qkv"]
    assert torch.count_nonzero(w.lora_up.weight) == 0
    assert abs(float(w.lora_down.weight.detach().std()) - 1 / 16) < 0.01  # N(0, (1/rank)^2)
    assert set(model.flux_lora) == {"double_blocks.0.img_attn.qkv", "double_blocks.0.img_attn.proj",
                                    "double_blocks.0.txt_attn.qkv", "double_blocks.0.txt_attn.proj",
                                    "single_blocks.1.linear1", "single_blocks.1.linear2"}
    assert model.flux_lora["single_blocks.1.linear1"].lora_up.weight.shape == (3 * 32, 16)  # qkv rows only
    assert all(not p.requires_grad for n, p in model.flux.named_parameters() if "lora_" not in n)


def test_training_times_are_the_official_schedule(golden):
    g, _ = golden
    torch.testing.assert_close(training_times(), g["timesteps"], atol=1e-7, rtol=0)


@pytest.mark.parametrize("name", ["wide", "tall"])
def test_prepared_images_match_the_official_dataset(golden, name):
    g, meta = golden
    pixels = Image.fromarray(g[f"data.{name}.image"].numpy())
    for ratio in ASPECT_CHOICES:
        img, edges = prepare_pair(pixels, pixels, ratio, int(meta["image_size"]))
        ref_img, ref_ctrl = g[f"data.{name}.{ratio}.img"], g[f"data.{name}.{ratio}.control"]
        assert img.shape == ref_img.shape, ratio
        torch.testing.assert_close(img, ref_img, atol=1e-6, rtol=0)
        # the official HED runs on the prepared crop; here the "HED" is the image itself, cropped
        # from the full image and resized once, i.e. the same pixels up to one extra resampling
        assert edges.shape == ref_ctrl.shape
        assert float((edges - ref_ctrl).abs().mean()) < 0.1


def test_gradient_checkpointing_gives_the_same_gradients(golden):
    g, meta = golden
    grads = []
    for ckpt in (False, True):
        model = build(g, meta, gradient_checkpointing=ckpt)
        model.load_xlabs(_official_lora(g, "lora."), _official_lora(g, "cnlora."))
        model.train()
        text = TextEmbedding(g["txt"][0], g["vec"][0])
        style_loss(model, g["x_1_latent"], g["control"], text, g["t"], g["x_0"]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.flux_parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-7, rtol=0)


def test_flux_dev_and_hed_controlnet_have_the_official_keys_and_shapes():
    """flux1-dev.safetensors and flux-hed-controlnet-v3.safetensors load strictly: the modules' key and
    shape lists equal the official x-flux models' (built on the meta device, tests/data)."""
    import json

    from pano360.models.flux import FLUX_DEV, XLABS_CONTROLNET_DEPTH

    ref = json.loads((DATA / "vf3d_flux_keys.json").read_text())
    with torch.device("meta"):
        flux, cn = Flux(FLUX_DEV), XLabsControlNet(FLUX_DEV, XLABS_CONTROLNET_DEPTH)
    assert {k: list(v.shape) for k, v in flux.state_dict().items()} == ref["flux"]
    assert {k: list(v.shape) for k, v in cn.state_dict().items()} == ref["controlnet"]
    assert flux_params_from_state_dict(flux.state_dict()) == FLUX_DEV  # detection from the shapes alone
    assert round(sum(p.numel() for p in flux.parameters()) / 1e9, 2) == 11.90  # Flux-dev's 11.9B parameters
