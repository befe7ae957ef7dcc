"""The uniform spherical lattice and its exchange with views and equirects.

References are independent of ``pano360.projection``: closed forms (cube-face solid
angle, equal-area bands), scipy's KD-tree for nearest neighbours, brute-force loops over
tiny sizes, and analytic fields of the unit direction with cameras built by Rodrigues'
formula (``tests/_projection_fixtures.py``), straight from docs/conventions.md.
"""

from __future__ import annotations

import math
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from _projection_fixtures import camera_to_world, erp_dirs, smooth_signal, view_dirs  # noqa: E402

from pano360.projection import GRID_CACHE, rig_preset  # noqa: E402
from pano360.projection.lattice import (  # noqa: E402
    DISTORTION_POWER,
    assign_views,
    erp_size_for_points,
    erp_to_lattice,
    fibonacci_lattice,
    lattice_spacing,
    lattice_to_erp,
    lattice_to_views,
    perspective_to_lattice,
    points_for_erp,
    points_for_view,
    view_solid_angle,
    views_to_lattice,
)

F64 = torch.float64
# Bilinear sampling of the smooth test signal at 64x128 / 24 px views: the truncation error
# of linear interpolation (|f''| h^2 / 8 with h ~ 3 degrees), well below the signal's 0.1..0.9.
BILINEAR_TOL = 2e-3
# Moving least squares of degree 2 in the tangent plane reproduces fields linear in the
# direction up to float32 rounding; quadratics of the direction differ from tangent-plane
# quadratics by the sphere's curvature, O(h^4) ~ 6e-5 at 3000 points.
LINEAR_TOL = 5e-6
QUADRATIC_TOL = 2e-4


def rig_angles(rig):
    return rig.angles(dtype=F64)


def gnomonic(points: torch.Tensor, yaw, pitch, roll, fov, hw):
    """Independent camera-plane coordinates (u, v in units of the frame) and cos(theta)."""
    c = points.to(F64) @ camera_to_world(yaw, pitch, roll)  # world -> camera (rows R^T d)
    tx = math.tan(fov / 2)
    ty = tx * hw[0] / hw[1]
    return c[:, 0] / c[:, 2] / tx, c[:, 1] / c[:, 2] / ty, c[:, 2]


# --------------------------------------------------------------------------- the lattice


def test_lattice_points_are_unit_directions_on_equal_area_bands():
    n = 1000
    p = fibonacci_lattice(n, dtype=F64)
    torch.testing.assert_close(p.norm(dim=1), torch.ones(n, dtype=F64))
    # Archimedes: a band of heights [a, b] has area 2 pi (b - a), so equal height steps are
    # equal areas; point i sits at the middle of the i-th of n equal bands.
    torch.testing.assert_close(p[:, 1], 1 - (2 * torch.arange(n, dtype=F64) + 1) / n)
    # consecutive points turn by the golden angle pi (3 - sqrt 5) = 137.5 degrees
    lon = torch.atan2(p[:, 0], p[:, 2])
    step = torch.remainder(lon.diff(), 2 * math.pi)
    torch.testing.assert_close(step, torch.full_like(step, math.pi * (3 - math.sqrt(5))))


def test_every_spherical_cap_holds_its_share_of_points():
    n = 4000
    p = fibonacci_lattice(n, dtype=F64)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(200, 3, generator=g, dtype=F64)
    centres = centres / centres.norm(dim=1, keepdim=True)
    for angle in (0.2, 0.5, 1.0):
        counts = ((p @ centres.T) > math.cos(angle)).sum(0).to(F64)
        expected = n * (1 - math.cos(angle)) / 2  # cap area 2 pi (1 - cos a) over 4 pi
        # A low-discrepancy point set: errors grow like the cap's perimeter in spacings,
        # not like sqrt(count) (random points would miss by ~sqrt(expected) = 7..45).
        perimeter_points = 2 * math.pi * math.sin(angle) / lattice_spacing(n)
        assert float((counts - expected).abs().max()) < 0.5 * perimeter_points, angle


def test_nearest_neighbours_are_evenly_spaced():
    kdtree = pytest.importorskip("scipy.spatial").cKDTree
    n = 3000
    p = fibonacci_lattice(n, dtype=F64).numpy()
    dist, _ = kdtree(p).query(p, k=2)
    nn = torch.as_tensor(dist[:, 1])
    s = lattice_spacing(n)  # chord ~ angle at this scale
    assert float(nn.min()) > 0.75 * s and float(nn.max()) < 1.25 * s


