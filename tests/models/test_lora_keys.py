"""LoRA key prefixing for ComfyUI's loaders (host-free half; the host test maps the result
with ComfyUI's own key tables)."""

from __future__ import annotations

import pytest
import torch

from pano360.cli import main
from pano360.models.lora_keys import prefix_lora_keys, read_lora


class Unsafe:
    """An arbitrary object: a weights-only load must refuse to unpickle it."""


def diffsynth_wan_lora(rank: int = 2) -> dict:
    """Keys as DiffSynth/PEFT save a Wan LoRA (what PanoWan's loader reads)."""
    sd = {}
    for block in range(2):
        for mod in ("self_attn.q", "self_attn.k", "ffn.0"):
            sd[f"blocks.{block}.{mod}.lora_A.default.weight"] = torch.randn(rank, 8)
            sd[f"blocks.{block}.{mod}.lora_B.default.weight"] = torch.randn(8, rank)
    return sd


def test_bare_keys_get_the_generic_prefix_and_known_ones_stay():
    sd = diffsynth_wan_lora()
    sd["diffusion_model.head.head.lora_A.weight"] = torch.zeros(2, 8)
    sd["lora_unet_blocks_0_cross_attn_q.lora_down.weight"] = torch.zeros(2, 8)
    out, renamed = prefix_lora_keys(sd)
    assert renamed == 12
    assert "diffusion_model.blocks.0.self_attn.q.lora_A.default.weight" in out
    assert "diffusion_model.head.head.lora_A.weight" in out and "lora_unet_blocks_0_cross_attn_q.lora_down.weight" in out
    assert torch.equal(out["diffusion_model.blocks.1.ffn.0.lora_B.default.weight"], sd["blocks.1.ffn.0.lora_B.default.weight"])
    again, renamed_again = prefix_lora_keys(out)
    assert renamed_again == 0 and again.keys() == out.keys()


def test_collisions_and_non_loras_are_refused():
    sd = {"blocks.0.q.lora_A.weight": torch.zeros(1), "diffusion_model.blocks.0.q.lora_A.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="already in the file"):
        prefix_lora_keys(sd)
    with pytest.raises(ValueError, match="no LoRA tensors"):
        prefix_lora_keys({"blocks.0.q.weight": torch.zeros(1)})


def test_cli_converts_a_ckpt_to_safetensors_once(tmp_path):
    src = tmp_path / "latest-lora.ckpt"
    torch.save(diffsynth_wan_lora(), src)
    dst = tmp_path / "PanoWan.safetensors"
    assert main(["lora-keys", str(src), str(dst)]) == 0
    out = read_lora(str(dst))
    assert all(k.startswith("diffusion_model.") for k in out)
    assert main(["lora-keys", str(src), str(dst)]) == 2  # never over an existing file
    torch.save({"x": Unsafe()}, tmp_path / "evil.ckpt")  # a pickle that is not weights-only
    assert main(["lora-keys", str(tmp_path / "evil.ckpt"), str(tmp_path / "evil.safetensors")]) == 2
