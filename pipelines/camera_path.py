"""Per-frame camera rotations and field of view for a perspective video (Argus's camera path).

A :class:`CameraPath` holds one ``yaw, pitch, roll, fov_x`` per frame, in radians, in the pack's
sphere convention (docs/conventions.md: +yaw right, +pitch up, +roll clockwise, camera-to-world
``R = R_y(yaw) · R_x(−pitch) · R_z(−roll)``).  Argus (``src/pers2equi.py``) uses the same signs, so
its angles are ours unchanged; only its file layouts and pose conversion need code.

Sources:

- :func:`constant_path`: every frame forward with one FOV (Argus demo's manual mode).
- :func:`path_from_argus_motion`: Argus's cached ``motion/<name>.txt`` (3 × T rows pitch, yaw,
  roll, radians) and ``fov/<name>.txt`` (fovx, fovy, degrees).
- :func:`path_from_megasam_npz`: MegaSaM's ``cam_c2w`` (T, 4, 4) + ``intrinsic`` (3, 3), fovx =
  2·atan2(cx, f) as Argus computes it.
- :func:`path_from_realestate10k`: a RealEstate10K camera file (world-to-camera 3 × 4 rows).
- :func:`path_from_keyframes`: "0:yaw=0,pitch=0,fov=90; 24:yaw=90" (degrees), linear in between.
- :func:`estimate_rotation_path`: rotation-only alignment of consecutive frames of the video
  itself (no learned model, no weights).

OpenCV camera-to-world rotations (x right, y down, z forward) become angles in
:func:`angles_from_opencv_c2w`, relative to frame 0.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("pano360")

__all__ = [
    "CameraPath",
    "constant_path",
    "path_from_argus_motion",
    "path_from_megasam_npz",
    "path_from_realestate10k",
    "path_from_opencv_c2w",
    "path_from_keyframes",
    "angles_from_rotation",
    "angles_from_opencv_c2w",
    "estimate_rotation_path",
]

# Argus demo manual FOV slider: 30–120°, default 90 (gradio_demo.py).
DEFAULT_FOV_DEG = 90.0
FOV_RANGE_DEG = (1.0, 179.0)

# OpenCV camera axes (x right, y down, z forward) -> pack camera axes (x right, y up, z forward).
_CV_TO_PACK = np.diag([1.0, -1.0, 1.0])
# Argus (src/rotation2euler.py): P maps Argus axes (forward, right, up) onto OpenCV (x, y, z) as
# (right, up, forward).
_ARGUS_P = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class CameraPath:
    """Per-frame camera angles, radians, pack convention; ``fov_x`` is the horizontal FOV.

    All four tuples have one entry per frame.  ``source`` says where the path came from.
    """

    yaw: tuple[float, ...]
    pitch: tuple[float, ...]
    roll: tuple[float, ...]
    fov_x: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.yaw)
        if n == 0 or any(len(x) != n for x in (self.pitch, self.roll, self.fov_x)):
            raise ValueError(
                f"camera path: yaw/pitch/roll/fov_x need the same non-zero length, got "
                f"{len(self.yaw)}/{len(self.pitch)}/{len(self.roll)}/{len(self.fov_x)}"
            )
        lo, hi = (math.radians(v) for v in FOV_RANGE_DEG)
        bad = [f for f in self.fov_x if not lo <= f <= hi]
        if bad:
            raise ValueError(f"camera path: fov_x must lie in {FOV_RANGE_DEG} degrees, got {math.degrees(bad[0]):.2f}")

    @property
    def num_frames(self) -> int:
        return len(self.yaw)

    def tensors(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(yaw, pitch, roll, fov_x), each (T,) radians."""
        return tuple(torch.tensor(v, device=device, dtype=dtype) for v in (self.yaw, self.pitch, self.roll, self.fov_x))

    def fit_to(self, num_frames: int) -> "CameraPath":
        """This path for a video of ``num_frames`` frames: cut, or the last pose held (as Argus
        repeats the last frame when a video runs out)."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        idx = [min(i, self.num_frames - 1) for i in range(num_frames)]
        if num_frames > self.num_frames:
            log.info("camera path: %d poses for %d frames; holding the last pose", self.num_frames, num_frames)
        pick = lambda v: tuple(v[i] for i in idx)  # noqa: E731
        return CameraPath(pick(self.yaw), pick(self.pitch), pick(self.roll), pick(self.fov_x), self.source)

    def offset(self, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> "CameraPath":
        """Every angle shifted (radians); Argus's ``yaw_start``."""
        return CameraPath(
            tuple(v + yaw for v in self.yaw), tuple(v + pitch for v in self.pitch),
            tuple(v + roll for v in self.roll), self.fov_x, self.source,
        )

    def to_text(self) -> str:
        """One line per frame: ``t yaw pitch roll fov`` in degrees (for display / saving)."""
        rows = ["# frame yaw_deg pitch_deg roll_deg fov_x_deg"]
        for t in range(self.num_frames):
            vals = (self.yaw[t], self.pitch[t], self.roll[t], self.fov_x[t])
            rows.append(f"{t} " + " ".join(f"{math.degrees(v):.3f}" for v in vals))
        return "\n".join(rows)


