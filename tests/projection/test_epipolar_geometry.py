"""Spherical epipolar sampling and depth reprojection against closed-form cases.

Every reference here is written from docs/conventions.md independently of
``pano360.projection``: directions from (lon, lat) by the documented formula, rotations
by Rodrigues' formula, and a box room with a ball ray-cast in closed form.
"""

from __future__ import annotations

import math

import pytest
import torch

from pano360.projection.epipolar import (
    depth_samples,
    epipolar_normal,
    epipolar_samples,
    equirect_epipolar_samples,
    great_circle,
    relative_pose,
    reproject_equirect,
    sample_erp_points,
)

F64 = torch.float64
HW = (64, 128)
# Closed-form pixel positions are exact up to float64 trig: far below a pixel.
PIXEL_TOL = 1e-6


def direction(lon_deg: float, lat_deg: float) -> torch.Tensor:
    lon, lat = math.radians(lon_deg), math.radians(lat_deg)
    return torch.tensor([math.cos(lat) * math.sin(lon), math.sin(lat), math.cos(lat) * math.cos(lon)], dtype=F64)


def pixel(lon_deg: float, lat_deg: float, hw=HW) -> tuple[float, float]:
    """(x, y) of a (lon, lat) by the convention: centre column lon 0, row 0 lat +90, pixel centres."""
    h, w = hw
    return (lon_deg / 360.0 + 0.5) * w - 0.5, (0.5 - lat_deg / 180.0) * h - 0.5


