"""DiffPano inside a real ComfyUI: epipolar modules in ComfyUI's own UNetModel class, checked
against the untouched model (bit-exact at zero init) and against the same weights in a
diffusers UNet with the training hooks; the sampler nodes on a random-weight SD1.5."""

from __future__ import annotations

import math

import pytest
import torch

# A tiny UNet in both implementations: diffusers' UNet2DConditionModel and ComfyUI's
# UNetModel with the same structure (ComfyUI's GroupNorm has 32 groups, so 32/64 channels).
TINY_DIFFUSERS = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=16, attention_head_dim=8, norm_num_groups=32,
)
TINY_COMFY = dict(
    in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1], channel_mult=[1, 2],
    transformer_depth=[1, 0], transformer_depth_output=[1, 1, 0, 0], transformer_depth_middle=1,
    context_dim=16, num_heads=8, use_linear_in_transformer=False, use_spatial_transformer=True,
    image_size=16, legacy=False,
)
# diffusers and ComfyUI compute the same network in a different operation order.
IMPL_TOL = 1e-5


@pytest.fixture(scope="module")
def tiny_pair(comfy_in_process):
    diffusers = pytest.importorskip("diffusers")
    import comfy.ops
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(0)
    ref = diffusers.UNet2DConditionModel(**TINY_DIFFUSERS).eval()
    unet = UNetModel(**TINY_COMFY, operations=comfy.ops.disable_weight_init, device="cpu", dtype=torch.float32).eval()
    sd = ref.state_dict()
    mapping = comfy.utils.unet_to_diffusers(TINY_COMFY)  # diffusers key -> ComfyUI key
    unet.load_state_dict({comfy_key: sd[key] for key, comfy_key in mapping.items() if key in sd}, strict=True)
    return ref, unet


def _views():
    from pano360.models.diffpano_epipolar import EpipolarViews
    from pano360.projection import rotation_matrix

    rot = torch.stack([rotation_matrix(torch.tensor(a, dtype=torch.float64), 0.0, 0.0) for a in (0.0, 0.5)])
    return EpipolarViews(rot, torch.tensor([[0.0, 0, 0], [0.4, 0, 0.3]], dtype=torch.float64), torch.tensor([[1], [0]]))


def _call(unet, wrapper, x, t, ctx):
    import comfy.patcher_extension as ext

    options = {"cond_or_uncond": [0]}
    if wrapper is not None:
        options["wrappers"] = {ext.WrappersMP.DIFFUSION_MODEL: {"diffpano": [wrapper]}}
    with torch.no_grad():
        return unet(x, t, context=ctx, transformer_options=options)


def test_epipolar_modules_in_comfyui_unet_zero_exact_and_equal_to_the_diffusers_hooks(tiny_pair):
    from pano360.models.diffpano_epipolar import EpipolarAttentionSet, EpipolarConfig, EpipolarPlan
    from pano360.models.diffpano_unet import epipolar_hooks
    from pano360.pipelines.diffpano.patches import EpipolarUNetWrapper, comfy_attention_blocks

    ref, unet = tiny_pair
    assert list(comfy_attention_blocks(unet)) == ["mid_block.attentions.0", "up_blocks.1.attentions.0",
                                                  "up_blocks.1.attentions.1"]
    g = torch.Generator().manual_seed(1)
    x, t, ctx = torch.randn(2, 4, 8, 16, generator=g), torch.tensor([10.0, 500.0]), torch.randn(2, 5, 16, generator=g)
    base = _call(unet, None, x, t, ctx)
    with torch.no_grad():
        assert (base - ref(x, t, ctx).sample).abs().max() < IMPL_TOL  # the two UNets agree
    cfg = EpipolarConfig(num_samples=4, num_refs=1, head_dim=16)
    modules = EpipolarAttentionSet.for_diffusers_unet(ref, cfg)
    assert torch.equal(_call(unet, EpipolarUNetWrapper(modules, _views()), x, t, ctx), base)
    with torch.no_grad():
        for p in modules.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    patched = _call(unet, EpipolarUNetWrapper(modules, _views()), x, t, ctx)
    with torch.no_grad(), epipolar_hooks(ref, modules, EpipolarPlan(_views(), cfg)):
        want = ref(x, t, ctx).sample
    assert (patched - base).abs().max() > 0.1
    assert (patched - want).abs().max() < IMPL_TOL
    assert torch.equal(_call(unet, None, x, t, ctx), base)  # no hook left behind
