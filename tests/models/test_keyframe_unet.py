"""Reading and merging svd_keyframe_interpolation's temporal-attention delta.

The merge rule itself is held to ``keyframe_interpolation.py``'s in
tests/pipelines/lookbeyond/test_inbetween_official.py (checksum of the merged UNet); here: which
tensors are read from which file layouts, and the refusals.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pano360.models.keyframe_unet import (
    DELTA_LEAVES,
    read_delta_tensors,
    temporal_attention_delta,
    temporal_attn1_layers,
)
from pano360.models.svd_unet import convert_diffusers_svd_unet_keys

TESTS = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from _seeded_weights import seeded_state_dict  # noqa: E402


@pytest.fixture(scope="module")
def tiny_diffusers_unet():
    with safe_open(str(TESTS / "data" / "lookbeyond_inbetween_golden.safetensors"), "pt") as f:
        shapes = json.loads(f.metadata()["unet_shapes"])
    return {k: v.float() for k, v in seeded_state_dict(shapes, 9).items()}


def test_layers_are_the_first_temporal_block_of_every_transformer_in_unet_order(tiny_diffusers_unet):
    sgm = convert_diffusers_svd_unet_keys(tiny_diffusers_unet)
    assert temporal_attn1_layers(sgm) == ["input_blocks.1.1.time_stack.0", "middle_block.1.time_stack.0",
                                          "output_blocks.2.1.time_stack.0", "output_blocks.3.1.time_stack.0"]


def test_reads_only_the_delta_tensors_from_diffusers_and_sgm_checkpoint_files(tiny_diffusers_unet, tmp_path):
    sgm = convert_diffusers_svd_unet_keys(tiny_diffusers_unet)
    expected = {f"{layer}.{leaf}" for layer in temporal_attn1_layers(sgm) for leaf in DELTA_LEAVES}
    diffusers_file = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(tiny_diffusers_unet, str(diffusers_file))
    checkpoint = tmp_path / "svd.safetensors"  # a whole SGM checkpoint: prefixed UNet + other models
    save_file({**{f"model.diffusion_model.{k}": v for k, v in sgm.items()}, "first_stage_model.x": torch.zeros(1)},
              str(checkpoint))
    for path in (diffusers_file, checkpoint):
        got = read_delta_tensors(str(path))
        assert set(got) == expected
        assert all(torch.equal(got[k], sgm[k]) for k in expected)
    other = tmp_path / "model.pt"
    torch.save(sgm, other)
    assert set(read_delta_tensors(str(other), load_file=lambda p: torch.load(p))) == expected
    with pytest.raises(ValueError, match="no loader"):
        read_delta_tensors(str(other))


def test_merge_adds_only_the_difference_and_refuses_another_architecture(tiny_diffusers_unet):
    base = convert_diffusers_svd_unet_keys(tiny_diffusers_unet)
    key = "middle_block.1.time_stack.0.attn1.to_v.weight"
    finetuned = {k: v + 1.0 for k, v in base.items()}
    reference = {k: v + 0.25 for k, v in base.items()}
    merged = temporal_attention_delta(base, finetuned, reference)
    assert len(merged) == 4 * len(DELTA_LEAVES)
    assert torch.allclose(merged[key], base[key] + 0.75)
    del finetuned[key]
    with pytest.raises(ValueError, match=f"finetuned: missing {key}"):
        temporal_attention_delta(base, finetuned, reference)
    reference[key] = torch.zeros(3, 3)
    finetuned[key] = base[key]
    with pytest.raises(ValueError, match=r"reference: .*to_v.weight has shape \(3, 3\)"):
        temporal_attention_delta(base, finetuned, reference)


def test_a_file_without_temporal_attention_is_refused_by_name(tmp_path):
    path = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="sd15.safetensors: no temporal attention"):
        read_delta_tensors(str(path))
