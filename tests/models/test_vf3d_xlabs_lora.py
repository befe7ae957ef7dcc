"""XLabs-format Flux LoRAs: which ComfyUI Flux weight each processor LoRA updates, and the merge."""

from __future__ import annotations

import pytest
import torch

from pano360.models.xlabs_lora import comfy_lora_inputs, is_xlabs_lora, merge_xlabs_lora, xlabs_lora_targets

HIDDEN, MLP, RANK = 8, 32, 2  # toy Flux: hidden 8, mlp 4x


def _lora(g):
    def pair(name, d_in, d_out):
        return {f"{name}.down.weight": torch.randn(RANK, d_in, generator=g),
                f"{name}.up.weight": torch.randn(d_out, RANK, generator=g)}

    sd = {}
    sd |= pair("double_blocks.0.processor.qkv_lora1", HIDDEN, 3 * HIDDEN)
    sd |= pair("double_blocks.0.processor.proj_lora2", HIDDEN, HIDDEN)
    sd |= pair("single_blocks.1.processor.qkv_lora", HIDDEN, 3 * HIDDEN)
    sd |= pair("single_blocks.1.processor.proj_lora", HIDDEN + MLP, HIDDEN)
    return sd


def _weights(g):
    return {
        "double_blocks.0.img_attn.qkv.weight": torch.randn(3 * HIDDEN, HIDDEN, generator=g),
        "double_blocks.0.txt_attn.proj.weight": torch.randn(HIDDEN, HIDDEN, generator=g),
        "single_blocks.1.linear1.weight": torch.randn(3 * HIDDEN + MLP, HIDDEN, generator=g),
        "single_blocks.1.linear2.weight": torch.randn(HIDDEN, HIDDEN + MLP, generator=g),
        "final_layer.linear.weight": torch.randn(4, HIDDEN, generator=g),
    }


def test_processor_lora_targets_follow_the_official_processors():
    g = torch.Generator().manual_seed(0)
    targets = {t.name: (t.weight_key, t.rows) for t in xlabs_lora_targets(_lora(g), "diffusion_model.")}
    assert targets == {
        "double_blocks.0.qkv1": ("diffusion_model.double_blocks.0.img_attn.qkv.weight", None),
        "double_blocks.0.proj2": ("diffusion_model.double_blocks.0.txt_attn.proj.weight", None),
        "single_blocks.1.qkv": ("diffusion_model.single_blocks.1.linear1.weight", (0, 3 * HIDDEN)),
        "single_blocks.1.proj": ("diffusion_model.single_blocks.1.linear2.weight", None),
    }


def test_merge_adds_the_processor_outputs():
    g = torch.Generator().manual_seed(1)
    lora, w = _lora(g), _weights(g)
    merged = merge_xlabs_lora(w, lora, strength=0.7)
    x = torch.randn(5, HIDDEN, generator=g)
    # single block: the processor adds qkv_lora(x) to the first 3*hidden outputs of linear1 only
    lora_out = (x @ lora["single_blocks.1.processor.qkv_lora.down.weight"].T) @ lora[
        "single_blocks.1.processor.qkv_lora.up.weight"].T
    expect = x @ w["single_blocks.1.linear1.weight"].T
    expect[:, : 3 * HIDDEN] += 0.7 * lora_out
    torch.testing.assert_close(x @ merged["single_blocks.1.linear1.weight"].T, expect)
    assert merged["final_layer.linear.weight"] is w["final_layer.linear.weight"]
    assert not torch.equal(merged["double_blocks.0.img_attn.qkv.weight"], w["double_blocks.0.img_attn.qkv.weight"])


def test_bad_loras_are_named():
    g = torch.Generator().manual_seed(2)
    assert is_xlabs_lora(_lora(g)) and not is_xlabs_lora({"lora_unet_x.lora_up.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="not an XLabs"):
        xlabs_lora_targets({"transformer.x.lora_A.weight": torch.zeros(1)})
    half = {"double_blocks.0.processor.qkv_lora1.down.weight": torch.zeros(2, HIDDEN)}
    with pytest.raises(ValueError, match="both down and up"):
        xlabs_lora_targets(half)
    with pytest.raises(ValueError, match="has no weight"):
        merge_xlabs_lora({}, _lora(g))


def test_comfy_lora_inputs_name_every_pair_once():
    g = torch.Generator().manual_seed(3)
    sd, key_map = comfy_lora_inputs(_lora(g))
    assert len(sd) == 8 and len(key_map) == 4
    assert key_map["xlabs.single_blocks.1.qkv"] == ("diffusion_model.single_blocks.1.linear1.weight", (0, 0, 3 * HIDDEN))