def rodrigues(axis, angle: float) -> torch.Tensor:
    k = torch.tensor(axis, dtype=F64)
    k = k / k.norm()
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=F64)
    return torch.eye(3, dtype=F64) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def camera(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> torch.Tensor:
    """Camera-to-world: roll clockwise about forward, pitch up about right, yaw right about up."""
    return (rodrigues((0, 1, 0), math.radians(yaw_deg)) @ rodrigues((1, 0, 0), -math.radians(pitch_deg))
            @ rodrigues((0, 0, 1), -math.radians(roll_deg)))


def samples_for(d, rot_t, pos_t, rot_r, pos_r, depths, hw=HW):
    R, t = relative_pose(rot_t, torch.tensor(pos_t, dtype=F64), rot_r, torch.tensor(pos_r, dtype=F64))
    return epipolar_samples(d.reshape(1, 3), R, t, torch.tensor(depths, dtype=F64), hw)


# --------------------------------------------------------------------------- closed-form points


@pytest.mark.parametrize(
    "case",
    [
        # target at the origin looks right (lon 90); the point 1 m away is (1, 0, 0); the
        # reference 1 m behind the target sees it at 45 deg right, on the horizon.
        dict(d=(90, 0), depth=1.0, pos_r=(0, 0, -1), yaw_r=0, want=(45, 0)),
        # the same reference turned to look right sees it 45 deg to its left.
        dict(d=(90, 0), depth=1.0, pos_r=(0, 0, -1), yaw_r=90, want=(-45, 0)),
        # 30 deg up, 2 m: point (0, 1, sqrt 3); a reference 1 m up sees it straight ahead.
        dict(d=(0, 30), depth=2.0, pos_r=(0, 1, 0), yaw_r=0, want=(0, 0)),
        # ... and a reference 1 m down sees it at atan2(2, sqrt 3) up.
        dict(d=(0, 30), depth=2.0, pos_r=(0, -1, 0), yaw_r=0, want=(0, math.degrees(math.atan2(2, math.sqrt(3))))),
        # straight behind the reference: the seam (lon 180).
        dict(d=(0, 0), depth=1.0, pos_r=(0, 0, 3), yaw_r=0, want=(180, 0)),
        # a reference turned back (yaw 180) sees that point straight ahead.
        dict(d=(0, 0), depth=1.0, pos_r=(0, 0, 3), yaw_r=180, want=(0, 0)),
    ],
)
def test_point_at_known_depth_lands_at_its_analytic_lon_lat(case):
    s = samples_for(direction(*case["d"]), camera(), (0, 0, 0), camera(case["yaw_r"]), case["pos_r"], [case["depth"]])
    want_x, want_y = pixel(*case["want"])
    x, y = float(s.x.reshape(-1)[0]), float(s.y.reshape(-1)[0])
    if case["want"][0] == 180:  # either side of the seam is the same place
        x = x % HW[1] if x > 0 else x + HW[1]
    assert y == pytest.approx(want_y, abs=PIXEL_TOL)
    assert x == pytest.approx(want_x, abs=PIXEL_TOL)


def test_point_above_the_reference_lands_on_the_north_pole_row_edge():
    # target at (1, 0, 0) looking at lon -90 lat 45: sqrt 2 m away is (0, 1, 0), straight
    # above a reference at the origin: latitude +90 is y = -0.5 (the top edge).
    s = samples_for(direction(-90, 45), camera(), (1, 0, 0), camera(), (0, 0, 0), [math.sqrt(2)])
    assert float(s.y.reshape(-1)[0]) == pytest.approx(-0.5, abs=PIXEL_TOL)


def test_translated_and_rotated_target_point_matches_world_geometry():
    # Target camera at (0.5, 0.2, -1) yawed 40 and pitched -10: its forward ray at 2.5 m
    # is the world point pos + 2.5 * forward; the reference at (-1, 0, 0.5) turned yaw -30
    # pitch 15 sees that point at the angles of rot_r^T (P - pos_r).
    rot_t, rot_r = camera(40, -10), camera(-30, 15, 5)
    pos_t, pos_r = torch.tensor([0.5, 0.2, -1.0], dtype=F64), torch.tensor([-1.0, 0.0, 0.5], dtype=F64)
    point = pos_t + 2.5 * rot_t[:, 2]
    v = rot_r.T @ (point - pos_r)
    lon, lat = math.degrees(math.atan2(v[0], v[2])), math.degrees(math.asin(v[1] / v.norm()))
    s = samples_for(direction(0, 0), rot_t, pos_t.tolist(), rot_r, pos_r.tolist(), [2.5])
    want_x, want_y = pixel(lon, lat)
    assert float(s.x.reshape(-1)[0]) == pytest.approx(want_x, abs=PIXEL_TOL)
    assert float(s.y.reshape(-1)[0]) == pytest.approx(want_y, abs=PIXEL_TOL)


# --------------------------------------------------------------------------- epipolar structure


def random_poses(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    rots, ts = [], []
    for _ in range(n):
        axis = torch.randn(3, generator=g, dtype=F64)
        rots.append(rodrigues(axis.tolist(), float(torch.rand(1, generator=g, dtype=F64)) * math.pi))
        ts.append(torch.randn(3, generator=g, dtype=F64))
    return torch.stack(rots), torch.stack(ts)


def test_zero_translation_collapses_every_depth_sample_onto_the_rotated_ray():
    rots, _ = random_poses(3, seed=1)
    t = torch.zeros(3, 3, dtype=F64)
    s = equirect_epipolar_samples((16, 32), rots, t, depth_samples(0.5, 20.0, 8), dtype=F64)
    assert s.x.shape == (3, 16 * 32, 8)
    # all S samples are one point ...
    assert torch.equal(s.x, s.x[..., :1].expand_as(s.x)) and torch.equal(s.y, s.y[..., :1].expand_as(s.y))
    # ... the direction R d, by the documented (lon, lat) formula.
    h, w = 16, 32
    lon = ((torch.arange(w, dtype=F64) + 0.5) / w - 0.5) * 2 * math.pi
    lat = (0.5 - (torch.arange(h, dtype=F64) + 0.5) / h) * math.pi
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    d = torch.stack([lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()], -1).reshape(-1, 3)
    rd = d @ rots.transpose(-1, -2)
    ry = torch.asin(rd[..., 1].clamp(-1, 1))
    assert torch.allclose(s.y[..., 0], (0.5 - ry / math.pi) * h - 0.5, atol=1e-9)
    ang = torch.atan2(rd[..., 0], rd[..., 2])
    x_want = (ang / (2 * math.pi) + 0.5) * w - 0.5
    dx = torch.remainder(s.x[..., 0] - x_want + w / 2, w) - w / 2  # seam-aware
    assert dx.abs().max() < 1e-9


def test_samples_lie_on_the_great_circle_with_normal_t_cross_Rd():
    rots, ts = random_poses(4, seed=2)
    g = torch.Generator().manual_seed(3)
    d = torch.randn(50, 3, generator=g, dtype=F64)
    d = d / d.norm(dim=-1, keepdim=True)
    depths = depth_samples(0.1, math.inf, 16, dtype=F64)
    s = epipolar_samples(d, rots, ts, depths, HW)
    normal = torch.cross(ts[:, None, :].expand(4, 50, 3), d @ rots.transpose(-1, -2), dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True)
    off_circle = (s.directions * normal[:, :, None, :]).sum(-1).abs()
    assert off_circle.max() < 1e-12
    assert torch.allclose(epipolar_normal(d, rots, ts), normal, atol=1e-12)
    # the samples run from near the epipole towards R d; the infinitely far one IS R d.
    rd = d @ rots.transpose(-1, -2)
    assert torch.allclose(s.directions[..., -1, :], rd, atol=1e-12)
    to_ray = torch.acos((s.directions * rd[:, :, None, :]).sum(-1).clamp(-1, 1))
    assert bool((to_ray[..., 1:] <= to_ray[..., :-1] + 1e-12).all())
    assert torch.allclose(s.parallax(), to_ray, atol=1e-6)


def test_great_circle_passes_through_epipole_and_vanishing_point():
    rot, t = camera(20, 10), torch.tensor([0.3, -0.2, 1.0], dtype=F64)
    d = direction(50, -20).reshape(1, 3)
    n = epipolar_normal(d, rot, t)[0]
    circle = great_circle(n, 720)
    assert torch.allclose(circle.norm(dim=-1), torch.ones(720, dtype=F64))
    assert (circle @ n).abs().max() < 1e-12
    for target in (t / t.norm(), rot @ d[0]):
        assert float((circle @ target).max()) > math.cos(math.radians(0.6))


def test_depth_samples_spacing():
    inv = depth_samples(1.0, 4.0, 4, "inverse", dtype=F64)
    assert torch.allclose(1 / inv, torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=F64))
    lin = depth_samples(1.0, 4.0, 4, "linear", dtype=F64)
    assert torch.allclose(lin, torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64))
    assert math.isinf(float(depth_samples(1.0, math.inf, 3)[-1]))
    with pytest.raises(ValueError, match="near"):
        depth_samples(0.0, 1.0, 4)
    with pytest.raises(ValueError, match="spacing"):
        depth_samples(1.0, 2.0, 4, "log")


