"""Warped noise: held to the official NoiseWarper chain (golden data made by its own code) and to
the statistics it promises (unit variance per pixel, temporal correlation along the flow)."""

from __future__ import annotations

import pathlib

import pytest
import torch
from safetensors import safe_open

from pano360.pipelines.videofrom3d.correspondence import NO_FLOW, flow_from_correspondence
from pano360.pipelines.videofrom3d.noise_warp import (
    NoiseWarpSettings,
    downscale_noise,
    initial_state,
    mix_new_noise,
    state_noise,
    warp_noise_sequence,
    warp_state,
)

GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "data" / "vf3d_noise_golden.safetensors"
# Float32 re-implementation of the same operations in another order: agreement to rounding.
NOISE_TOL = 1e-4


def _golden() -> dict[str, torch.Tensor]:
    with safe_open(str(GOLDEN), "pt") as f:
        meta = f.metadata()
        return {k: f.get_tensor(k) for k in f.keys()} | {"_meta": meta}


def test_flow_from_colour_codes_equals_official_flow():
    g = _golden()
    for k, code in enumerate(g["colour_codes"]):
        flow = flow_from_correspondence(code)
        assert torch.equal(flow[0], g["dx"][k]) and torch.equal(flow[1], g["dy"][k])
    assert (g["dx"] == NO_FLOW).any()  # the case exercises unmapped reference pixels


def test_warped_noise_matches_official_noisewarper():
    g = _golden()
    meta = g["_meta"]
    settings = NoiseWarpSettings(channels=g["noise_latent"].shape[1], flow_scale=int(meta["flow_scale"]),
                                 downscale=int(meta["downscale"]))
    flows = [torch.stack([dx, dy]) for dx, dy in zip(g["dx"], g["dy"])]
    gen = torch.Generator().manual_seed(int(meta["seed"]))
    latent = warp_noise_sequence(flows, settings, generator=gen)
    assert latent.shape == g["noise_latent"].shape
    torch.testing.assert_close(latent, g["noise_latent"], atol=NOISE_TOL, rtol=0)


def test_full_resolution_state_matches_official_after_all_warps():
    g = _golden()
    meta = g["_meta"]
    s = int(meta["flow_scale"])
    flows = [torch.stack([dx, dy]) for dx, dy in zip(g["dx"], g["dy"])]
    h, w = flows[0].shape[1:]
    gen = torch.Generator().manual_seed(int(meta["seed"]))
    from pano360.pipelines.videofrom3d.noise_warp import resize_flow

    state = initial_state(g["noise_full_last"].shape[0], h * s, w * s, generator=gen)
    for flow in flows:
        state = warp_state(state, resize_flow(flow, (h * s, w * s)), gen)
    torch.testing.assert_close(state_noise(state), g["noise_full_last"], atol=NOISE_TOL, rtol=0)


def _shift_flow(h, w, dx, dy):
    return torch.stack([torch.full((h, w), float(dx)), torch.full((h, w), float(dy))])


def test_noise_stays_unit_variance_per_pixel_over_many_warps():
    # Many independent runs of a zoom-like flow: every pixel's noise stays N(0, 1).
    h, w, runs = 24, 32, 400
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    zoom = torch.stack([(xs - w / 2) * 0.15, (ys - h / 2) * 0.15])  # expansion: pixels are copied
    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(runs):
        state = initial_state(1, h, w, generator=gen)
        for _ in range(3):
            state = warp_state(state, zoom, gen)
        samples.append(state_noise(state)[0])
    x = torch.stack(samples)  # (runs, h, w)
    var = x.var(dim=0)
    # 400 samples: the sample variance of N(0,1) has std sqrt(2/399) ~ 0.07; 5 sigma.
    assert (var - 1).abs().max() < 0.36
    assert abs(float(var.mean()) - 1) < 0.02
    assert abs(float(x.mean())) < 0.02


def test_integer_shift_moves_the_noise_with_the_flow():
    # A pure shift by (3, 2) pixels: the noise moves along (unit correlation on covered pixels).
    h, w = 20, 30
    gen = torch.Generator().manual_seed(3)
    state = initial_state(4, h, w, generator=gen)
    before = state_noise(state)
    after = state_noise(warp_state(state, _shift_flow(h, w, 3, 2), gen))
    # (pixels that leave the frame stay where they were with zero noise and merge, lightly
    # weighted, into what arrives there: the last 3 columns / 2 rows differ slightly, as in the
    # official warper)
    torch.testing.assert_close(after[:, 2 : h - 2, 3 : w - 3], before[:, : h - 4, : w - 6], atol=1e-5, rtol=0)
    # the uncovered strip is fresh noise, uncorrelated with what was there
    assert abs(float((after[:, :2, :] * before[:, :2, :]).mean())) < 0.2


def test_downscale_keeps_unit_variance_of_white_noise():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(16, 256, 384, generator=gen)
    y = downscale_noise(x, 32)
    assert y.shape == (16, 8, 12)
    # 1536 values: sample variance within ~5 std of sqrt(2/1535).
    assert abs(float(y.var()) - 1) < 0.2


def test_mix_new_noise_is_variance_preserving_and_checks_alpha():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(200_000, generator=gen)
    y = mix_new_noise(x, 0.5, generator=gen)
    assert abs(float(y.var()) - 1) < 0.02
    # alpha 0.5: correlation with the input is 0.5 / sqrt(0.5) = 0.707
    corr = float((x * y).mean())
    assert abs(corr - 0.5 ** 0.5) < 0.01
    with pytest.raises(ValueError, match="degradation"):
        mix_new_noise(x, 1.5)
