"""Spherical RoPE: the width axis wraps, other axes stay the model's (host-free).

The reference is a plain RoPE written here from its definition (Su et al. 2021: channel
pair k rotated by ``theta ** (-2k/d) * position``) with attention scores ``(R_q q) . (R_k k)``;
the host tests (tests/host/test_spherical_rope_host.py) run ComfyUI's own Flux and Wan.
"""

from __future__ import annotations

import math

import pytest
import torch

from pano360.models.spherical_rope import (
    CURRENT_GRID,
    FAMILIES,
    SphericalRoPE,
    TokenGrid,
    family_of,
    grid_for_latent,
    token_grid,
    wrapped_harmonics,
)

THETA = 10000.0
AXES = [4, 8, 16]  # (index/time, height, width) channels per axis
F32_SCORE_TOL = 1e-5  # float32 rotations of unit-scale vectors


def reference_rope(pos: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """Plain RoPE rotation matrices (..., dim/2, 2, 2) = [[cos, -sin], [sin, cos]]."""
    k = torch.arange(dim // 2, dtype=torch.float64)
    omega = theta ** (-2 * k / dim)
    a = pos.to(torch.float64)[..., None] * omega
    return torch.stack([a.cos(), -a.sin(), a.sin(), a.cos()], -1).reshape(*a.shape, 2, 2).float()


def image_ids(rows: int, cols: int) -> torch.Tensor:
    """Flux-style image ids (1, rows*cols, 3): index 0, height row, width column."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([torch.zeros_like(r), r, c], -1).reshape(1, -1, 3).float()


def scores(pe: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """All-pairs scores (N, N) of one query/key vector placed at every token."""
    rot = pe[0, 0]  # (N, D/2, 2, 2)
    qr = torch.einsum("ndij,dj->ndi", rot, q.view(-1, 2)).reshape(rot.shape[0], -1)
    kr = torch.einsum("ndij,dj->ndi", rot, k.view(-1, 2)).reshape(rot.shape[0], -1)
    return qr @ kr.T


def embed(mode: str, rows: int, cols: int):
    module = SphericalRoPE(sum(AXES), THETA, AXES, reference_rope, mode)
    ids = image_ids(rows, cols)
    with token_grid(TokenGrid(width_axis=2, height_axis=1, period=cols, rows=rows)):
        return module(ids), ids


def test_harmonics_are_whole_turns_per_period_nearest_the_model_frequencies():
    m = wrapped_harmonics(56, THETA, 128)
    omega = THETA ** (-torch.arange(28, dtype=torch.float64) * 2 / 56)
    assert torch.equal(m, m.round())
    assert float((m - omega * 128 / (2 * math.pi)).abs().max()) <= 0.5
    assert float(m[0]) == round(128 / (2 * math.pi))  # 20 turns for omega_0 = 1 rad/position


def test_first_and_last_columns_score_like_interior_neighbours_only_when_wrapped():
    rows, cols = 2, 16
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(sum(AXES), generator=g), torch.randn(sum(AXES), generator=g)
    pe, ids = embed("wrap", rows, cols)
    s = scores(pe, q, k)
    tok = lambda r, c: r * cols + c  # noqa: E731
    for r in range(rows):
        # query at column 0, key at W-1 (distance -1 around the circle) = query at 6, key at 5
        assert float(s[tok(r, 0), tok(r, cols - 1)]) == pytest.approx(float(s[tok(r, 6), tok(r, 5)]), abs=F32_SCORE_TOL)
        assert float(s[tok(r, cols - 1), tok(r, 0)]) == pytest.approx(float(s[tok(r, 5), tok(r, 6)]), abs=F32_SCORE_TOL)
    plain = torch.cat([reference_rope(ids[..., i], AXES[i], THETA) for i in range(3)], dim=-3).unsqueeze(1)
    sp = scores(plain, q, k)
    assert abs(float(sp[tok(0, 0), tok(0, cols - 1)]) - float(sp[tok(0, 6), tok(0, 5)])) > 0.1
    # the axes that do not wrap are the model's own rope, bit for bit
    non_width = (AXES[0] + AXES[1]) // 2  # rotation pairs of the index and height axes
    torch.testing.assert_close(pe[..., :non_width, :, :], plain[..., :non_width, :, :], atol=0, rtol=0)


def test_pole_variant_brings_a_polar_row_together_and_keeps_the_wrap():
    rows, cols = 16, 32
    g = torch.Generator().manual_seed(1)
    q = torch.randn(sum(AXES), generator=g)
    pe, _ = embed("wrap_pole", rows, cols)
    s = scores(pe, q, q)
    tok = lambda r, c: r * cols + c  # noqa: E731
    for r in (0, 4, 8):
        assert float(s[tok(r, 0), tok(r, cols - 1)]) == pytest.approx(float(s[tok(r, 9), tok(r, 8)]), abs=F32_SCORE_TOL)
    # At the polar row (colatitude 5.6 degrees) every column is nearly the same direction:
    # the width harmonics round to 0 and the query scores the far side of the pole like
    # itself; at the equator row the far side is half a turn away.
    assert float(s[tok(0, 0), tok(0, cols // 2)]) == pytest.approx(float(s[tok(0, 0), tok(0, 0)]), abs=F32_SCORE_TOL)
    equator = rows // 2
    assert abs(float(s[tok(equator, 0), tok(equator, cols // 2)]) - float(s[tok(equator, 0), tok(equator, 0)])) > 0.1
    pe_wrap, _ = embed("wrap", rows, cols)
    torch.testing.assert_close(pe[0, 0, tok(equator, 3)], pe_wrap[0, 0, tok(equator, 3)])  # sin(colat) ~ 1 there


def test_the_grid_comes_from_the_latent_and_the_model_family():
    flux = FAMILIES["Flux"]
    grid = grid_for_latent((1, 16, 32, 64), 2, flux)
    assert (grid.period, grid.rows, grid.row0, grid.row_step) == (32, 16, 0.0, 1.0)
    scaled = grid_for_latent((1, 16, 32, 64), 2, flux, {"scale_x": 2.0, "scale_y": 0.5, "shift_y": 3.0})
    assert (scaled.period, scaled.row_step, scaled.row0) == (64.0, 0.5, 3.0)
    qwen = grid_for_latent((1, 16, 1, 32, 64), 2, FAMILIES["QwenImageTransformer2DModel"], {"scale_x": 2.0})
    assert (qwen.period, qwen.row0) == (32, -8.0)  # Qwen ignores rope_options and centres its rows
    wan = grid_for_latent((1, 16, 5, 30, 60), (1, 2, 2), FAMILIES["WanModel"])
    assert (wan.period, wan.rows) == (30, 15)
    with pytest.raises(ValueError, match="whole patches"):
        grid_for_latent((1, 16, 31, 62), 2, flux)
    with pytest.raises(ValueError, match="equirect"):
        grid_for_latent((1, 16, 32, 32), 2, flux)

    class Flux:  # stand-ins named like ComfyUI's classes
        pass

    class FluxKontextLike(Flux):
        pass

    assert family_of(FluxKontextLike()) is flux
    with pytest.raises(ValueError, match="UNetModel"):
        family_of(type("UNetModel", (), {})())


def test_the_module_refuses_to_run_without_a_grid_and_unknown_modes():
    module = SphericalRoPE(sum(AXES), THETA, AXES, reference_rope, "wrap")
    assert CURRENT_GRID.get() is None
    with pytest.raises(RuntimeError, match="token grid"):
        module(image_ids(2, 4))
    with pytest.raises(ValueError, match="mode"):
        SphericalRoPE(sum(AXES), THETA, AXES, reference_rope, "spin")
    with pytest.raises(ValueError, match="period"):
        TokenGrid(2, 1, period=0.0, rows=4)