# --------------------------------------------------------------------------- sampling


def field(d: torch.Tensor) -> torch.Tensor:
    x, y, z = d.unbind(-1)
    return torch.stack([0.5 + 0.3 * x + 0.1 * y * z, 0.5 + 0.3 * y - 0.1 * x * x], -1)


def erp_field(hw) -> torch.Tensor:
    h, w = hw
    lon = ((torch.arange(w, dtype=F64) + 0.5) / w - 0.5) * 2 * math.pi
    lat = (0.5 - (torch.arange(h, dtype=F64) + 0.5) / h) * math.pi
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    d = torch.stack([lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()], -1)
    return field(d).permute(2, 0, 1)


def test_sampling_wraps_the_seam_and_crosses_the_poles():
    # Points straddling the seam and the poles read the smooth field's value there: a
    # clamped or unwrapped sampler would read the far side of the image (error ~0.3).
    hw = (64, 128)
    erp = torch.stack([erp_field(hw), erp_field(hw)[[1, 0]]])  # two different images
    lons = torch.tensor([179.9, -179.9, 180.0, 10.0, 100.0, -45.0], dtype=F64)
    lats = torch.tensor([0.0, 30.0, -60.0, 89.9, -89.9, 89.0], dtype=F64)
    d = torch.stack([direction(float(a), float(b)) for a, b in zip(lons, lats)])
    x, y = pixel(lons, lats, hw)
    x, y = x[None].expand(3, -1), y[None].expand(3, -1)
    out = sample_erp_points(erp, x, y, source_index=torch.tensor([0, 1, 0]))
    want = field(d)
    # bilinear error of a degree-2 field at 64 rows (pixel ~0.05 rad): ~1e-3
    assert (out[0] - want).abs().max() < 5e-3
    assert (out[2] - want).abs().max() < 5e-3
    assert (out[1] - want[:, [1, 0]]).abs().max() < 5e-3


