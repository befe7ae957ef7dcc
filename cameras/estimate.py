"""Camera rotations of a perspective video, estimated from the video itself.

Rotation-only direct alignment of consecutive frames (no learned model, no weights); the
result is a :class:`.path.CameraPath` relative to frame 0, as Argus expects.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..projection.geometry import angles_from_rotation
from ..sampling.types import ProgressCallback
from .path import CameraPath, path_from_arrays

log = logging.getLogger("pano360")

__all__ = ["estimate_rotation_path", "FOV_SEARCH_DEG"]

# --------------------------------------------------------------------------------------------
# Rotation estimate from the video itself
# --------------------------------------------------------------------------------------------

# Direct (photometric) alignment under a pure-rotation camera model, coarse to fine:
# frame t-1 warped by the homography K·ΔR·K⁻¹ is matched to frame t by Gauss–Newton on the
# three components of ΔR's rotation vector, with Huber IRLS weights so moving objects and
# occlusions count less (Baker & Matthews 2004, "Lucas-Kanade 20 years on", §3 and §4.1).
ESTIMATE_PYRAMID_MIN_SIZE = 24  # px, the short side of the coarsest level
ESTIMATE_ITERATIONS = 10  # Gauss–Newton steps per level (at most)
CONVERGED_STEP = 1e-6  # rad (0.00006°): stop a level when the update is this small
HUBER_K = 1.345  # Huber threshold in robust standard deviations (95 % efficiency, Huber 1981)
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a Gaussian (1 / Φ⁻¹(3/4))
# Central differences for the Jacobian (grid_sample has no forward-mode AD): 1e-3 rad is a
# tenth of a pixel at these sizes and well above float32 rounding of the residuals.
JACOBIAN_STEP = 1e-3
# Images and residuals in float32 (half the memory traffic of float64); the rotation
# chain and the Euler reading are done in float64.
ESTIMATE_DTYPE = torch.float32


def _skew_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation vectors (..., 3) -> rotation matrices (..., 3, 3), Rodrigues (series near 0)."""
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    K = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*w.shape[:-1], 3, 3)
    theta2 = (w * w).sum(-1)[..., None, None]
    theta = theta2.clamp_min(1e-24).sqrt()
    small = theta2 < 1e-12
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    return torch.eye(3, dtype=w.dtype, device=w.device) + a * K + b * (K @ K)


def _camera_rays(h: int, w: int, fov_x: float, dtype) -> tuple[torch.Tensor, float, float]:
    """(h*w, 3) pixel-centre rays, pack camera axes (x right, y up, z forward), and tan half-FOVs."""
    tx = math.tan(fov_x / 2)
    ty = tx * h / w
    xs = (torch.arange(w, dtype=dtype) + 0.5) / w * 2 - 1
    ys = 1 - (torch.arange(h, dtype=dtype) + 0.5) / h * 2
    gy, gx = torch.meshgrid(ys * ty, xs * tx, indexing="ij")
    rays = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)
    return rays, tx, ty


