"""Argus placement of perspective frames on the sphere, against Argus's own equations.

The reference below is written directly from shared/specs/argus-videofrom3d.md §1e
(``src/pers2equi.py``), in numpy: equirect grid (longitude linspace endpoints, or pixel
centres), direction (cos lat cos lon, cos lat sin lon, sin lat) in Argus's axes (x forward,
y right, z up), camera rotation by Rodrigues about z (yaw), the rotated y (−pitch) and the
rotated x (−roll), image plane u = y/x, v = −z/x, bilinear ``grid_sample`` with
``align_corners=False`` and its default ZERO padding (taps past the frame border read 0, so
the rim blends toward black: issue 17; this reference used to clamp, like the pack did).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pano360.pipelines.argus.conditioning import noise_augment_inside_mask, place_frames_on_sphere, argus_conditioning
from pano360.cameras import CameraPath

ERP_HW = (64, 128)
VIEW_HW = (24, 32)
VALUE_TOL = 1e-4  # float32 bilinear sampling of the same points
BOUNDARY_FRACTION = 0.01  # footprint pixels that may flip where a ray sits on the frame border


def _rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def argus_pers2equi(frame: np.ndarray, yaw, pitch, roll, fov_x_deg, erp_hw, grid="argus"):
    """frame (C, h, w) -> (erp (C, H, W) zero outside, mask (H, W)), Argus's equations."""
    H, W = erp_hw
    c, h, w = frame.shape
    if grid == "argus":
        lon = np.linspace(-math.pi, math.pi, W)
        lat = np.linspace(math.pi / 2, -math.pi / 2, H)
    else:  # pixel centres, docs/conventions.md
        lon = ((np.arange(W) + 0.5) / W - 0.5) * 2 * math.pi
        lat = (0.5 - (np.arange(H) + 0.5) / H) * math.pi
    lon, lat = np.meshgrid(lon, lat)
    d = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)
    R = _rodrigues(np.array([0.0, 0, 1]), yaw)
    R = _rodrigues(R @ np.array([0.0, 1, 0]), -pitch) @ R
    R = _rodrigues(R @ np.array([1.0, 0, 0]), -roll) @ R
    cam = d @ R  # R^T d for each row vector
    x = cam[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = cam[..., 1] / x, -cam[..., 2] / x
    tx = math.tan(math.radians(fov_x_deg) / 2)
    ty = tx * h / w
    mask = (x > 0) & (np.abs(u) < tx) & (np.abs(v) < ty)
    # bilinear, align_corners=False, padding_mode="zeros", on normalised (u/tx, v/ty)
    px = (np.where(mask, u / tx, 0) + 1) * w / 2 - 0.5
    py = (np.where(mask, v / ty, 0) + 1) * h / 2 - 0.5
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    out = np.zeros((c, H, W))
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out += np.where(valid, frame[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0) * wt
    return out * mask, mask


def _random_case(rng):
    yaw = rng.uniform(-math.pi, math.pi)
    pitch = rng.uniform(-0.8, 0.8)
    roll = rng.uniform(-0.6, 0.6)
    fov = rng.uniform(50, 100)
    return yaw, pitch, roll, fov


def _frame(seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(3, 6, 8, generator=g)
    return torch.nn.functional.interpolate(f[None], size=VIEW_HW, mode="bilinear", align_corners=False)[0]


def _place(frame, yaw, pitch, roll, fov):
    path = CameraPath((yaw,), (pitch,), (roll,), (math.radians(fov),))
    erp, mask = place_frames_on_sphere(frame[None], path, ERP_HW)
    return erp[0].numpy(), mask[0, 0].numpy()


@pytest.mark.parametrize("seed", range(6))
def test_placement_matches_argus_equations_on_pixel_centre_grid(seed):
    rng = np.random.default_rng(seed)
    yaw, pitch, roll, fov = _random_case(rng)
    frame = _frame(seed)
    erp, mask = _place(frame, yaw, pitch, roll, fov)
    ref, ref_mask = argus_pers2equi(frame.double().numpy(), yaw, pitch, roll, fov, ERP_HW, grid="centres")
    flips = (mask.astype(bool) != ref_mask).sum()
    assert flips <= BOUNDARY_FRACTION * ref_mask.sum() + 1
    both = mask.astype(bool) & ref_mask
    assert np.abs(erp[:, both] - ref[:, both]).max() < VALUE_TOL
    assert np.all(erp[:, ~mask.astype(bool)] == 0)  # black outside


@pytest.mark.parametrize("seed", range(3))
def test_placement_overlaps_argus_endpoint_grid(seed):
    # Argus samples longitude with linspace endpoints: the same footprint up to a sub-pixel stretch.
    rng = np.random.default_rng(100 + seed)
    yaw, pitch, roll, fov = _random_case(rng)
    _, mask = _place(_frame(seed), yaw, pitch, roll, fov)
    _, ref_mask = argus_pers2equi(_frame(seed).double().numpy(), yaw, pitch, roll, fov, ERP_HW, grid="argus")
    iou = (mask.astype(bool) & ref_mask).sum() / (mask.astype(bool) | ref_mask).sum()
    assert iou > 0.9


def _centroid(mask):
    ii, jj = np.nonzero(mask)
    return jj.mean(), ii.mean()


def test_mask_centroid_moves_right_for_yaw_and_up_for_pitch():
    frame = _frame()
    cx0, cy0 = _centroid(_place(frame, 0.0, 0.0, 0.0, 60)[1])
    cx1, cy1 = _centroid(_place(frame, math.radians(30), 0.0, 0.0, 60)[1])
    cx2, cy2 = _centroid(_place(frame, 0.0, math.radians(20), 0.0, 60)[1])
    assert cx0 == pytest.approx(ERP_HW[1] / 2 - 0.5, abs=0.01)  # centred on longitude 0
    assert cx1 - cx0 == pytest.approx(30 / 360 * ERP_HW[1], abs=0.5)  # right by 30°
    assert cy2 < cy0 - 5  # up (smaller row)


def test_noise_only_inside_mask_with_half_strength_in_unit_range():
    erp = torch.full((2, 3, 32, 64), 0.5)
    mask = torch.zeros(2, 1, 32, 64)
    mask[..., 8:24, 16:48] = 1
    out = noise_augment_inside_mask(erp, mask, 0.02, torch.Generator().manual_seed(0))
    assert torch.equal(out[..., :8, :], erp[..., :8, :])
    inside = out[..., 8:24, 16:48] - 0.5
    assert inside.std().item() == pytest.approx(0.01, rel=0.1)


def test_conditioning_has_one_clip_token_per_frame_and_zero_uncond():
    T = 3
    frames = torch.rand(T, 3, *VIEW_HW)
    erp, mask = place_frames_on_sphere(frames, CameraPath((0.0,) * T, (0.0,) * T, (0.0,) * T, (1.2,) * T), ERP_HW)
    seen = {}

    def enc_image(x):
        seen["clip"] = x
        return x.mean((2, 3)).repeat(1, 4)  # (T, 12)

    def enc_latent(x):
        seen["vae"] = x
        return x[:, :3, ::8, ::8].repeat(1, 2, 1, 1)[:, :4]

    cond = argus_conditioning(enc_image, enc_latent, erp, mask, frames, generator=torch.Generator().manual_seed(1))
    assert cond.clip_tokens.shape == (1, T, 12) and cond.concat_latents.shape == (T, 4, 8, 16)
    assert seen["clip"] is frames
    assert torch.equal(seen["vae"][mask.expand_as(erp) == 0], erp[mask.expand_as(erp) == 0])
    un = cond.unconditional()
    assert un.clip_tokens.abs().sum() == 0 and un.concat_latents.abs().sum() == 0 and un.fps == cond.fps


def test_resize_long_side_keeps_aspect_and_truncates_like_argus():
    from pano360.pipelines.argus.conditioning import resize_long_side

    x = torch.rand(2, 3, 1080, 1920)
    assert resize_long_side(x, 512).shape == (2, 3, 288, 512)
    assert resize_long_side(torch.rand(1, 3, 1000, 750), 512).shape == (1, 3, 512, 384)
    assert resize_long_side(torch.rand(1, 3, 100, 301), 512).shape == (1, 3, 170, 512)  # int(100·512/301) = 170
    assert resize_long_side(x, 0) is x
    flat = torch.full((1, 3, 60, 80), 0.25)
    assert torch.allclose(resize_long_side(flat, 512), torch.full((1, 3, 384, 512), 0.25))