def test_sampling_is_differentiable_in_the_features():
    src = torch.randn(2, 3, 8, 16, dtype=F64, requires_grad=True)
    x, y = torch.rand(2, 5, dtype=F64) * 16, torch.rand(2, 5, dtype=F64) * 8
    out = sample_erp_points(src, x, y)
    out.sum().backward()
    # bilinear weights of each point sum to one: the gradient mass is the number of points per image.
    assert torch.allclose(src.grad.sum(dim=(1, 2, 3)), torch.full((2,), 5.0 * 3, dtype=F64))


# --------------------------------------------------------------------------- box room reprojection

BOX = torch.tensor([3.0, 1.5, 4.0], dtype=F64)  # half extents of the room (x, y, z), metres
BALL_CENTRE = torch.tensor([0.8, -0.3, 1.4], dtype=F64)
BALL_RADIUS = 0.7


def texture(p: torch.Tensor) -> torch.Tensor:
    """A smooth colour of world points (walls and ball alike): (..., 3) -> (..., 3)."""
    x, y, z = p.unbind(-1)
    return torch.stack([0.5 + 0.4 * torch.sin(1.3 * x + 0.7 * y), 0.5 + 0.4 * torch.sin(1.1 * z - 0.9 * x),
                        0.5 + 0.4 * torch.cos(0.8 * y + 0.6 * z)], -1)


