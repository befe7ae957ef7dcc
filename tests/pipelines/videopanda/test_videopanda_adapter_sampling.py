"""Running a VideoPanda adapter: conditioning channels, the ComfyUI model hook, host-free sampling.

References: the view-mask regimes of VideoPanda Fig. 3, diffusers' ``FlowMatchEulerDiscreteScheduler``
(an independent flow Euler sampler) and the plain diffusers transformer.
"""

from __future__ import annotations

import pytest
import torch
from _tiny_models import NARROW_WAN, diffusers_wan

from pano360.sampling.flow import flow_sigmas
from pano360.models.videopanda_adapter import VideoPandaAdapter
from pano360.models.videopanda_wan import CONTEXT_KEY, DiffusersAttachment, ViewsContext, diffusers_to_official_key
from pano360.pipelines.videopanda.adapter import adapter_call, cell_sigmas, conditioning, rig_rays, unet_wrapper
from pano360.pipelines.videopanda.adapter_sampler import sample_grid_with_adapter
from pano360.pipelines.videopanda.view_mask import build_view_mask
from pano360.projection import rig_preset, view_rays

RIG = rig_preset("videopanda8", size=32)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls on a shared 2-core machine run much faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_only_given_cells_outside_the_input_video_get_the_noise_augmentation_sigma():
    mask = build_view_mask("first_row_and_column", 8, 4, column_view=2)
    s = cell_sigmas(mask, 0.05)
    assert torch.all(s[2] == 0)  # the input video: clean (VideoPanda §4.5)
    assert torch.all(s[[0, 1, 3, 4, 5, 6, 7], 0] == 0.05)  # the carried row
    assert torch.all(s[:, 1:][torch.arange(8) != 2] == 0)  # generated cells
    with pytest.raises(ValueError):
        cell_sigmas(mask, 1.0)


def test_conditioning_channels_are_rays_then_mask_then_sigma():
    mask = build_view_mask("first_column", 8, 3, column_view=1)
    rays = rig_rays(RIG, (4, 4), "directions")
    cond = conditioning(rays, mask, cell_sigmas(mask, 0.1))
    assert cond.shape == (8, 5, 3, 4, 4)
    torch.testing.assert_close(cond[:, :3, 2], view_rays(RIG, (4, 4)).permute(0, 3, 1, 2))
    assert torch.all(cond[1, 3] == 1) and torch.all(cond[0, 3] == 0)
    assert torch.all(cond[:, 4] == 0)
    # rays relative to view 0: view 0 looks down +z of its own frame at its centre
    plucker = rig_rays(RIG, (4, 4), "plucker")
    assert plucker.shape == (8, 6, 4, 4) and torch.all(plucker[:, :3] == 0)


def _recording_apply():
    seen = {}

    def apply_model(x, t, **c):
        seen.update(x=x, t=t, **c)
        return torch.zeros_like(x)

    return apply_model, seen


def test_model_hook_conditions_the_conditional_chunks_and_leaves_the_unconditional_one_bare():
    v, t = 8, 3
    mask = build_view_mask("first_column", v, t, column_view=0)
    given = torch.randn(v, 16, t, 4, 4)
    call = adapter_call(RIG, mask, (v, 16, t, 4, 4), "directions", given=given, noise_aug_sigma=0.0)
    x = torch.randn(2 * v, 16, t, 4, 4)
    apply_model, seen = _recording_apply()
    unet_wrapper(call)(apply_model, {"input": x, "timestep": torch.full((2 * v,), 500.0),
                                     "c": {"c_crossattn": torch.zeros(1), "transformer_options": {"a": 1}},
                                     "cond_or_uncond": [1, 0]})
    cat = seen["c_concat"]
    assert torch.equal(cat[:v], call.null_cond) and torch.equal(cat[v:], call.cond)
    assert torch.equal(seen["x"][:v], x[:v])  # unconditional: the sampler's own values everywhere
    assert torch.equal(seen["x"][v], given[0])  # conditional: the input video, clean
    assert torch.equal(seen["x"][v + 1 :], x[v + 1 :])
    assert seen["transformer_options"] == {"a": 1, CONTEXT_KEY: ViewsContext(v, t)}