def test_sizes_follow_solid_angles():
    # A 90-degree square pinhole sees one cube face: 4 pi / 6 steradians.
    assert view_solid_angle(math.pi / 2, (8, 8)) == pytest.approx(4 * math.pi / 6, rel=1e-12)
    assert points_for_view((16, 16), math.pi / 2) == 6 * 256
    # the equator pixel of a 64x128 equirect covers (pi/64)(2 pi/128) sr
    assert points_for_erp((64, 128)) == round(4 * math.pi / ((math.pi / 64) * (2 * math.pi / 128)))
    h, w = erp_size_for_points(points_for_erp((64, 128)))
    assert (h, w) == (64, 128)
    assert erp_size_for_points(5000, align=8)[0] % 8 == 0


# --------------------------------------------------------------------------- views


def test_each_view_takes_the_points_nearest_its_axis_one_per_pixel_in_image_order():
    n, hw = 2000, (8, 12)
    yaw, pitch, roll, fov = 0.7, 0.4, 0.2, math.radians(80)
    lv = assign_views(n, yaw, pitch, roll, fov, hw)
    assert lv.index.shape == (1, *hw) and lv.num_views == 1 and lv.view_hw == hw
    idx = lv.index[0]
    assert idx.unique().numel() == hw[0] * hw[1]  # one pixel per point
    u, v, z = gnomonic(fibonacci_lattice(n, dtype=F64), yaw, pitch, roll, fov, hw)
    rho = torch.where(z > 0, torch.maximum(u.abs(), v.abs()), torch.full_like(u, math.inf))
    # brute force: the h*w points of smallest max(|u|, |v|)
    expected = set(torch.argsort(rho)[: hw[0] * hw[1]].tolist())
    assert set(idx.reshape(-1).tolist()) == expected
    assert float(lv.extent[0]) == pytest.approx(float(rho[idx].max()), rel=1e-5)
    for r in range(hw[0]):  # rows from the top, each left to right
        assert bool((u[idx[r]].diff() > 0).all())
        if r + 1 < hw[0]:
            assert float(v[idx[r]].min()) >= float(v[idx[r + 1]].max())
    torch.testing.assert_close(lv.weight[0], (z[idx] ** DISTORTION_POWER).float())