def ray_cast(origin: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Distance from ``origin`` along unit rays ``d (..., 3)`` to the first surface (box inside, ball)."""
    safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    walls = ((torch.sign(safe) * BOX - origin) / safe).amin(-1)
    oc = origin - BALL_CENTRE
    b = (d * oc).sum(-1)
    disc = b * b - (oc @ oc - BALL_RADIUS**2)
    hit = -b - torch.sqrt(disc.clamp_min(0))
    ball = torch.where((disc > 0) & (hit > 0), hit, torch.full_like(hit, math.inf))
    return torch.minimum(walls, ball)


def render(pos: torch.Tensor, rot: torch.Tensor, h: int):
    """Direct equirect render of the room: colour (3, h, 2h), distance (1, h, 2h), points (h, 2h, 3)."""
    w = 2 * h
    lon = ((torch.arange(w, dtype=F64) + 0.5) / w - 0.5) * 2 * math.pi
    lat = (0.5 - (torch.arange(h, dtype=F64) + 0.5) / h) * math.pi
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    d = torch.stack([lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()], -1) @ rot.T  # world rays
    dist = ray_cast(pos, d)
    points = pos + dist[..., None] * d
    return texture(points).permute(2, 0, 1), dist[None], points


ROOM_H = 96
# Mean colour error on visible pixels: bilinear resampling of the texture (pixel ~0.03 rad,
# texture <= 1.6 rad/m: ~1e-3) plus the distance refinement error (measured 1.1e-3).
REPROJECT_MEAN_TOL = 3e-3
# Worst visible pixel away from silhouettes: at a crease of the room, where bilinear
# interpolation of the source distance cuts the corner (measured 0.058 colour, 3 % distance).
REPROJECT_MAX_TOL = 0.08
CREASE_DISTANCE_TOL = 0.04
# Visible pixels the analytic check calls hidden (measured 0).
FALSE_VISIBLE_TOL = 0.001
# Analytically visible pixels the mask misses (silhouettes, creases, splat leaks; measured 1 %).
MISSED_TOL = 0.03
# Distance ratio between 3x3 neighbours of the direct render that marks a silhouette
# band: there a pixel-centre ray grazes the ball and its pixel spans two surfaces.
SILHOUETTE_RATIO = 1.25


@pytest.fixture(scope="module")
def room_pair():
    pos_a, rot_a = torch.tensor([0.0, 0.0, 0.0], dtype=F64), camera(0, 0, 0)
    pos_b, rot_b = torch.tensor([0.6, 0.15, -0.5], dtype=F64), camera(35, 5, -3)
    img_a, dist_a, _ = render(pos_a, rot_a, ROOM_H)
    img_b, dist_b, pts_b = render(pos_b, rot_b, ROOM_H)
    # analytic visibility: B's surface point is seen by A when A's ray towards it hits it first.
    to_pts = pts_b - pos_a
    r = to_pts.norm(dim=-1)
    seen = (ray_cast(pos_a, to_pts / r[..., None]) - r).abs() < 1e-6 * r
    R, t = relative_pose(rot_a, pos_a, rot_b, pos_b)
    rep = reproject_equirect(img_a[None], dist_a[None], R, t)
    # silhouette band of the direct render (seam-wrapped 3x3 max/min of its distance)
    d = dist_b[None]
    padded = torch.nn.functional.pad(torch.cat([d[..., -1:], d, d[..., :1]], -1), (0, 0, 1, 1), mode="replicate")
    hi = torch.nn.functional.max_pool2d(padded, 3, 1)[0, 0]
    lo = -torch.nn.functional.max_pool2d(-padded, 3, 1)[0, 0]
    silhouette = hi > SILHOUETTE_RATIO * lo
    return dict(img_b=img_b, dist_b=dist_b, seen=seen, rep=rep, img_a=img_a, dist_a=dist_a, R=R, t=t,
                silhouette=silhouette)


def test_reprojection_matches_direct_render_on_visible_pixels(room_pair):
    rep, img_b = room_pair["rep"], room_pair["img_b"]
    vis = rep.visible[0, 0]
    core = vis & ~room_pair["silhouette"]
    err = (rep.image[0] - img_b).abs().amax(0)
    assert float(err[vis].mean()) < REPROJECT_MEAN_TOL
    assert float(err[core].max()) < REPROJECT_MAX_TOL
    rel = (rep.distance[0, 0] - room_pair["dist_b"][0]).abs() / room_pair["dist_b"][0]
    assert float(rel[core].max()) < CREASE_DISTANCE_TOL
    assert float(rel[core].quantile(0.99)) < 0.01
    # not visible -> zero colour and distance (nothing half-written)
    assert float(rep.image[0][:, ~vis].abs().max()) == 0.0 and float(rep.distance[0, 0][~vis].abs().max()) == 0.0


def test_reprojection_visibility_mask_marks_the_disocclusion_behind_the_ball(room_pair):
    vis, seen = room_pair["rep"].visible[0, 0], room_pair["seen"]
    n = seen.numel()
    assert float((~seen).float().mean()) > 0.01  # the move reveals wall behind the ball
    assert float((vis & ~seen).sum()) / n < FALSE_VISIBLE_TOL
    assert float((seen & ~vis).sum()) / float(seen.sum()) < MISSED_TOL


def test_reprojection_ignoring_translation_would_not_match(room_pair):
    # The same pipeline with t = 0 (a pure rotation) misplaces near content: the test above
    # can tell a correct translation from a wrong one.
    rep = reproject_equirect(room_pair["img_a"][None], room_pair["dist_a"][None], room_pair["R"], torch.zeros(3, dtype=F64))
    err = (rep.image[0] - room_pair["img_b"]).abs().amax(0)[rep.visible[0, 0]]
    assert float(err.mean()) > 10 * REPROJECT_MEAN_TOL


def test_identity_pose_reprojects_exactly():
    img, dist, _ = render(torch.zeros(3, dtype=F64), camera(), 64)
    rep = reproject_equirect(img[None], dist[None], torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64))
    vis = rep.visible[0, 0]
    # everything but the ball's silhouette (a source depth edge, left out on purpose)
    assert float(vis.float().mean()) > 0.97
    assert torch.allclose(rep.image[0][:, vis], img[:, vis], atol=1e-9)
    assert torch.allclose(rep.distance[0, 0][vis], dist[0][vis], rtol=1e-9)
