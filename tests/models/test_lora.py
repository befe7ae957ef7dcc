"""LoRA wrappers: exact at init, merge equals the wrapped forward, removal restores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pano360.models.lora import LoRALinear, add_lora, lora_state_dict, remove_lora


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))


def test_fresh_lora_is_exactly_the_base_layer():
    net = _net()
    x = torch.randn(5, 8)
    ref = net(x)
    add_lora(net, ["0", "2"], rank=2)
    assert torch.equal(net(x), ref)


def test_merged_weight_reproduces_the_wrapped_layer_and_removal_restores_names():
    net = _net()
    x = torch.randn(5, 8)
    loras = add_lora(net, ["0"], rank=3, alpha=6.0)
    with torch.no_grad():
        loras["0"].lora_up.weight.normal_()
    wrapped = net(x)
    assert loras["0"].scale == 2.0
    remove_lora(net, loras, merge=True)
    assert isinstance(net[0], nn.Linear) and set(net.state_dict()) == set(_net().state_dict())
    torch.testing.assert_close(net(x), wrapped, rtol=1e-5, atol=1e-5)


def test_saved_factors_use_the_lora_down_up_alpha_layout():
    net = _net()
    loras = add_lora(net, ["2"], rank=2)
    sd = lora_state_dict(loras, rename=lambda n: f"diffusion_model.head.{n}")
    assert set(sd) == {"diffusion_model.head.2.lora_down.weight", "diffusion_model.head.2.lora_up.weight",
                       "diffusion_model.head.2.alpha"}
    assert sd["diffusion_model.head.2.lora_down.weight"].shape == (2, 16)
    assert sd["diffusion_model.head.2.lora_up.weight"].shape == (4, 2)
    with pytest.raises(TypeError):
        LoRALinear(nn.Conv2d(1, 1, 1), 2)
