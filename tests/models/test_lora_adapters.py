"""LoRA adapters on a tiny diffusers UNet: identity at init, the LoRA paper's merged weight,
and the kohya key layout ComfyUI's LoraLoader maps."""

from __future__ import annotations

import copy

import pytest
import torch

from pano360.models.lora import LoRASet, load_lora, lora_hooks, save_lora

diffusers = pytest.importorskip("diffusers")

TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
    attention_head_dim=8, norm_num_groups=8,
)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(**TINY_UNET).eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 8, 16, generator=g), torch.tensor([10.0, 700.0]), torch.randn(2, 5, 16, generator=g)


def test_targets_are_every_attention_projection_with_kohya_keys(unet):
    loras = LoRASet.for_model(unet, rank=4)
    # 1 down + 1 mid + 2 up transformer blocks, attn1 and attn2, four projections each
    assert len(loras.paths) == 4 * 2 * 4
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0" in loras.paths
    keys = set(loras.state_dict())
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0"
    assert {f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha"} <= keys
    assert loras.state_dict()[f"{stem}.lora_down.weight"].shape == (4, 32)


def test_untrained_adapters_leave_the_output_bit_exact(unet):
    loras = LoRASet.for_model(unet, rank=4)
    x, t, ctx = inputs()
    with torch.no_grad():
        base = unet(x, t, ctx).sample
        with lora_hooks(unet, loras):
            out = unet(x, t, ctx).sample
    assert torch.equal(out, base)


def test_hooked_adapters_equal_the_merged_weight_of_the_lora_paper(unet):
    loras = LoRASet.for_model(unet, rank=2, alpha=3.0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for a in loras.children():
            a.lora_up.weight.copy_(torch.randn(a.lora_up.weight.shape, generator=g) * 0.1)
    merged = copy.deepcopy(unet)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for path in loras.paths:  # W' = W + (alpha / r) B A   (Hu et al. 2021, Eq. 3)
            a = loras.adapter(path)
            modules[path].weight += (3.0 / 2) * a.lora_up.weight @ a.lora_down.weight
    x, t, ctx = inputs()
    with torch.no_grad():
        with lora_hooks(unet, loras):
            hooked = unet(x, t, ctx).sample
        want = merged(x, t, ctx).sample
        base = unet(x, t, ctx).sample
    assert (want - base).abs().max() > 1e-3
    assert torch.allclose(hooked, want, atol=1e-5)


def test_save_load_roundtrip_and_strict_errors(tmp_path, unet):
    from safetensors.torch import save_file

    loras = LoRASet.for_model(unet, rank=4, alpha=2.0)
    path = tmp_path / "pano_sd.safetensors"
    save_lora(loras, path, {"ss_network_dim": 4})
    back = load_lora(path, paths=loras.paths)
    assert set(back.paths) == set(loras.paths)
    for k, v in loras.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    state = loras.state_dict()
    bad = {k: v for k, v in state.items() if not k.endswith("attn1_to_q.alpha")}
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"bad.safetensors: .*lacks \['alpha'\]"):
        load_lora(tmp_path / "bad.safetensors")
    save_file({**state, "lora_te_x.lora_down.weight": torch.zeros(1, 1)}, tmp_path / "te.safetensors")
    with pytest.raises(ValueError, match="unexpected key 'lora_te_x"):
        load_lora(tmp_path / "te.safetensors")
    with pytest.raises(ValueError, match="not a Linear"):
        with lora_hooks(torch.nn.Sequential(), loras):
            pass