def test_model_hook_refuses_partial_grids_and_image_to_video_models():
    call = adapter_call(RIG, torch.zeros(8, 2), (8, 16, 2, 4, 4), "directions")
    apply_model, _ = _recording_apply()
    hook = unet_wrapper(call)
    with pytest.raises(ValueError, match="grids of 8 views"):
        hook(apply_model, {"input": torch.zeros(4, 16, 2, 4, 4), "timestep": torch.zeros(4), "c": {},
                           "cond_or_uncond": [0]})
    with pytest.raises(ValueError, match="text-to-video"):
        hook(apply_model, {"input": torch.zeros(8, 16, 2, 4, 4), "timestep": torch.zeros(8),
                           "c": {"c_concat": torch.zeros(8, 20, 2, 4, 4)}, "cond_or_uncond": [0]})
    with pytest.raises(ValueError, match="no given latents"):
        adapter_call(RIG, torch.ones(8, 2), (8, 16, 2, 4, 4), "directions")


def _model_and_adapter(views: int, frames: int):
    model, cfg = diffusers_wan(NARROW_WAN, std=0.05)
    adapter = VideoPandaAdapter(cfg).init_from_base({diffusers_to_official_key(k): v for k, v in model.state_dict().items()})
    return model, adapter


def test_zero_initialised_adapter_samples_like_the_plain_model_with_diffusers_flow_euler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    v, t = 3, 2
    model, adapter = _model_and_adapter(v, t)
    rig = rig_preset("horizontal_n", n=3, size=32)
    call = adapter_call(rig, torch.zeros(v, t), (v, 16, t, 4, 4), "directions")
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(v, 16, t, 4, 4, generator=g)
    text = torch.randn(1, 5, 24, generator=g)
    sigmas = flow_sigmas(6, 3.0)
    with torch.no_grad():
        sched = FlowMatchEulerDiscreteScheduler()
        sched.set_timesteps(sigmas=sigmas[:-1].tolist())
        x = noise.clone()
        for ts in sched.timesteps:
            vel = model(x, ts.expand(v), text.expand(v, -1, -1)).sample
            x = sched.step(vel, ts, x).prev_sample
        attached = DiffusersAttachment(model, adapter)

        def velocity(xc, ts, txt):
            with attached.views(v, t):
                return model(xc, ts, txt).sample

        ours = sample_grid_with_adapter(velocity, call, noise, sigmas, text=text)
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-5)


def test_given_cells_come_out_exactly_as_given():
    v, t = 8, 2
    model, adapter = _model_and_adapter(v, t)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    mask = build_view_mask("first_row_and_column", v, t, column_view=3)
    given = torch.randn(v, 16, t, 4, 4, generator=g)
    call = adapter_call(RIG, mask, tuple(given.shape), "directions", given=given, noise_aug_sigma=0.05, seed=2)
    attached = DiffusersAttachment(model, adapter)

    def velocity(xc, ts, txt):
        with attached.views(v, t):
            return model(xc, ts, txt).sample

    with torch.no_grad():
        out = sample_grid_with_adapter(velocity, call, torch.randn(given.shape, generator=g), flow_sigmas(4, 8.0),
                                       text=torch.randn(1, 5, 24, generator=g), null_text=torch.zeros(1, 5, 24), cfg=4.0)
    keep = mask.bool()
    assert torch.equal(out.permute(0, 2, 1, 3, 4)[keep], given.permute(0, 2, 1, 3, 4)[keep])
    assert not torch.allclose(out.permute(0, 2, 1, 3, 4)[~keep], given.permute(0, 2, 1, 3, 4)[~keep], atol=0.1)
