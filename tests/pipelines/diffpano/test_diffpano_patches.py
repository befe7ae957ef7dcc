"""The host-free halves of DiffPano's ComfyUI patches: block discovery and the seam roll."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pano360.models.diffpano_epipolar import (
    EpipolarAttention,
    EpipolarConfig,
    EpipolarViews,
    epipolar_extended_attention,
    layer_geometry,
)
from pano360.pipelines.diffpano.patches import comfy_attention_blocks, extended_attention_patch, rolled_views
from pano360.projection.geometry import rotation_matrix
from pano360.sampling.hooks import ROLL_OPTION

F64 = torch.float64
CFG = EpipolarConfig(num_samples=4, num_refs=1, head_dim=8, norm_groups=4)


def views() -> EpipolarViews:
    rot = torch.stack([rotation_matrix(torch.tensor(a, dtype=F64), 0.0, 0.0) for a in (0.2, -0.5)])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.6, 0.1, 0.4]], dtype=F64)
    return EpipolarViews(rot, pos, torch.tensor([[1], [0]]))


def test_rolled_views_make_the_module_equivariant_to_a_seam_roll():
    # The model sees the latent rolled right by s columns; with the cameras turned to match,
    # the module's output is the rolled output of the unrolled call.
    torch.manual_seed(0)
    h, w, s = 8, 16, 3
    ea = EpipolarAttention(16, CFG).double()
    with torch.no_grad():
        for p in ea.parameters():
            p.copy_(torch.randn(p.shape, dtype=F64) * 0.3)
    x = torch.randn(2, 16, h, w, dtype=F64)
    plain = ea(x, layer_geometry(views(), (h, w), CFG, dtype=F64))
    rolled = ea(torch.roll(x, s, dims=-1), layer_geometry(rolled_views(views(), s, w), (h, w), CFG, dtype=F64))
    assert torch.allclose(rolled, torch.roll(plain, s, dims=-1), atol=1e-9)
    # ... and without turning the cameras it is not (the patch must read the roll)
    wrong = ea(torch.roll(x, s, dims=-1), layer_geometry(views(), (h, w), CFG, dtype=F64))
    assert (wrong - torch.roll(plain, s, dims=-1)).abs().max() > 1e-3


def test_attn1_patch_reads_the_roll_from_the_transformer_options():
    torch.manual_seed(1)
    h, w, s, heads = 8, 16, 5, 2
    q, k, v = (torch.randn(2, h * w, 16) for _ in range(3))
    patch = extended_attention_patch(views(), CFG, ref_logit_bias=0.2)
    opts = {"n_heads": heads, "activations_shape": [2, 16, h, w]}
    plain = patch(q, k, v, opts)
    roll = lambda t: torch.roll(t.view(2, h, w, -1), s, dims=2).reshape(2, h * w, -1)  # noqa: E731
    rolled = patch(roll(q), roll(k), roll(v), {**opts, ROLL_OPTION: (s, w)})
    assert torch.allclose(rolled, roll(plain), atol=1e-5)
    direct = epipolar_extended_attention(q, k, v, heads, layer_geometry(views(), (h, w), CFG), 0.2)
    assert torch.allclose(plain, direct)


class _ST(nn.Module):  # the parts by which a ComfyUI SpatialTransformer is recognised
    def __init__(self):
        super().__init__()
        self.proj_in, self.proj_out, self.transformer_blocks = nn.Identity(), nn.Identity(), nn.ModuleList()


class _FakeUNet(nn.Module):
    """SD1.5's block structure: 4 levels, 2 res blocks, attention on the upper three levels."""

    def __init__(self):
        super().__init__()
        self.channel_mult, self.num_res_blocks = [1, 2, 4, 4], [2, 2, 2, 2]
        self.middle_block = nn.Sequential(nn.Identity(), _ST(), nn.Identity())
        blocks = []
        for level in reversed(range(4)):
            for j in range(3):
                blocks.append(nn.Sequential(nn.Identity(), _ST()) if level < 3 else nn.Sequential(nn.Identity()))
        self.output_blocks = nn.ModuleList(blocks)


def test_comfy_attention_blocks_map_output_blocks_to_diffusers_locations():
    blocks = comfy_attention_blocks(_FakeUNet())
    assert list(blocks)[:2] == ["mid_block.attentions.0", "up_blocks.1.attentions.0"]
    assert blocks["mid_block.attentions.0"].block == ("middle", 0) and blocks["mid_block.attentions.0"].factor == 8
    assert blocks["up_blocks.1.attentions.0"].block == ("output", 3) and blocks["up_blocks.1.attentions.0"].factor == 4
    assert blocks["up_blocks.3.attentions.2"].block == ("output", 11) and blocks["up_blocks.3.attentions.2"].factor == 1
    assert len(blocks) == 10
    with pytest.raises(ValueError, match="not an SD-style UNet"):
        comfy_attention_blocks(nn.Linear(2, 2))
