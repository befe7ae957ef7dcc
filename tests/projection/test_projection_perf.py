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

    from pano360.projection import placement as P

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


def _layouts(x):
    """The same ``(B, C, H, W)`` values contiguous and in channels-last memory."""
    return x.contiguous(), x.contiguous(memory_format=torch.channels_last)


def test_every_entry_point_gives_the_same_values_in_both_layouts_and_keeps_the_layout():
    import math

    from _projection_fixtures import smooth_erp
    from pano360.projection import (cubemap_to_erp, erp_to_cubemap, erp_to_perspective, erp_to_rig,
                                    perspective_to_erp, rig_preset, rotate_erp, stitch_rig)

    erp = smooth_erp(32, frames=3)
    rig = rig_preset("videopanda8", size=12)
    yaw = torch.tensor([0.1, 1.0, 2.0])
    calls = [
        lambda e: erp_to_rig(e, rig),
        lambda e: erp_to_perspective(e, yaw, 0.2, 0.1, 1.2, (9, 11)),
        lambda e: erp_to_perspective(e, 0.5, 0.2, 0.1, 1.2, (9, 11), mode="bicubic"),
        lambda e: rotate_erp(e, 0.3, 0.2, 0.1),
        lambda e: erp_to_cubemap(e, 8, "stack"),
        lambda e: cubemap_to_erp(erp_to_cubemap(e, 8, "stack"), 16, "stack"),
        lambda e: stitch_rig(erp_to_rig(e, rig), rig, (16, 32), weight="feather")[0],
        lambda e: perspective_to_erp(erp_to_perspective(e, yaw, 0.2, 0.1, 1.2, (9, 11)), yaw, 0.2, 0.1, 1.2,
                                     (16, 32))[0],
    ]
    for call in calls:
        flat, last = _layouts(erp)
        a, b = call(flat), call(last)
        assert torch.equal(a, b)
        assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
    assert math.isfinite(float(a.sum()))


def test_table_of_a_contiguous_batch_is_row_contiguous():
    # Issue 10: the gather table of a contiguous (B, C, H, W) batch was a strided view
    # (one element per H*W), which made the gather ~7x slower than on channels-last input.
    x = torch.rand(4, 3, 8, 16)
    table = S.scratch_table_of(x)
    assert table.is_contiguous() and torch.equal(table, x.permute(2, 3, 0, 1).reshape(128, 12))
