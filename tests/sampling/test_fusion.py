"""Multi-view fusion on the sphere, checked with analytic denoisers (no ComfyUI).

The reference for "the right panorama" is an analytic smooth field on the sphere (functions
of the unit direction), evaluated independently of the warps; the denoisers are posterior
means of Gaussian data around each view's target, so sampling them is exact arithmetic.
"""

from __future__ import annotations

import math

import pytest
import torch

from pano360.sampling.euler import sample_euler
from pano360.sampling.fusion import GIVEN_CANVAS_WEIGHT, LatentLayout, MultiViewFusion, SyncSchedule, canvas_size, fuse_views
from pano360.sampling.held import HeldCells
from pano360.sampling.hooks import denoise_mask_hook, post_cfg_hook
from pano360.sampling.sigmas import step_fraction
from pano360.pipelines.videopanda.view_mask import build_view_mask, noise_mask_for_latent
from pano360.projection import erp_to_rig, perspective_to_erp, rig_preset, stitch_rig, view_rays

LATENT = 16  # latent view size (pixels); small keeps the suite fast
BIAS = 0.5  # per-view bias of the analytic denoisers (latent units)
DATA_STD = 0.02  # std of each view's Gaussian data around its mean
# Stitch disagreement (std across views at canvas pixels seen by >= 2 views) that counts
# as "near zero": bilinear round trips of a smooth field at 16 px, well below BIAS.
AGREE_TOL = 0.05
# Mean error to the target panorama allowed for fused sampling (same reason).
REPRODUCE_TOL = 0.05


def field(d: torch.Tensor) -> torch.Tensor:
    """A smooth 4-channel field of unit directions d (..., 3) -> (..., 4)."""
    x, y, z = d.unbind(-1)
    return torch.stack([x, y, z, 0.5 * x * z + 0.3 * y * y], dim=-1)


def erp_directions(h: int, w: int) -> torch.Tensor:
    """(h, w, 3) unit directions of equirect pixel centres (docs/conventions.md)."""
    lon = ((torch.arange(w) + 0.5) / w - 0.5) * 2 * math.pi
    lat = (0.5 - (torch.arange(h) + 0.5) / h) * math.pi
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    return torch.stack([lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()], dim=-1)


def target_erp(h: int, w: int) -> torch.Tensor:
    return field(erp_directions(h, w)).permute(2, 0, 1)[None]  # (1, 4, h, w)


def gaussian_denoiser(means: torch.Tensor):
    """Posterior mean for data N(means, DATA_STD^2) per item: the exact x0 predictor."""

    def denoise(x, sigma):
        a = DATA_STD**2 / (DATA_STD**2 + sigma**2)
        return means + a * (x - means)

    return denoise