def _path(yaw, pitch, roll, fov_x, source: str) -> CameraPath:
    as_t = lambda a: tuple(float(x) for x in np.asarray(a, dtype=np.float64).reshape(-1))  # noqa: E731
    return CameraPath(as_t(yaw), as_t(pitch), as_t(roll), as_t(fov_x), source)


def constant_path(num_frames: int, fov_deg: float = DEFAULT_FOV_DEG) -> CameraPath:
    """Every frame looking forward, upright, with one horizontal FOV (degrees)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    z = np.zeros(num_frames)
    return _path(z, z, z, np.full(num_frames, math.radians(fov_deg)), f"constant fov {fov_deg:g}°")


def _parse_numbers(text: str, name: str) -> np.ndarray:
    """Whitespace-separated numbers, one row per line -> 2-D float64 array."""
    try:
        return np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(f"{name}: cannot read numbers from {text[:80]!r}: {err}") from err


def path_from_argus_motion(motion: str, fov: str | None = None, fov_deg: float | None = None) -> CameraPath:
    """Argus's cached trajectory (``dataset/video_dataset.py``).

    motion: the text of ``motion/<name>.txt``, a 3 × T array, rows pitch, yaw, roll (radians).
    fov: the text of ``fov/<name>.txt``, ``fovx fovy`` in degrees; or give ``fov_deg``.
    """
    m = _parse_numbers(motion, "motion")
    if m.shape[0] != 3:
        raise ValueError(f"motion: expected 3 rows (pitch, yaw, roll) × T frames, got shape {m.shape}")
    if fov is not None:
        f = _parse_numbers(fov, "fov").reshape(-1)
        if f.size < 1:
            raise ValueError("fov: expected 'fovx fovy' in degrees, got nothing")
        fov_deg = float(f[0])
    if fov_deg is None:
        raise ValueError("fov: give the fov txt file or fov_deg")
    pitch, yaw, roll = m
    return _path(yaw, pitch, roll, np.full(m.shape[1], math.radians(fov_deg)), "argus motion txt")


def angles_from_rotation(R: torch.Tensor | np.ndarray) -> np.ndarray:
    """(…, 3, 3) camera-to-world rotations (pack axes) -> (…, 3) yaw, pitch, roll radians.

    Inverts ``R = R_y(yaw) · R_x(−pitch) · R_z(−roll)``: the forward column gives yaw and pitch,
    the up-row gives roll.  Pitch is in [−π/2, π/2].
    """
    R = np.asarray(R, dtype=np.float64)
    yaw = np.arctan2(R[..., 0, 2], R[..., 2, 2])
    pitch = np.arcsin(np.clip(R[..., 1, 2], -1.0, 1.0))
    roll = np.arctan2(-R[..., 1, 0], R[..., 1, 1])
    return np.stack([yaw, pitch, roll], axis=-1)


def _zyx_angles(M: np.ndarray) -> np.ndarray:
    """(…, 3, 3) -> (…, 3) a, b, c with M = R_z(a) · R_y(b) · R_x(c)."""
    a = np.arctan2(M[..., 1, 0], M[..., 0, 0])
    b = np.arcsin(np.clip(-M[..., 2, 0], -1.0, 1.0))
    c = np.arctan2(M[..., 2, 1], M[..., 2, 2])
    return np.stack([a, b, c], axis=-1)


def angles_from_opencv_c2w(
    c2w: np.ndarray | torch.Tensor, mode: Literal["exact", "argus"] = "exact"
) -> np.ndarray:
    """OpenCV camera-to-world rotations -> per-frame (yaw, pitch, roll) relative to frame 0.

    c2w: (T, 3, 3) or (T, 4, 4) (translation ignored), camera axes x right, y down, z forward.
    Returns (T, 3) radians, pack convention; frame 0 is (0, 0, 0).

    mode "argus" reproduces ``inference.py`` / ``src/rotation2euler.py``: R_rel = R_iᵀ·R_0,
    M = Pᵀ·R_rel·P, M read as Z-Y-X Euler angles, all three negated.  M equals
    R_x(−roll)·R_y(−pitch)·R_z(−yaw) in Argus's axes, so the Z-Y-X reading is exact for
    rotations about one axis and only a first-order approximation when several angles are
    combined (tests/test_argus_camera_path.py measures the gap).  mode "exact" (default) reads
    the relative rotation R_0ᵀ·R_i in the pack's own Euler order and is exact.
    """
    c2w = np.asarray(c2w, dtype=np.float64)[..., :3, :3]
    if c2w.ndim != 3 or c2w.shape[0] < 1:
        raise ValueError(f"c2w: expected (T, 3, 3) or (T, 4, 4), got {c2w.shape}")
    R0 = c2w[0]
    if mode == "argus":
        M = _ARGUS_P.T @ (np.swapaxes(c2w, -1, -2) @ R0) @ _ARGUS_P
        return _argus_order(M)
    if mode != "exact":
        raise ValueError(f"mode must be 'exact' or 'argus', got {mode!r}")
    rel = R0.T @ c2w  # camera_i -> camera_0, OpenCV axes
    return angles_from_rotation(_CV_TO_PACK @ rel @ _CV_TO_PACK)


def _argus_order(M: np.ndarray) -> np.ndarray:
    a, b, c = np.moveaxis(_zyx_angles(M), -1, 0)
    return np.stack([-a, -b, -c], axis=-1)  # (yaw, pitch, roll)


def path_from_opencv_c2w(
    c2w, fov_x: Sequence[float] | float, mode: Literal["exact", "argus"] = "exact", source: str = "c2w"
) -> CameraPath:
    """CameraPath from OpenCV camera-to-world poses; fov_x radians (one or per frame)."""
    ang = angles_from_opencv_c2w(c2w, mode)
    fov = np.broadcast_to(np.asarray(fov_x, dtype=np.float64), (ang.shape[0],))
    return _path(ang[:, 0], ang[:, 1], ang[:, 2], fov, source)


def path_from_megasam_npz(path_or_file, mode: Literal["exact", "argus"] = "exact") -> CameraPath:
    """MegaSaM output ``<name>.npz``: ``cam_c2w`` (T, 4, 4), ``intrinsic`` (3, 3).

    fovx = 2·atan2(cx, f) as in Argus's ``inference.py`` (the principal point stands in for half
    the image width).
    """
    try:
        data = np.load(path_or_file, allow_pickle=False)
    except (ValueError, EOFError) as err:  # text, truncated, or an object array (never unpickled)
        raise ValueError(f"megasam npz: not an .npz archive of arrays ({err.__class__.__name__})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"megasam npz: not an .npz archive (a single {type(data).__name__} array)")
    with data:
        missing = [k for k in ("cam_c2w", "intrinsic") if k not in data.files]
        if missing:
            raise ValueError(f"megasam npz: missing arrays {missing}; has {data.files}")
        c2w, K = data["cam_c2w"], data["intrinsic"]
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or K.shape != (3, 3):
        raise ValueError(f"megasam npz: expected cam_c2w (T,4,4) and intrinsic (3,3), got {c2w.shape}, {K.shape}")
    fov = 2.0 * math.atan2(float(K[0, 2]), float(K[0, 0]))
    return path_from_opencv_c2w(c2w, fov, mode, source="megasam npz")


def path_from_realestate10k(text: str, mode: Literal["exact", "argus"] = "exact") -> CameraPath:
    """A RealEstate10K camera file: first line the video URL, then one line per frame
    ``timestamp fx fy cx cy 0 0 r11 r12 r13 t1 r21 … t3`` with intrinsics normalised by the image
    size and a world-to-camera 3 × 4 matrix (OpenCV axes).  fov_x = 2·atan(0.5 / fx)."""
    rows = []
    for n, line in enumerate(text.strip().splitlines()):
        parts = line.split()
        if n == 0 and len(parts) == 1:
            continue  # the URL line
        if len(parts) != 19:
            raise ValueError(f"realestate10k: line {n + 1} has {len(parts)} fields, expected 19")
        rows.append([float(p) for p in parts])
    if not rows:
        raise ValueError("realestate10k: no camera lines")
    a = np.asarray(rows)
    w2c = a[:, 7:].reshape(-1, 3, 4)[:, :, :3]
    c2w = np.swapaxes(w2c, -1, -2)  # rotation inverse
    fov = 2.0 * np.arctan(0.5 / a[:, 1])
    return path_from_opencv_c2w(c2w, fov, mode, source="realestate10k")


_KEY_NAMES = ("yaw", "pitch", "roll", "fov")


def path_from_keyframes(spec: str, num_frames: int, fov_deg: float = DEFAULT_FOV_DEG) -> CameraPath:
    """Keyframes ``"0:yaw=0,pitch=0,fov=90; 24:yaw=90"`` (degrees) -> a path of ``num_frames``.

    Each of yaw/pitch/roll/fov is interpolated linearly between the keyframes that set it, held
    before the first and after the last; a channel no keyframe sets stays 0 (fov: ``fov_deg``).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    keys: dict[str, list[tuple[int, float]]] = {k: [] for k in _KEY_NAMES}
    for chunk in filter(None, (c.strip() for c in spec.split(";"))):
        m = re.fullmatch(r"(\d+)\s*:\s*(.*)", chunk)
        if m is None:
            raise ValueError(f"keyframes: {chunk!r} is not 'frame: name=value, ...'")
        frame = int(m.group(1))
        for item in filter(None, (i.strip() for i in m.group(2).split(","))):
            name, _, value = (s.strip() for s in item.partition("="))
            if name not in keys:
                raise ValueError(f"keyframes: unknown name {name!r} in {chunk!r}; use {', '.join(_KEY_NAMES)}")
            try:
                keys[name].append((frame, float(value)))
            except ValueError as err:
                raise ValueError(f"keyframes: {name}={value!r} is not a number") from err
    t = np.arange(num_frames, dtype=np.float64)
    out = {}
    for name in _KEY_NAMES:
        pts = sorted(keys[name])
        if len({f for f, _ in pts}) != len(pts):
            raise ValueError(f"keyframes: {name} is set twice for one frame")
        if not pts:
            out[name] = np.full(num_frames, fov_deg if name == "fov" else 0.0)
        else:
            out[name] = np.interp(t, [f for f, _ in pts], [v for _, v in pts])
    rad = {k: np.radians(v) for k, v in out.items()}
    return _path(rad["yaw"], rad["pitch"], rad["roll"], rad["fov"], "keyframes")


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
    callback: Callable[[int], None] | None = None,
) -> CameraPath:
    """Camera rotations of a video under a pure-rotation model, relative to frame 0.

    frames: (T, C, H, W) in 0..1.  fov_x: horizontal FOV in radians, or None to estimate it
    (a golden-section search over 30–120° minimising the alignment residual of a few frame
    pairs; rough: it needs some pitch or yaw between frames).  max_side: frames are
    downscaled so their long side is at most this (px) before alignment.
    callback(step) is called once per aligned frame pair (progress and interrupts).

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
            callback(t - 1)
    ang = angles_from_rotation(torch.stack(rots).numpy())
    return _path(ang[:, 0], ang[:, 1], ang[:, 2], np.full(T, fov_x), "estimated from video")


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
