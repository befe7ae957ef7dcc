"""Fast-path helpers of the projection core (helper `perf`): they must not change results."""

from __future__ import annotations

import torch

from pano360.projection import _sampling as S


def test_empty_like_huge_shape_dtype_and_writable():
    like = torch.zeros(2, dtype=torch.float16)
    small = S.empty_like_huge(like, 3, 4)
    assert small.shape == (3, 4) and small.dtype == torch.float16
    big = S.empty_like_huge(torch.zeros(1), (S.HUGEPAGE_MIN_BYTES // 4) + 5)  # over the hint threshold
    big.fill_(2.0)
    assert big.dtype == torch.float32 and bool((big == 2.0).all())


def test_scratch_table_matches_table_of_for_every_layout():
    x = torch.rand(3, 2, 4, 8)
    for src in (x, x.contiguous(memory_format=torch.channels_last), x[:1].contiguous(memory_format=torch.channels_last)):
        assert torch.equal(S.scratch_table_of(src), S.table_of(src))


def _footprint_every_pixel(yaw, pitch, roll, fov, view_hw, erp_hw):
    """The footprint test evaluated in float64 on every equirect pixel (the definition)."""
    import math

    from pano360.projection.geometry import erp_directions, rotation_matrix

    h, w = view_hw
    d = erp_directions(erp_hw, None, torch.float64).reshape(-1, 3)
    rot = rotation_matrix(*[torch.tensor(a, dtype=torch.float64) for a in (yaw, pitch, roll)])
    c = d @ rot
    tx = math.tan(fov / 2)
    ty = tx * h / w
    z = c[:, 2]
    front = z > 1e-12
    zs = torch.where(front, z, torch.ones_like(z))
    u, v = c[:, 0] / zs / tx, c[:, 1] / zs / ty
    return (front & (u.abs() < 1) & (v.abs() < 1)).nonzero().squeeze(1)


def test_footprint_coarse_pass_keeps_exactly_the_float64_footprint():
    import math

    from pano360.projection import perspective as P

    erp_hw = (64, 128)
    cams = [(0.3, 0.1, -0.2, math.radians(75), (12, 16)), (2.9, math.pi / 2, 0.0, math.radians(100), (16, 16)),
            (-1.0, -1.4, 0.7, math.radians(170), (9, 20)), (0.05, 0.0, 0.0, math.radians(12), (4, 4)),
            (math.pi, 0.0, math.pi / 4, math.radians(90), (32, 32))]
    for yaw, pitch, roll, fov, view_hw in cams:
        pixels, taps, vw = P._footprint(yaw, pitch, roll, fov, view_hw, erp_hw, "bilinear", "feather",
                                        torch.device("cpu"), torch.float32)
        ref = _footprint_every_pixel(yaw, pitch, roll, fov, view_hw, erp_hw)
        assert pixels.numel() > 0 and torch.equal(pixels, ref)
        assert taps.index.shape[0] == ref.numel() and vw.shape == ref.shape
