"""Grid conventions, non-square pixels and Argus's frame rim, against the references' own
equations written here independently in numpy (issue 17 items 2, 3, 5).

- Argus ``src/pers2equi.py: pers2equi_batch``: equirect longitudes ``linspace(-180, 180, W)``
  and latitudes ``linspace(90, -90, H)``; direction (cos lat cos lon, cos lat sin lon, sin lat)
  in its axes (x forward, y right, z up); camera by Rodrigues: yaw about z, then -pitch about
  the rotated y, then -roll about the rotated x, inverted; plane u = y/x, v = -z/x; strict
  mask |u| < tan(fov_x/2), |v| < tan(fov_y/2), x > 0; bilinear ``grid_sample`` with
  ``align_corners=False`` and ZERO padding on (u / len_x, v / len_y); black outside the mask.
- Look Beyond ``Pano2Perspect/lib/Equirec2Perspec.py: GetPerspective``: plane
  x = 1, y = linspace(-w_len, w_len, W), z = -linspace(-h_len, h_len, H) with
  hFOV = FOV * H / W; rotation R2 R1 (R1 about z by THETA, R2 about R1 y by -PHI); equirect
  coordinates ``lon / 180 * (W - 1) / 2 + (W - 1) / 2``, ``-lat / 90 * (H - 1) / 2 + (H - 1) / 2``.
- py360convert ``utils.xyzpers``: ``linspace(-tan(h_fov / 2), tan(h_fov / 2), w)`` (and
  ``v_fov`` for rows): the oracle itself is called for the non-square case.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _projection_fixtures import smooth_erp
from pano360.projection import (
    View,
    erp_to_perspective,
    erp_to_perspective_coords,
    erp_to_rig,
    perspective_to_erp,
    perspective_to_erp_coords,
    Rig,
)
from pano360.projection.conventions import (
    ARGUS_PLACEMENT,
    LOOKBEYOND_SAMPLING,
    lookbeyond_camera,
    view_from_lookbeyond,
    view_from_py360convert,
    view_to_py360convert,
)

# Coordinates computed in float64 by two independent formulas: they agree to rounding.
COORD_TOL = 1e-8
# Bilinear samples of the same float32 frame at the same points (float32 products).
VALUE_TOL = 2e-6
# Canvas pixels whose ray lies on the frame border within float rounding may flip in/out.
FLIP_FRACTION = 0.005
# py360convert's grids are float32: mean difference of the same view sampled by both.
ORACLE_TOL = 1e-3


def _rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


# --------------------------------------------------------------------------- Argus (item 2)


def argus_pers2equi_batch(frame: np.ndarray, yaw: float, pitch: float, roll: float, fov_x_deg: float, erp_hw,
                          coords: bool = False):
    """One frame ``(C, h, w)`` in 0..1 -> ``(canvas (C, H, W), mask (H, W))``, Argus's equations
    (``coords``: also the frame pixel coordinates ``grid_sample`` reads)."""
    hh, ww = erp_hw
    c, h, w = frame.shape
    len_x = math.tan(math.radians(fov_x_deg / 2))
    fov_y = 2 * math.atan(math.tan(math.radians(fov_x_deg) / 2) * h / w) / math.pi * 180
    len_y = math.tan(math.radians(fov_y / 2))
    lon = np.radians(np.linspace(-180, 180, ww))[None, :].repeat(hh, 0)
    lat = np.radians(np.linspace(90, -90, hh))[:, None].repeat(ww, 1)
    xyz = np.stack([np.cos(lon) * np.cos(lat), np.sin(lon) * np.cos(lat), np.sin(lat)], -1).reshape(-1, 3).T
    r1 = _rodrigues([0, 0, 1], yaw)
    r2 = _rodrigues(r1 @ [0, 1, 0], -pitch)
    r3 = _rodrigues(r2 @ r1 @ [1, 0, 0], -roll)
    xyz = np.linalg.inv(r1) @ (np.linalg.inv(r2) @ (np.linalg.inv(r3) @ xyz))
    xyz = xyz.T.reshape(hh, ww, 3)
    front = xyz[..., 0] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        n = xyz / xyz[..., :1]
    inside = (-len_x < n[..., 1]) & (n[..., 1] < len_x) & (-len_y < n[..., 2]) & (n[..., 2] < len_y)
    gx = np.where(inside, n[..., 1] / len_x, 0)
    gy = np.where(inside, -n[..., 2] / len_y, 0)
    # grid_sample, bilinear, align_corners=False, padding_mode="zeros"
    px, py = ((gx + 1) * w - 1) / 2, ((gy + 1) * h - 1) / 2
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    out = np.zeros((c, hh, ww))
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out += np.where(valid, frame[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0) * wt
    mask = inside & front
    if coords:
        return out * mask, mask, px, py
    return out * mask, mask


ARGUS_CASES = [(0.4, 0.2, -0.1, 70.0), (-2.8, -0.5, 0.3, 95.0), (3.0, 0.7, 0.0, 60.0), (1.2, -0.1, 0.5, 110.0)]


@pytest.mark.parametrize("yaw,pitch,roll,fov", ARGUS_CASES)
def test_zero_padding_placement_reproduces_argus_pers2equi_batch(yaw, pitch, roll, fov):
    erp_hw, view_hw = (48, 96), (18, 24)
    frame = torch.rand(1, 3, *view_hw, generator=torch.Generator().manual_seed(7))
    ref, ref_mask = argus_pers2equi_batch(frame[0].double().numpy(), yaw, pitch, roll, fov, erp_hw)
    erp, weight = perspective_to_erp(frame, yaw, pitch, roll, math.radians(fov), erp_hw, **ARGUS_PLACEMENT)
    ours, mask = erp[0].numpy(), weight[0, 0].numpy() > 0
    assert (mask != ref_mask).sum() <= FLIP_FRACTION * ref_mask.sum()
    both = mask & ref_mask
    assert np.abs(ours[:, both] - ref[:, both]).max() < VALUE_TOL
    assert np.all(ours[:, ~mask] == 0)
    # The rim is where zero padding matters: there the clamped (default) placement differs.
    clamped = perspective_to_erp(frame, yaw, pitch, roll, math.radians(fov), erp_hw,
                                 **{**ARGUS_PLACEMENT, "padding": "border"})[0][0].numpy()
    rim = both & (np.abs(clamped - ref).max(0) > 1e-3)
    assert rim.sum() > 0 and np.abs(ours[:, rim] - ref[:, rim]).max() < VALUE_TOL


def test_argus_canvas_coordinates_are_its_linspace_grid():
    yaw, pitch, roll, fov = ARGUS_CASES[1]
    erp_hw, view_hw = (32, 64), (12, 16)
    x, y, inside = perspective_to_erp_coords(yaw, pitch, roll, math.radians(fov), view_hw, erp_hw,
                                             erp_grid="corners")
    _, ref_mask, px, py = argus_pers2equi_batch(np.zeros((1, *view_hw)), yaw, pitch, roll, fov, erp_hw, coords=True)
    inside = inside.numpy()
    assert inside.sum() > 20 and (inside != ref_mask).sum() <= 1
    both = inside & ref_mask
    np.testing.assert_allclose(x.numpy()[both], px[both], atol=COORD_TOL, rtol=0)
    np.testing.assert_allclose(y.numpy()[both], py[both], atol=COORD_TOL, rtol=0)


# --------------------------------------------------------------------------- Look Beyond (items 3, 5)


def lookbeyond_maps(fov: float, theta: float, phi: float, height: int, width: int, erp_hw):
    """Look Beyond's ``GetPerspective`` remap coordinates ``(lon_px, lat_px)`` and unit rays
    in its axes (x forward, y right, z up)."""
    eh, ew = erp_hw
    cx, cy = (ew - 1) / 2.0, (eh - 1) / 2.0
    w_len = np.tan(np.radians(fov / 2.0))
    h_len = np.tan(np.radians(float(height) / width * fov / 2.0))
    x_map = np.ones([height, width])
    y_map = np.tile(np.linspace(-w_len, w_len, width), [height, 1])
    z_map = -np.tile(np.linspace(-h_len, h_len, height), [width, 1]).T
    d = np.sqrt(x_map**2 + y_map**2 + z_map**2)
    xyz = np.stack((x_map, y_map, z_map), axis=2) / d[..., None]
    r1 = _rodrigues([0, 0, 1], np.radians(theta))
    r2 = _rodrigues(r1 @ [0, 1, 0], np.radians(-phi))
    xyz = (r2 @ (r1 @ xyz.reshape(-1, 3).T)).T
    lat = np.arcsin(xyz[:, 2])
    lon = np.arctan2(xyz[:, 1], xyz[:, 0])
    lon = (lon.reshape(height, width) / np.pi * 180) / 180 * cx + cx
    lat = (-lat.reshape(height, width) / np.pi * 180) / 90 * cy + cy
    return lon, lat, xyz.reshape(height, width, 3)


@pytest.mark.parametrize("fov,theta,phi,hw", [(90, -32.7, 0, (32, 32)), (75, 120, 25, (24, 40)),
                                                  (60, -150, -40, (36, 20))])
def test_lookbeyond_coordinates_on_its_own_grids(fov, theta, phi, hw):
    erp_hw = (64, 128)
    lon, lat, _ = lookbeyond_maps(fov, theta, phi, *hw, erp_hw)
    cam = lookbeyond_camera(fov, theta, phi, *hw)
    x, y = erp_to_perspective_coords(cam["yaw"], cam["pitch"], cam["roll"], cam["fov_x"], cam["out_hw"], erp_hw,
                                     fov_y=cam["fov_y"], **LOOKBEYOND_SAMPLING)
    np.testing.assert_allclose(x.numpy(), lon, atol=COORD_TOL, rtol=0)
    np.testing.assert_allclose(y.numpy(), lat, atol=COORD_TOL, rtol=0)


@pytest.mark.parametrize("fov,theta,phi,hw", [(90, 180, 0, (32, 32)), (75, 120, 25, (24, 40)), (60, -10, 0, (36, 20))])
def test_lookbeyond_view_has_its_rays_on_the_pack_grid(fov, theta, phi, hw):
    _, _, rays = lookbeyond_maps(fov, theta, phi, *hw, (64, 128))
    ours = _rays(view_from_lookbeyond(fov, theta, phi, *hw))
    np.testing.assert_allclose(ours, rays[..., [1, 2, 0]], atol=1e-12, rtol=0)  # pack axes: right, up, forward


def test_lookbeyond_loop_rig_has_its_rays():
    # Issue 17 item 3: the rig passed FOV 90 unchanged, so its frames were half a pixel wider
    # than Look Beyond's (border rays off by ~1e-2 at 32 px).  Its FOV is now Look Beyond's.
    from pano360.projection import rig_preset, view_rays

    rig = rig_preset("lookbeyond_loop", size=32)
    ours = view_rays(rig, relative_to_first=False, dtype=torch.float64).numpy()
    for k, view in enumerate(rig.views):
        _, _, rays = lookbeyond_maps(90, view.yaw, 0, 32, 32, (64, 128))
        np.testing.assert_allclose(ours[k], rays[..., [1, 2, 0]], atol=1e-12, rtol=0)


def _rays(view: View) -> np.ndarray:
    from pano360.projection import view_rays

    return view_rays(Rig("one", (view,)), relative_to_first=False, dtype=torch.float64)[0].numpy()


def test_lookbeyond_sampling_equals_its_remap_coordinates_bilinear():
    erp = smooth_erp(64)
    cam = lookbeyond_camera(80, 40, 10, 24, 40)
    out = erp_to_perspective(erp, cam["yaw"], cam["pitch"], cam["roll"], cam["fov_x"], cam["out_hw"],
                             fov_y=cam["fov_y"], **LOOKBEYOND_SAMPLING)
    lon, lat, _ = lookbeyond_maps(80, 40, 10, 24, 40, (64, 128))
    ref = _bilinear_wrap(erp[0].double().numpy(), lon, lat)  # cv2.remap BORDER_WRAP, bilinear
    assert np.abs(out[0].double().numpy() - ref).max() < VALUE_TOL


def _bilinear_wrap(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c, h, w = img.shape
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    out = 0
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        out = out + img[:, (y0 + dy) % h, (x0 + dx) % w] * wt
    return out


# --------------------------------------------------------------------------- py360convert pairs (item 5)


def test_py360convert_non_square_fov_pair_as_fov_y():
    py360convert = pytest.importorskip("py360convert")
    erp = smooth_erp(128)
    kw = {"fov_deg": (100.0, 50.0), "u_deg": 35.0, "v_deg": 12.0, "out_hw": (40, 48), "in_rot_deg": 8.0}
    ref = py360convert.e2p(erp[0].permute(1, 2, 0).numpy(), **kw, mode="bilinear")
    view = view_from_py360convert(**kw)
    assert view.fov_y is not None  # 50 deg over 40 rows is not square next to 100 deg over 48 columns
    ours = erp_to_rig(erp, Rig("one", (view,)))[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).mean() < ORACLE_TOL
    direct = erp_to_perspective(erp, *(math.radians(a) for a in (35.0, 12.0, 8.0, 100.0)), (40, 48),
                                fov_y=math.radians(50.0), grid="corners")[0].permute(1, 2, 0).numpy()
    assert np.abs(direct - ref).mean() < ORACLE_TOL
    back = view_to_py360convert(view)
    assert back["fov_deg"] == pytest.approx((100.0, 50.0))


def test_corner_grid_coordinates_are_linspace_tan():
    h, w, fov_x, fov_y = 6, 9, math.radians(80), math.radians(50)
    x, y = erp_to_perspective_coords(0.0, 0.0, 0.0, fov_x, (h, w), (64, 128), fov_y=fov_y, grid="corners")
    u = np.linspace(-math.tan(fov_x / 2), math.tan(fov_x / 2), w)
    v = np.linspace(math.tan(fov_y / 2), -math.tan(fov_y / 2), h)
    lon = np.arctan2(u[None, :], 1.0).repeat(h, 0)
    lat = np.arctan2(v[:, None], np.hypot(u[None, :], 1.0))
    np.testing.assert_allclose(x.numpy(), (lon / (2 * math.pi) + 0.5) * 128 - 0.5, atol=COORD_TOL, rtol=0)
    np.testing.assert_allclose(y.numpy(), (0.5 - lat / math.pi) * 64 - 0.5, atol=COORD_TOL, rtol=0)


def test_sampler_reads_exactly_the_inspected_coordinates():
    erp_hw = (32, 64)
    ramp = torch.arange(64, dtype=torch.float64).expand(1, 1, 32, 64).contiguous()  # value = column
    for grid, erp_grid in (("centres", "centres"), ("corners", "corners"), ("corners", "centres")):
        args = (0.4, 0.3, 0.2, math.radians(40))
        x, _ = erp_to_perspective_coords(*args, (8, 10), erp_hw, fov_y=math.radians(30), grid=grid,
                                         erp_grid=erp_grid)
        out = erp_to_perspective(ramp, *args, (8, 10), fov_y=math.radians(30), grid=grid, erp_grid=erp_grid)
        torch.testing.assert_close(out[0, 0], x, atol=1e-9, rtol=0)  # away from the seam bilinear is exact


def test_fov_y_view_round_trips_through_json():
    from pano360.projection import rig_from_json

    rig = Rig("r", (View(10, 5, 0, 80, 64, 32, fov_y=50), View(0, 0, 0, 90, 64, 64)))
    again = rig_from_json(rig.to_json())
    assert again.views == rig.views
    assert "fov_y" not in rig_from_json('[{"fov": 60}]').to_json()
    with pytest.raises(ValueError, match=r"rig_json\[0\]\.fov_y: .*\(0, 180\).*190"):
        rig_from_json('[{"fov_y": 190}]')
    with pytest.raises(ValueError, match=r"grid: unknown grid convention 'edges'"):
        erp_to_perspective(smooth_erp(8), 0.0, 0.0, 0.0, 1.0, (4, 4), grid="edges")
    with pytest.raises(ValueError, match=r"padding: unknown padding 'reflect'"):
        perspective_to_erp(torch.zeros(1, 3, 4, 4), 0.0, 0.0, 0.0, 1.0, (8, 16), padding="reflect")