def _warp(prev: torch.Tensor, rays: torch.Tensor, R: torch.Tensor, tx: float, ty: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``prev`` (C, h, w) along rays rotated by each R (K, 3, 3) (camera t -> camera t-1),
    all K rotations in one ``grid_sample``.  Returns (K, C, N) values and (K, N) validity."""
    d = torch.einsum("nj,kij->kni", rays, R)  # (K, N, 3)
    z = d[..., 2].clamp_min(1e-6)
    gx, gy = d[..., 0] / z / tx, -d[..., 1] / z / ty
    grid = torch.stack([gx, gy], -1)[:, None]  # (K, 1, N, 2)
    src = prev[None].expand(R.shape[0], -1, -1, -1)
    vals = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
    valid = (gx.abs() < 1) & (gy.abs() < 1) & (d[..., 2] > 0)
    return vals, valid


def _align_pair(prev: torch.Tensor, cur: torch.Tensor, fov_x: float, w0: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Rotation vector of ΔR (camera t -> camera t-1) aligning prev to cur, and the final mean
    absolute residual.  prev, cur: (C, H, W) ESTIMATE_DTYPE; the pyramid is built here."""
    levels = []
    p, c = prev, cur
    while True:
        levels.append((p, c))
        if min(p.shape[-2:]) // 2 < ESTIMATE_PYRAMID_MIN_SIZE:
            break
        p, c = F.avg_pool2d(p[None], 2)[0], F.avg_pool2d(c[None], 2)[0]
    w = w0.clone()
    resid = float("inf")
    probes = torch.cat([torch.zeros(1, 3, dtype=w.dtype), torch.eye(3, dtype=w.dtype), -torch.eye(3, dtype=w.dtype)]) * JACOBIAN_STEP
    for p, c in reversed(levels):
        h, wd = p.shape[-2:]
        rays, tx, ty = _camera_rays(h, wd, fov_x, p.dtype)
        target = c.reshape(1, c.shape[0], -1)
        for _ in range(ESTIMATE_ITERATIONS):
            R = _skew_exp(w + probes)  # the estimate and its ± probes, warped together
            vals, valid = _warp(p, rays, R, tx, ty)
            res = (vals - target).reshape(7, -1)  # (7, C*N)
            r = res[0]
            J = ((res[1:4] - res[4:7]) / (2 * JACOBIAN_STEP)).T  # (C*N, 3) central differences
            ok = valid[0].repeat(p.shape[0])
            scale = MAD_TO_SIGMA * r[ok].abs().median().clamp_min(1e-6)
            a = r.abs() / (HUBER_K * scale)
            wt = torch.where(a <= 1, torch.ones_like(a), 1 / a) * ok
            JtW = J.T * wt
            step = torch.linalg.solve(JtW @ J + 1e-9 * torch.eye(3, dtype=J.dtype), -(JtW @ r))
            w = w + step
            resid = float((r.abs() * ok).sum() / ok.sum().clamp_min(1))
            if step.abs().max() < CONVERGED_STEP:
                break
    return w, resid


def _gray(frames: torch.Tensor) -> torch.Tensor:
    """(T, C, H, W) in 0..1 -> (T, 1, H, W) luminance (Rec. 601 weights), ESTIMATE_DTYPE."""
    if frames.shape[1] >= 3:
        wts = torch.tensor([0.299, 0.587, 0.114], dtype=ESTIMATE_DTYPE).view(1, 3, 1, 1)
        return (frames[:, :3].to(ESTIMATE_DTYPE) * wts).sum(1, keepdim=True)
    return frames[:, :1].to(ESTIMATE_DTYPE)


# FOV search range for estimate_rotation_path(fov_x=None) (Argus demo slider 30–120°).
FOV_SEARCH_DEG = (30.0, 120.0)


def estimate_rotation_path(
    frames: torch.Tensor,
    fov_x: float | None = None,
    *,
    max_side: int = 160,
    callback: ProgressCallback | None = None,
) -> CameraPath:
    """Camera rotations of a video under a pure-rotation model, relative to frame 0.

    frames: (T, C, H, W) in 0..1.  fov_x: horizontal FOV in radians, or None to estimate it
    (a golden-section search over 30–120° minimising the alignment residual of a few frame
    pairs; rough: it needs some pitch or yaw between frames).  max_side: frames are
    downscaled so their long side is at most this (px) before alignment.
    callback(done, total) is called once per aligned frame pair (progress and interrupts).

    Consecutive frames are aligned directly (photometric Gauss–Newton on the rotation vector
    with Huber IRLS, coarse to fine, started from the previous step and from rest, the lower
    residual kept); rotations are chained, R_t = R_{t-1}·ΔR_t, and read as yaw/pitch/roll.
    Translation and rolling shutter are not modelled.
    """
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise ValueError(f"frames: expected (T, C, H, W), got {tuple(frames.shape)}")
    g = _gray(frames.detach().cpu())
    scale = max_side / max(g.shape[-2:])
    if scale < 1:
        g = F.interpolate(g, scale_factor=scale, mode="area")
    T = g.shape[0]
    if fov_x is None:
        fov_x = _estimate_fov(g)
        log.info("camera path: estimated fov_x %.1f°", math.degrees(fov_x))
    R = torch.eye(3, dtype=torch.float64)
    rots = [R]
    w = torch.zeros(3, dtype=ESTIMATE_DTYPE)
    for t in range(1, T):
        # Two starts: the previous step (constant velocity) and rest; the lower residual wins,
        # so a camera that stops or turns back is followed as well as a steady pan.
        w_vel, r_vel = _align_pair(g[t - 1], g[t], fov_x, w)
        w_rest, r_rest = _align_pair(g[t - 1], g[t], fov_x, torch.zeros_like(w)) if w.abs().max() > 0 else (w_vel, r_vel)
        w = w_vel if r_vel <= r_rest else w_rest
        R = R @ _skew_exp(w.to(torch.float64))
        rots.append(R)
        if callback is not None:
            callback(t, T - 1)
    ang = angles_from_rotation(torch.stack(rots)).numpy()
    return path_from_arrays(ang[:, 0], ang[:, 1], ang[:, 2], np.full(T, fov_x), "estimated from video")


def _estimate_fov(g: torch.Tensor, pairs: int = 3, iterations: int = 10) -> float:
    """Golden-section search of fov_x (radians) minimising the summed alignment residual of up
    to ``pairs`` frame pairs spread over the video."""
    T = g.shape[0]
    if T < 2:
        raise ValueError("fov estimate needs at least 2 frames; give fov_x")
    step = max(1, (T - 1) // pairs)
    idx = list(range(0, T - 1, step))[:pairs]

    def cost(fov: float) -> float:
        return sum(_align_pair(g[i], g[i + 1], fov, torch.zeros(3, dtype=ESTIMATE_DTYPE))[1] for i in idx)

    lo, hi = (math.radians(v) for v in FOV_SEARCH_DEG)
    phi = (math.sqrt(5) - 1) / 2
    a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
    fa, fb = cost(a), cost(b)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - phi * (hi - lo)
            fa = cost(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + phi * (hi - lo)
            fb = cost(b)
    return (lo + hi) / 2