def karras_sigmas(n: int, lo: float = 0.02, hi: float = 10.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, Eq. 5, plus the final 0."""
    ramp = torch.linspace(0, 1, n)
    s = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


def alternating_bias(views: int) -> torch.Tensor:
    return torch.tensor([BIAS if v % 2 == 0 else -BIAS for v in range(views)])


def overlap_disagreement(views: torch.Tensor, rig, erp_hw) -> torch.Tensor:
    """Std across views at canvas pixels fully inside >= 2 views: (V, C, h, w) -> scalar."""
    yaw, pitch, roll, fov = rig.angles()
    erp, weight = perspective_to_erp(views, yaw, pitch, roll, fov, erp_hw)
    inside = weight > 0.999
    multi = inside.sum(0) >= 2  # (1, H, W)
    n = inside.sum(0).clamp_min(1)
    mean = (erp * inside).sum(0) / n
    var = ((erp - mean) ** 2 * inside).sum(0) / n
    return var.mean(0, keepdim=True)[multi].sqrt().mean()


def sample_rig(rig, fuse: bool, seed: int = 0, steps: int = 12):
    views = rig.num_views
    means = erp_to_rig(target_erp(64, 128), rig, out_hw=(LATENT, LATENT))
    means = means + alternating_bias(views).reshape(-1, 1, 1, 1)
    sigmas = karras_sigmas(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(means.shape, generator=g) * sigmas[0]
    layout = LatentLayout.of(means.shape, views)
    fusion = MultiViewFusion(rig, layout) if fuse else None
    return sample_euler(gaussian_denoiser(means), x, sigmas, fuse=fusion)


# ---------------------------------------------------------------------------------------


def test_fused_sampling_reproduces_panorama_where_independent_views_disagree():
    # 8 horizontal 90-degree views 45 degrees apart: every point of the band |lat| < 40
    # lies inside exactly two views (|lon - yaw| < 45), whose biases are +BIAS and -BIAS.
    rig = rig_preset("horizontal_n", n=8, fov=90.0, size=LATENT)
    hw = canvas_size(rig, (LATENT, LATENT))
    target = target_erp(*hw)
    lat = (0.5 - (torch.arange(hw[0]) + 0.5) / hw[0]) * 180
    band = (lat.abs() < 35)[:, None].expand(hw)

    fused = sample_rig(rig, fuse=True)
    indep = sample_rig(rig, fuse=False)

    fused_pano, _ = stitch_rig(fused, rig, hw)
    target_views = erp_to_rig(target, rig, out_hw=(LATENT, LATENT))
    indep_views_err = (indep - target_views).abs().mean()
    fused_err = (fused_pano - target).abs().mean(1)[0][band].mean()
    assert fused_err < REPRODUCE_TOL, fused_err
    # every fused view shows the target (within the band), not only their average
    rows = slice(LATENT // 8, LATENT - LATENT // 8)  # view rows inside |lat| < 35
    assert (fused - target_views)[..., rows, :].abs().mean() < REPRODUCE_TOL
    assert indep_views_err > 0.8 * BIAS  # each independent view keeps its own bias

    d_fused = overlap_disagreement(fused, rig, hw)
    d_indep = overlap_disagreement(indep, rig, hw)
    assert d_fused < AGREE_TOL, d_fused
    assert d_indep > 0.8 * BIAS, d_indep  # views at +BIAS and -BIAS: std BIAS


def test_videopanda8_fused_views_agree_at_overlaps():
    rig = rig_preset("videopanda8", size=LATENT)
    hw = canvas_size(rig, (LATENT, LATENT))
    fused = sample_rig(rig, fuse=True, steps=8)
    indep = sample_rig(rig, fuse=False, steps=8)
    assert overlap_disagreement(fused, rig, hw) < AGREE_TOL
    assert overlap_disagreement(indep, rig, hw) > 0.5 * BIAS


def test_sync_strength_zero_is_independent_sampling():
    rig = rig_preset("horizontal_n", n=4, fov=100.0, size=8)
    x0 = torch.randn(4 * 2, 3, 8, 8)
    layout = LatentLayout.of(x0.shape, 4)
    fusion = MultiViewFusion(rig, layout, schedule=SyncSchedule(strength=1.0, start=0.2, end=0.6))
    assert fusion(x0, 0.1) is x0 and fusion(x0, 0.7) is x0
    assert not torch.equal(fusion(x0, 0.4), x0)
    half = MultiViewFusion(rig, layout, schedule=SyncSchedule(strength=0.5))(x0, 0.0)
    full = MultiViewFusion(rig, layout)(x0, 0.0)
    torch.testing.assert_close(half, 0.5 * (x0 + full), atol=1e-5, rtol=0)


def test_fusion_of_a_consistent_grid_changes_nothing_but_interpolation():
    # Views cut from one smooth panorama already agree: fusing them must return them.
    rig = rig_preset("videopanda8", size=LATENT)
    hw = canvas_size(rig, (LATENT, LATENT))
    views = erp_to_rig(target_erp(*hw), rig, out_hw=(LATENT, LATENT))
    fused, support = fuse_views(views, rig, hw)
    assert support.min() > 0.99  # videopanda8 covers the whole sphere
    assert (fused - views).abs().mean() < 0.01


def test_five_d_video_latents_fuse_per_frame_like_view_major_batches():
    rig = rig_preset("horizontal_n", n=4, fov=100.0, size=8)
    grid = torch.randn(4 * 3, 2, 8, 8)  # V=4, T=3 view-major
    video = grid.reshape(4, 3, 2, 8, 8).permute(0, 2, 1, 3, 4).contiguous()  # (V, C, T, h, w)
    out4 = MultiViewFusion(rig, LatentLayout.of(grid.shape, 4))(grid, 0.0)
    out5 = MultiViewFusion(rig, LatentLayout.of(video.shape, 4))(video, 0.0)
    torch.testing.assert_close(out5.permute(0, 2, 1, 3, 4).reshape(12, 2, 8, 8), out4)


def test_given_cells_end_equal_to_their_inputs_and_pull_their_neighbours():
    rig = rig_preset("horizontal_n", n=8, fov=90.0, size=LATENT)
    views, frames = 8, 2
    hw = canvas_size(rig, (LATENT, LATENT))
    pano = target_erp(*hw).expand(frames, -1, -1, -1)
    truth = erp_to_rig(pano, rig, out_hw=(LATENT, LATENT))
    mask = build_view_mask("first_column", views, frames, column_view=0)
    keep = 1.0 - noise_mask_for_latent(mask, truth.shape)
    given = truth * keep  # only view 0 is known
    means = truth + alternating_bias(views).repeat_interleave(frames).reshape(-1, 1, 1, 1)
    means = torch.where(keep.bool().expand_as(means), truth + 1.0, means)  # model disagrees at the given view
    sigmas = karras_sigmas(10)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(truth.shape, generator=g)
    layout = LatentLayout.of(truth.shape, views)

    hold = HeldCells(given, keep, noise)
    x = noise * sigmas[0] + given

    def run(fusion):
        return sample_euler(gaussian_denoiser(means), x, sigmas, fuse=fusion, hold=hold)

    out = run(MultiViewFusion(rig, layout, given=given, given_mask=mask))
    v0 = slice(0, frames)
    torch.testing.assert_close(out[v0], truth[v0], atol=1e-5, rtol=0)
    # View 1 (yaw 45) overlaps view 0 on its left half: there it must show the given
    # content.  A fusion that trusted the model's own prediction at the held cells (what a
    # post-CFG hook sees) would average truth+1 (view 0's guess) with truth-BIAS (view 1).
    left = (slice(frames, 2 * frames), slice(None), slice(None), slice(0, LATENT // 2 - 2))
    err = (out[left] - truth[left]).abs().mean()
    assert err < 5 * BIAS / GIVEN_CANVAS_WEIGHT + 0.02, err
    naive = run(MultiViewFusion(rig, layout))
    assert (naive[left] - truth[left]).abs().mean() > 0.15
    torch.testing.assert_close(naive[v0], truth[v0], atol=1e-5, rtol=0)  # held all the same


def test_noise_augmentation_lets_given_cells_move_a_bounded_amount():
    # The given value is 0; the model believes 1.  Held to the end (until=1) it stays 0;
    # released at the last 30% of steps it is refined from 0 + sigma * noise.
    shape = (2, 1, 4, 4)
    given = torch.zeros(shape)
    keep = torch.ones(shape)
    sigmas = karras_sigmas(10)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    den = gaussian_denoiser(torch.ones(shape))
    held = sample_euler(den, noise * sigmas[0], sigmas, hold=HeldCells(given, keep, noise, until=1.0))
    assert held.abs().max() < 1e-6
    aug = sample_euler(den, noise * sigmas[0], sigmas, hold=HeldCells(given, keep, noise, until=0.7))
    release = sigmas[7]  # the first step at fraction >= 0.7
    assert aug.abs().max() > 0.5  # refined towards the model's belief ...
    # ... from a start that was the given value plus noise at the release sigma
    assert release < 0.5 and aug.abs().max() <= 1.0 + 3 * DATA_STD + release * noise.abs().max()


# ---------------------------------------------------------------------------------------
# Latent-resolution warps agree with pixel-resolution warps on smooth fields
# ---------------------------------------------------------------------------------------

PIXEL = 64
FACTOR = PIXEL // LATENT
# A smooth field varies by O(1) over the sphere; at 16 px a bilinear warp errs ~1e-3.
WARP_TOL = 5e-3


def test_latent_resolution_warp_matches_pixel_warp_then_downsample():
    rig = rig_preset("videopanda8")
    pano = target_erp(256, 512)
    pixel = erp_to_rig(pano, rig, out_hw=(PIXEL, PIXEL))
    down = torch.nn.functional.avg_pool2d(pixel, FACTOR)
    latent = erp_to_rig(pano, rig, out_hw=(LATENT, LATENT))
    # and both against the field evaluated analytically on the latent pixels' rays
    exact = field(view_rays(rig, (LATENT, LATENT), relative_to_first=False)).permute(0, 3, 1, 2)
    assert (latent - exact).abs().mean() < WARP_TOL
    assert (down - latent).abs().mean() < WARP_TOL


def test_latent_resolution_stitch_matches_pixel_stitch_then_downsample():
    rig = rig_preset("videopanda8")
    exact_px = field(view_rays(rig, (PIXEL, PIXEL), relative_to_first=False)).permute(0, 3, 1, 2)
    exact_lat = field(view_rays(rig, (LATENT, LATENT), relative_to_first=False)).permute(0, 3, 1, 2)
    hw = canvas_size(rig, (LATENT, LATENT))
    pix, _ = stitch_rig(exact_px, rig, (hw[0] * FACTOR, hw[1] * FACTOR))
    lat, _ = stitch_rig(exact_lat, rig, hw)
    down = torch.nn.functional.avg_pool2d(pix, FACTOR)
    inner = slice(2, hw[0] - 2)  # avg_pool of the top/bottom rows mixes pole pixels unevenly
    assert (down - lat)[..., inner, :].abs().mean() < 2 * WARP_TOL
    assert (lat - target_erp(*hw)).abs().mean() < 2 * WARP_TOL


# ---------------------------------------------------------------------------------------
# Bookkeeping and hooks
# ---------------------------------------------------------------------------------------


def test_layout_round_trips_and_rejects_bad_batches():
    x = torch.randn(3, 2, 5, 4, 4)
    layout = LatentLayout.of(x.shape, 3)
    assert (layout.views, layout.frames, layout.video) == (3, 5, True)
    torch.testing.assert_close(layout.from_grid(layout.to_grid(x)), x)
    assert torch.equal(layout.to_cells(x)[1, 4], x[1, :, 4])
    flat = torch.randn(8 * 2, 4, 3, 3)
    assert torch.equal(LatentLayout.of(flat.shape, 8).to_cells(flat)[3, 1], flat[3 * 2 + 1])
    with pytest.raises(ValueError, match="not a multiple of the rig's 8 views"):
        LatentLayout.of((12, 4, 8, 8), 8)
    with pytest.raises(ValueError, match="must equal the rig's 8 views"):
        LatentLayout.of((1, 16, 4, 8, 8), 8)


def test_canvas_matches_the_finest_view_centre_pixel():
    rig = rig_preset("videopanda8")
    h, w = canvas_size(rig, (64, 64))
    # 90-degree view, 64 px: centre pixel 2/64 rad; 2*pi/W must not be coarser
    assert w == 2 * h and 2 * math.pi / w <= 2 / 64 and w % 8 == 0 and w < 2 * math.pi / (2 / 64) + 8


def test_step_fraction_follows_the_schedule():
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    assert step_fraction(10.0, sigmas) == 0.0
    assert step_fraction(5.0, sigmas) == pytest.approx(1 / 3)
    assert step_fraction(3.0, sigmas) == pytest.approx(1.5 / 3)
    assert step_fraction(0.0, sigmas) == 1.0
    assert step_fraction(99.0, sigmas) == 0.0


def test_comfy_hooks_read_the_documented_keys():
    rig = rig_preset("horizontal_n", n=4, fov=100.0, size=8)
    x0 = torch.randn(4, 3, 8, 8)
    fusion = MultiViewFusion(rig, LatentLayout.of(x0.shape, 4), schedule=SyncSchedule(start=0.5, end=0.7))
    hook = post_cfg_hook(fusion)
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    args = {"denoised": x0, "sigma": torch.full((4,), 10.0),
            "model_options": {"transformer_options": {"sample_sigmas": sigmas}}}
    assert hook(args) is x0  # step 0: fraction 0 < start
    args["sigma"] = torch.full((4,), 5.0)
    assert hook(args) is x0  # step 1: fraction 1/3 < start
    args["sigma"] = torch.full((4,), 1.0)
    synced = hook(args)  # step 2: fraction 2/3 in [start, end]
    assert not torch.equal(synced, x0)
    torch.testing.assert_close(synced, fusion(x0, 2 / 3))
    args["sigma"] = torch.full((4,), 0.5)
    assert hook(args) is x0  # between sigma 1 and 0 (second-order midpoint): fraction 2.5/3 > end
    with pytest.raises(RuntimeError, match="sample_sigmas"):
        hook({"denoised": x0, "sigma": torch.ones(4), "model_options": {}})

    mask_fn = denoise_mask_hook(0.5)
    m = torch.zeros(4, 1, 8, 8)
    assert mask_fn(torch.full((4,), 5.0), m, {"sigmas": sigmas}) is m
    assert torch.equal(mask_fn(torch.full((4,), 1.0), m, {"sigmas": sigmas}), torch.ones_like(m))


def test_fusion_rejects_mismatched_rig_and_given():
    rig = rig_preset("videopanda8", size=8)
    with pytest.raises(ValueError, match="rig has 8 views"):
        MultiViewFusion(rig, LatentLayout.of((6, 4, 8, 8), 6))
    layout = LatentLayout.of((16, 4, 8, 8), 8)
    with pytest.raises(ValueError, match="given_mask"):
        MultiViewFusion(rig, layout, given=torch.zeros(16, 4, 8, 8), given_mask=torch.zeros(8, 3))


def test_one_view_given_latents_are_placed_at_the_masked_view():
    from pano360.sampling.fusion import pole_views
    from pano360.sampling.held import given_grid

    mask = build_view_mask("first_column", 3, 2, column_view=1)
    four = LatentLayout.of((6, 4, 5, 5), 3)
    video = torch.randn(2, 4, 5, 5)
    grid, filled = given_grid(video, four, mask)
    assert torch.equal(grid[2:4], video) and grid[:2].abs().sum() == 0 and grid[4:].abs().sum() == 0
    assert torch.equal(filled, mask)
    five = LatentLayout.of((3, 4, 2, 5, 5), 3)
    g5, _ = given_grid(video.permute(1, 0, 2, 3)[None], five, mask)
    assert torch.equal(five.to_cells(g5)[1], video) and five.to_cells(g5)[0].abs().sum() == 0
    full = torch.randn(6, 4, 5, 5)
    assert given_grid(full, four, mask)[0] is full
    # row + column: one view fills the column only; the row's cells come from elsewhere
    both = build_view_mask("first_row_and_column", 3, 2, column_view=1)
    grid, filled = given_grid(video, four, both)
    assert torch.equal(filled, mask) and grid[0].abs().sum() == 0
    with pytest.raises(ValueError, match="whole grid .* or one view"):
        given_grid(torch.randn(3, 4, 5, 5), four, mask)
    with pytest.raises(ValueError, match="a view given at every frame"):
        given_grid(video, four, build_view_mask("first_row", 3, 2))
    rig = rig_preset("videopanda8")
    assert pole_views(rig, up=True) == [6] and pole_views(rig, up=False) == [7]
