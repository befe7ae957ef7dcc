"""Argus UNet key conversion: diffusers SVD layout -> ComfyUI's SVD (SGM) layout.

References: the golden key lists in tests/data (diffusers' module with the official SVD config and
ComfyUI's own UNetModel, both built on the meta device by tests/data/make_svd_unet_key_lists.py),
and a tiny diffusers ``UNetSpatioTemporalConditionModel`` built here.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

from _tiny_models import TINY_SVD_CONFIG
from pano360.models.svd_unet import (
    convert_diffusers_svd_unet_keys,
    head_channels_from_config,
    infer_svd_unet_layout,
    is_diffusers_svd_unet,
)

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"



def _golden(name: str) -> dict[str, list[int]]:
    return json.loads((DATA / name).read_text())


def _meta_state_dict(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def test_full_svd_keys_map_one_to_one_onto_comfy_keys_with_same_shapes():
    diffusers_keys = _golden("svd_unet_diffusers_keys.json")
    comfy_keys = _golden("svd_unet_comfy_keys.json")
    converted = convert_diffusers_svd_unet_keys(_meta_state_dict(diffusers_keys))
    assert len(converted) == len(diffusers_keys) == 1428
    assert set(converted) == set(comfy_keys)
    wrong = {k: (list(v.shape), comfy_keys[k]) for k, v in converted.items() if list(v.shape) != comfy_keys[k]}
    assert wrong == {}


def test_full_svd_layout_is_read_from_key_names():
    layout = infer_svd_unet_layout(_golden("svd_unet_diffusers_keys.json"))
    assert (layout.levels, layout.layers_per_block, layout.transformer_depth) == (4, 2, 1)


def test_tiny_diffusers_unet_keys_all_convert_one_to_one():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNetSpatioTemporalConditionModel(**TINY_SVD_CONFIG)
    sd = unet.state_dict()
    converted = convert_diffusers_svd_unet_keys(sd)
    assert len(converted) == len(sd)
    # every tensor arrives exactly once, under a new name
    assert sorted(id(v) for v in converted.values()) == sorted(id(v) for v in sd.values())
    assert any(k.startswith("input_blocks.1.1.time_stack.0.") for k in converted)
    assert "output_blocks.1.1.conv.weight" in converted  # up level 0 has no attention -> slot 1


def test_missing_key_is_refused_by_name():
    sd = _meta_state_dict(_golden("svd_unet_diffusers_keys.json"))
    gone = "down_blocks.1.attentions.0.temporal_transformer_blocks.0.attn2.to_k.weight"
    del sd[gone]
    with pytest.raises(ValueError, match=r"1 missing keys: " + gone.replace(".", r"\.")):
        convert_diffusers_svd_unet_keys(sd, source="argus.safetensors")


def test_missing_shortcut_and_extra_key_are_both_named():
    sd = _meta_state_dict(_golden("svd_unet_diffusers_keys.json"))
    del sd["up_blocks.0.resnets.0.spatial_res_block.conv_shortcut.bias"]
    sd["up_blocks.0.resnets.0.lora_A.weight"] = torch.empty(1, device="meta")
    with pytest.raises(ValueError) as err:
        convert_diffusers_svd_unet_keys(sd, source="argus.safetensors")
    text = str(err.value)
    assert text.startswith("argus.safetensors:")
    assert "conv_shortcut.bias" in text and "lora_A.weight" in text


def test_layout_detection_tells_diffusers_from_sgm():
    assert is_diffusers_svd_unet(_golden("svd_unet_diffusers_keys.json"))
    assert not is_diffusers_svd_unet(_golden("svd_unet_comfy_keys.json"))
    assert not is_diffusers_svd_unet(["model.diffusion_model." + k for k in _golden("svd_unet_comfy_keys.json")])
    with pytest.raises(ValueError, match="neither"):
        is_diffusers_svd_unet(["encoder.conv_in.weight"])


def test_head_width_from_config():
    assert head_channels_from_config({"block_out_channels": [320, 640, 1280, 1280], "num_attention_heads": [5, 10, 20, 20]}) == 64
    assert head_channels_from_config(TINY_SVD_CONFIG) == 16
    with pytest.raises(ValueError, match="unequal head widths"):
        head_channels_from_config({"block_out_channels": [32, 64], "num_attention_heads": [2, 2]})


def test_head_width_of_a_config_that_relies_on_diffusers_defaults():
    # diffusers fills absent fields from UNetSpatioTemporalConditionModel.__init__'s defaults:
    # block_out_channels (320, 640, 1280, 1280), num_attention_heads (5, 10, 20, 20) -> SVD's 64.
    diffusers = pytest.importorskip("diffusers")
    import inspect

    defaults = inspect.signature(diffusers.UNetSpatioTemporalConditionModel.__init__).parameters
    channels, heads = defaults["block_out_channels"].default, defaults["num_attention_heads"].default
    assert channels[0] // heads[0] == 64   # the independent reference: diffusers' own defaults
    assert head_channels_from_config({}) == 64
    assert head_channels_from_config({"block_out_channels": list(channels)}) == 64
