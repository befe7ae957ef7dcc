"""Kohya-layout LoRA files for SD UNets: names ComfyUI maps, strict reading, merging as
ComfyUI's LoraLoader does (W += strength * alpha / r * up @ down, Hu et al. 2021 Eq. 3)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pano360.models.lora import add_lora, kohya_unet_name, linear_targets, lora_state_dict, merge_kohya_lora, read_kohya_lora


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.to_q, self.to_k, self.to_v = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(8, 8), nn.Dropout(0.0)])


def _net():
    torch.manual_seed(0)
    net = nn.Module()
    net.blocks = nn.ModuleList([Attn(), Attn()])
    net.proj = nn.Linear(8, 8)
    return net


def test_targets_and_names():
    assert linear_targets(_net()) == [f"blocks.{b}.{p}" for b in (0, 1) for p in ("to_q", "to_k", "to_v", "to_out.0")]
    assert kohya_unet_name("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0") == \
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0"


def test_merge_equals_the_wrapped_forward_and_reading_is_strict(tmp_path):
    net = _net()
    names = linear_targets(net)
    loras = add_lora(net, names, rank=2, alpha=3.0)
    with torch.no_grad():
        for w in loras.values():
            w.lora_up.weight.normal_()
    x = torch.randn(4, 8)
    want = [net.blocks[b].to_q(x) for b in (0, 1)]
    path = tmp_path / "lora.safetensors"
    save_file(lora_state_dict(loras, kohya_unet_name), str(path))
    fresh = _net()
    assert merge_kohya_lora(fresh, path) == 8
    assert all(torch.allclose(fresh.blocks[b].to_q(x), want[b], atol=1e-5) for b in (0, 1))
    sd = lora_state_dict(loras, kohya_unet_name)
    save_file({**sd, "lora_te_text_model.lora_down.weight": torch.zeros(1, 1)}, str(tmp_path / "te.safetensors"))
    with pytest.raises(ValueError, match="te.safetensors: unexpected key 'lora_te_text_model"):
        read_kohya_lora(tmp_path / "te.safetensors", names)
    save_file({k: v for k, v in sd.items() if not k.endswith("blocks_0_to_q.alpha")}, str(tmp_path / "part.safetensors"))
    with pytest.raises(ValueError, match=r"lora_unet_blocks_0_to_q lacks \['alpha'\]"):
        read_kohya_lora(tmp_path / "part.safetensors", names)