def test_views_hold_their_own_scene_near_the_pinhole_position():
    # A 32x32 view with the lattice size matched to it: its points lie in its own frame
    # and every point sits within a few pixels of the pixel's pinhole ray (the equal-count
    # layout magnifies the centre slightly, the points' irregularity adds < 1 px).
    hw = (32, 32)
    fov = math.pi / 2
    n = points_for_view(hw, fov)
    lv = assign_views(n, 0.3, -0.2, 0.0, fov, hw)
    assert 0.97 < float(lv.extent[0]) < 1.03
    d = fibonacci_lattice(n, dtype=F64)[lv.index[0].reshape(-1)]
    rays = view_dirs(0.3, -0.2, 0.0, fov, hw).reshape(-1, 3)
    angle_px = torch.acos((d * rays).sum(-1).clamp(-1, 1)) / (2 * math.tan(fov / 2) / hw[1])
    assert float(angle_px.mean()) < 2.5 and float(angle_px.max()) < 6.0
    centre = d[(hw[0] // 2) * hw[1] + hw[1] // 2]
    axis = camera_to_world(0.3, -0.2, 0.0)[:, 2]
    assert math.degrees(math.acos(float(centre @ axis))) < 2 * math.degrees(lattice_spacing(n))


def test_videopanda8_covers_the_whole_lattice_at_its_widest_views_density():
    rig = rig_preset("videopanda8", size=16)
    yaw, pitch, roll, fov = rig_angles(rig)
    n = points_for_view((16, 16), float(fov.max()))
    lv = assign_views(n, yaw, pitch, roll, fov, (16, 16))
    assert int((lv.coverage() == 0).sum()) == 0
    assert float(lv.extent[6:].sub(1).abs().max()) < 0.02  # the 100-degree pole views keep their frame


def test_gather_and_weighted_scatter_match_brute_force():
    n, hw = 300, (4, 5)
    yaw = torch.tensor([0.0, 0.9, 2.0])
    lv = assign_views(n, yaw, 0.1, 0.0, math.radians(90), hw)
    g = torch.Generator().manual_seed(0)
    lattice = torch.randn(2, 3, n, generator=g)  # T=2 frames, C=3
    views = lattice_to_views(lattice, lv)
    assert views.shape == (3 * 2, 3, *hw)
    for v in range(3):
        for t in range(2):
            for i in range(hw[0]):
                for j in range(hw[1]):
                    assert torch.equal(views[v * 2 + t, :, i, j], lattice[t, :, lv.index[v, i, j]])
    x = torch.randn(6, 3, *hw, generator=g)
    cell = torch.tensor([1.0, 2.0, 1.0, 1.0, 5.0, 1.0])
    mean, wsum = views_to_lattice(x, lv, cell)
    num = torch.zeros(2, 3, n, dtype=F64)
    den = torch.zeros(2, 1, n, dtype=F64)
    for v in range(3):
        for t in range(2):
            for i in range(hw[0]):
                for j in range(hw[1]):
                    p = int(lv.index[v, i, j])
                    wt = float(lv.weight[v, i, j]) * float(cell[v * 2 + t])
                    num[t, :, p] += wt * x[v * 2 + t, :, i, j].double()
                    den[t, 0, p] += wt
    torch.testing.assert_close(wsum.double(), den, atol=1e-5, rtol=1e-5)
    covered = den > 0
    expected = torch.where(covered, num / den.clamp_min(1e-30), torch.zeros_like(num))
    torch.testing.assert_close(mean.double(), expected, atol=1e-5, rtol=1e-5)
    # the round trip keeps the lattice values wherever a view holds the point
    back, _ = views_to_lattice(lattice_to_views(lattice, lv), lv)
    torch.testing.assert_close(back[covered.expand_as(back)], lattice[covered.expand_as(back)], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- images <-> lattice


def test_erp_and_views_sample_the_scene_at_the_points():
    n = 2000
    p = fibonacci_lattice(n, dtype=F64)
    truth = smooth_signal(p).T.float()  # (3, n)
    erp = smooth_signal(erp_dirs(64)).permute(2, 0, 1)[None].float()
    got = erp_to_lattice(erp, n)
    assert got.shape == (1, 3, n)
    assert float((got[0] - truth).abs().max()) < 2 * BILINEAR_TOL
    yaw, pitch, roll, fov, hw = 2.5, 0.6, -0.3, math.radians(70), (24, 32)
    view = smooth_signal(view_dirs(yaw, pitch, roll, fov, hw)).permute(2, 0, 1)[None].float()
    vals, inside = perspective_to_lattice(view, yaw, pitch, roll, fov, n)
    u, v, z = gnomonic(p, yaw, pitch, roll, fov, hw)
    expected_inside = (z > 0) & (u.abs() < 1) & (v.abs() < 1)
    assert torch.equal(inside[0, 0].bool(), expected_inside)
    err = (vals[0] - truth).abs()[:, expected_inside]
    assert float(err.max()) < 2 * BILINEAR_TOL
    assert float(vals[0][:, ~expected_inside].abs().max()) == 0.0


def test_lattice_to_erp_reproduces_low_order_fields_and_is_seamless():
    n = 3000
    hw = erp_size_for_points(n)
    p = fibonacci_lattice(n, dtype=F64)
    linear = torch.tensor([[0.3, -0.7, 0.2], [0.0, 0.5, 1.0]], dtype=F64)
    erp = lattice_to_erp((linear @ p.T)[None].float(), hw)
    truth = torch.einsum("ck,hwk->chw", linear, erp_dirs(hw[0]))[None].float()
    assert float((erp - truth).abs().max()) < LINEAR_TOL

    def quadratic(d):
        x, y, z = d.unbind(-1)
        return torch.stack([0.2 + x * y - 0.5 * z * z, y + 0.3 * x * z], 0)

    erp = lattice_to_erp(quadratic(p)[None].float(), hw)
    truth = quadratic(erp_dirs(hw[0]))[None].float()
    assert erp.shape == (1, 2, *hw)
    assert float((erp - truth).abs().max()) < QUADRATIC_TOL

    # A band-limited random field: the seam column pair differs like interior neighbours.
    g = torch.Generator().manual_seed(3)
    freqs = torch.randn(32, 3, generator=g, dtype=F64) * 4
    phase = torch.rand(32, generator=g, dtype=F64) * 6.28

    def waves(d):
        return torch.cos(d @ freqs.T + phase).sum(-1)[None] / 4

    out = lattice_to_erp(waves(p)[None].float(), hw)[0, 0]
    seam = (out[:, 0] - out[:, -1]).abs().mean()
    interior = (out[:, 1:] - out[:, :-1]).abs().mean()
    assert float(seam) < 1.5 * float(interior)
    err = (out - waves(erp_dirs(hw[0]))[0].float()).abs().mean()
    assert float(err) < 0.02


def test_outputs_follow_the_input_dtype_and_caches_stay_unchanged():
    n = 500
    lat = torch.randn(1, 2, n, dtype=F64)
    out = lattice_to_erp(lat, (16, 32))
    assert out.dtype == F64
    assert erp_to_lattice(out, n).dtype == F64
    snapshot = {k: (v.clone() if isinstance(v, torch.Tensor) else None) for k, v in GRID_CACHE.items()
                if isinstance(k, tuple) and k and k[0] in ("lattice", "lat2erp", "erp2lat")}
    lattice_to_erp(lat * 2, (16, 32))
    erp_to_lattice(out * 3, n)
    for k, v in GRID_CACHE.items():
        if k in snapshot and snapshot[k] is not None:
            assert torch.equal(v, snapshot[k])


def test_bad_inputs_raise_errors_naming_the_argument():
    with pytest.raises(ValueError, match="n:"):
        fibonacci_lattice(1)
    with pytest.raises(ValueError, match="n:"):
        assign_views(50, 0.0, 0.0, 0.0, math.radians(90), (8, 8))
    with pytest.raises(ValueError, match="distortion_power"):
        assign_views(500, 0.0, 0.0, 0.0, math.radians(90), (4, 4), distortion_power=-1)
    with pytest.raises(ValueError, match="fov_x"):
        assign_views(500, 0.0, 0.0, 0.0, math.radians(190), (4, 4))
    lv = assign_views(500, 0.0, 0.0, 0.0, math.radians(90), (4, 4))
    with pytest.raises(ValueError, match="values"):
        lattice_to_views(torch.zeros(1, 2, 499), lv)
    with pytest.raises(ValueError, match="x:"):
        views_to_lattice(torch.zeros(1, 2, 5, 4), lv)
    with pytest.raises(ValueError, match="erp"):
        erp_to_lattice(torch.zeros(1, 2, 8, 8), 500)


def _anisotropic_view_dirs(yaw, pitch, roll, fov_x, fov_y, hw):
    """Pixel-centre rays of a pinhole with its own vertical FOV (non-square pixels)."""
    h, w = hw
    tx, ty = math.tan(fov_x / 2), math.tan(fov_y / 2)
    xs = ((torch.arange(w, dtype=F64) + 0.5) / w * 2 - 1) * tx
    ys = (1 - (torch.arange(h, dtype=F64) + 0.5) / h * 2) * ty
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    d = torch.stack([x, y, torch.ones_like(x)], -1) @ camera_to_world(yaw, pitch, roll).T
    return d / d.norm(dim=-1, keepdim=True)


def test_views_with_non_square_pixels_use_their_vertical_fov():
    n, hw = 3000, (24, 32)
    yaw, pitch, roll, fov_x, fov_y = 0.7, 0.2, 0.1, math.radians(80), math.radians(90)
    square = 2 * math.atan(math.tan(fov_x / 2) * hw[0] / hw[1])
    # fov_y equal to the square-pixel value changes nothing
    a = assign_views(n, yaw, pitch, roll, fov_x, hw)
    b = assign_views(n, yaw, pitch, roll, fov_x, hw, fov_y=torch.tensor([square], dtype=F64))
    assert torch.equal(a.index, b.index)
    assert view_solid_angle(fov_x, hw, square) == pytest.approx(view_solid_angle(fov_x, hw))
    # a taller FOV: the points of the frame (independent gnomonic test) and the scene sampled there
    p = fibonacci_lattice(n, dtype=F64)
    c = p @ camera_to_world(yaw, pitch, roll)
    u, v = c[:, 0] / c[:, 2] / math.tan(fov_x / 2), c[:, 1] / c[:, 2] / math.tan(fov_y / 2)
    expected_inside = (c[:, 2] > 0) & (u.abs() < 1) & (v.abs() < 1)
    view = smooth_signal(_anisotropic_view_dirs(yaw, pitch, roll, fov_x, fov_y, hw)).permute(2, 0, 1)[None].float()
    vals, inside = perspective_to_lattice(view, yaw, pitch, roll, fov_x, n, fov_y=fov_y)
    assert torch.equal(inside[0, 0].bool(), expected_inside)
    err = (vals[0] - smooth_signal(p).T.float()).abs()[:, expected_inside]
    # pixels ~1.9x taller than test_erp_and_views_sample_the_scene_at_the_points's: ~3.5x its error
    assert float(err.max()) < 4 * BILINEAR_TOL
    wrong, _ = perspective_to_lattice(view, yaw, pitch, roll, fov_x, n)  # as if the pixels were square
    seen = expected_inside & (v.abs() < math.tan(square / 2) / math.tan(fov_y / 2))
    assert float((wrong[0] - smooth_signal(p).T.float()).abs()[:, seen].max()) > 10 * float(err.max())
    taller = assign_views(n, yaw, pitch, roll, fov_x, hw, fov_y=fov_y)
    d = p[taller.index[0].reshape(-1)]
    rays = _anisotropic_view_dirs(yaw, pitch, roll, fov_x, fov_y, hw).reshape(-1, 3)
    px = torch.acos((d * rays).sum(-1).clamp(-1, 1)) / (2 * math.tan(fov_y / 2) / hw[0])
    assert float(px.mean()) < 2.5
    with pytest.raises(ValueError, match="fov_y"):
        assign_views(n, yaw, pitch, roll, fov_x, hw, fov_y=math.radians(190))
