"""The camera path: one pose per frame of a video, the one class every system uses.

A :class:`CameraPath` holds, per frame, the camera's ``yaw, pitch, roll`` and horizontal field
of view ``fov_x`` in radians, in the pack's sphere convention (docs/conventions.md: +yaw right,
+pitch up, +roll clockwise, camera-to-world ``R = R_y(yaw) · R_x(−pitch) · R_z(−roll)``, see
:func:`..projection.rotation_matrix`), and optionally the camera's position in world units
(pack world axes: x right, y up, z forward).  Argus (``src/pers2equi.py``) uses the same angle
signs, so its angles are ours unchanged.

Where paths come from: :mod:`.trajectories` (constant, sweeps, loops, interpolation),
:mod:`.keyframes` (the keyframe text users type), :mod:`.estimate` (from a video), and
:mod:`.formats` (one reader/writer per pose file format).

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..projection.geometry import angles_from_rotation, flip_camera_y, rotation_matrix

log = logging.getLogger("pano360")

__all__ = [
    "DEFAULT_FOV_DEG",
    "FOV_RANGE_DEG",
    "CameraPath",
    "path_from_arrays",
    "path_from_opencv_c2w",
    "angles_from_opencv_c2w",
]

# Argus demo manual FOV slider: 30–120°, default 90 (gradio_demo.py).
DEFAULT_FOV_DEG = 90.0
# A pinhole camera's horizontal FOV, degrees (0 and 180 excluded).
FOV_RANGE_DEG = (1.0, 179.0)

# Argus (src/rotation2euler.py): P maps Argus axes (forward, right, up) onto OpenCV (x, y, z) as
# (right, up, forward).
_ARGUS_P = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])

PoseConversion = Literal["exact", "argus"]


def _floats(values, name: str, n: int | None = None) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if n is not None and len(out) != n:
        raise ValueError(f"camera path: {name} needs {n} values, got {len(out)}")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"camera path: {name} must be finite numbers, got {bad[0]}")
    return out


@dataclass(frozen=True)
class CameraPath:
    """Per-frame camera poses: angles and ``fov_x`` in radians (pack convention).

    All angle tuples have one entry per frame.  ``position`` is None (every camera at the
    origin, e.g. looking around a panorama) or one ``(x, y, z)`` per frame in world units,
    pack world axes.  ``source`` says where the path came from (shown to users).
    """

    yaw: tuple[float, ...]
    pitch: tuple[float, ...]
    roll: tuple[float, ...]
    fov_x: tuple[float, ...]
    source: str = ""
    position: tuple[tuple[float, float, float], ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.yaw)
        if n == 0 or any(len(x) != n for x in (self.pitch, self.roll, self.fov_x)):
            raise ValueError(
                f"camera path: yaw/pitch/roll/fov_x need the same non-zero length, got "
                f"{len(self.yaw)}/{len(self.pitch)}/{len(self.roll)}/{len(self.fov_x)}"
            )
        for name in ("yaw", "pitch", "roll", "fov_x"):
            _floats(getattr(self, name), name)
        lo, hi = (math.radians(v) for v in FOV_RANGE_DEG)
        bad = [f for f in self.fov_x if not lo <= f <= hi]
        if bad:
            raise ValueError(f"camera path: fov_x must lie in {FOV_RANGE_DEG} degrees, got {math.degrees(bad[0]):.2f}")
        if self.position is not None:
            if len(self.position) != n or any(len(p) != 3 for p in self.position):
                raise ValueError(f"camera path: position needs one (x, y, z) per frame ({n}), got {len(self.position)}")
            for p in self.position:
                _floats(p, "position")

    # ------------------------------------------------------------------ reading

    @property
    def num_frames(self) -> int:
        return len(self.yaw)

    @property
    def has_position(self) -> bool:
        return self.position is not None

    def tensors(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(yaw, pitch, roll, fov_x), each (T,) radians."""
        return tuple(torch.tensor(v, device=device, dtype=dtype) for v in (self.yaw, self.pitch, self.roll, self.fov_x))

    def positions(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """(T, 3) camera positions, pack world axes (zeros when the path has none)."""
        if self.position is None:
            return torch.zeros(self.num_frames, 3, device=device, dtype=dtype)
        return torch.tensor(self.position, device=device, dtype=dtype)

    def rotations(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """(T, 3, 3) camera-to-world rotations, pack axes."""
        yaw, pitch, roll, _ = self.tensors(device, dtype)
        return rotation_matrix(yaw, pitch, roll)

    def camera_to_world(self, device=None, dtype=torch.float64, opencv: bool = False) -> torch.Tensor:
        """(T, 4, 4) camera-to-world matrices; ``opencv=True`` gives OpenCV axes (y down)."""
        rot = self.rotations(device, dtype)
        pos = self.positions(device, dtype)
        if opencv:
            rot = flip_camera_y(rot)
            pos = pos * pos.new_tensor([1.0, -1.0, 1.0])
        out = torch.zeros(self.num_frames, 4, 4, device=device, dtype=dtype)
        out[:, :3, :3] = rot
        out[:, :3, 3] = pos
        out[:, 3, 3] = 1.0
        return out

    # ------------------------------------------------------------------ new paths

    def fit_to(self, num_frames: int) -> "CameraPath":
        """This path for a video of ``num_frames`` frames: cut, or the last pose held (as Argus
        repeats the last frame when a video runs out)."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        idx = [min(i, self.num_frames - 1) for i in range(num_frames)]
        if num_frames > self.num_frames:
            log.info("camera path: %d poses for %d frames; holding the last pose", self.num_frames, num_frames)
        return self.select(idx)

    def select(self, frames) -> "CameraPath":
        """The poses of the given frame indices, in that order."""
        idx = [int(i) for i in frames]
        if not idx or any(not 0 <= i < self.num_frames for i in idx):
            raise ValueError(f"frames must be indices in 0..{self.num_frames - 1}, got {idx[:8]}")
        pick = lambda v: tuple(v[i] for i in idx)  # noqa: E731
        position = None if self.position is None else pick(self.position)
        return CameraPath(pick(self.yaw), pick(self.pitch), pick(self.roll), pick(self.fov_x), self.source, position)

    def offset(self, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> "CameraPath":
        """Every angle shifted (radians); Argus's ``yaw_start``."""
        return CameraPath(
            tuple(v + yaw for v in self.yaw), tuple(v + pitch for v in self.pitch),
            tuple(v + roll for v in self.roll), self.fov_x, self.source, self.position,
        )

    def relative_to_first(self) -> "CameraPath":
        """The same cameras seen from frame 0: frame 0 looks forward from the origin (what Argus
        expects; R_0ᵀ R_t and R_0ᵀ (p_t − p_0))."""
        rot = self.rotations()
        rel = rot[0].T @ rot
        ang = angles_from_rotation(rel)
        position = None
        if self.position is not None:
            pos = self.positions(dtype=torch.float64)
            position = ((pos - pos[0]) @ rot[0]).tolist()
        return path_from_arrays(ang[:, 0], ang[:, 1], ang[:, 2], self.fov_x, self.source, position)

    # ------------------------------------------------------------------ text

    def to_text(self) -> str:
        """One line per frame: ``t yaw pitch roll fov`` in degrees (and ``x y z`` when the path
        has positions), for display."""
        head = "# frame yaw_deg pitch_deg roll_deg fov_x_deg" + (" x y z" if self.position is not None else "")
        rows = [head]
        for t in range(self.num_frames):
            vals = (self.yaw[t], self.pitch[t], self.roll[t], self.fov_x[t])
            row = f"{t} " + " ".join(f"{math.degrees(v):.3f}" for v in vals)
            if self.position is not None:
                row += " " + " ".join(f"{v:.4f}" for v in self.position[t])
            rows.append(row)
        return "\n".join(rows)


def path_from_arrays(yaw, pitch, roll, fov_x, source: str = "", position=None) -> CameraPath:
    """A :class:`CameraPath` from array-likes (radians; ``fov_x`` one value or one per frame;
    ``position`` None or ``(T, 3)``)."""
    as_t = lambda a: tuple(float(x) for x in np.asarray(a, dtype=np.float64).reshape(-1))  # noqa: E731
    yaw = as_t(yaw)
    fov = np.broadcast_to(np.asarray(fov_x, dtype=np.float64), (len(yaw),))
    pos = None
    if position is not None:
        pos = tuple(tuple(float(v) for v in row) for row in np.asarray(position, dtype=np.float64).reshape(-1, 3))
    return CameraPath(yaw, as_t(pitch), as_t(roll), as_t(fov), source, pos)


# --------------------------------------------------------------------------------------------
# OpenCV camera-to-world poses (MegaSaM, RealEstate10K, COLMAP-style sources)
# --------------------------------------------------------------------------------------------


def _zyx_angles(M: np.ndarray) -> np.ndarray:
    """(…, 3, 3) -> (…, 3) a, b, c with M = R_z(a) · R_y(b) · R_x(c).

    At b = ±90° (gimbal lock) a and c turn about the same axis; like Argus's
    ``rotation_matrix_to_euler`` (src/rotation2euler.py) a is set to 0 and the combined
    angle goes into c, so the angles rebuild M there too.
    """
    b = np.arctan2(-M[..., 2, 0], np.hypot(M[..., 0, 0], M[..., 1, 0]))
    a = np.arctan2(M[..., 1, 0], M[..., 0, 0])
    c = np.arctan2(M[..., 2, 1], M[..., 2, 2])
    locked = np.hypot(M[..., 0, 0], M[..., 1, 0]) < 16 * np.finfo(np.float64).eps
    if np.any(locked):
        # With a = 0: M = R_y(b) R_x(c); row 0 is (cos b, sin b sin c, sin b cos c).
        s = np.sign(-M[..., 2, 0])
        c_locked = np.arctan2(s * M[..., 0, 1], s * M[..., 0, 2])
        a = np.where(locked, 0.0, a)
        c = np.where(locked, c_locked, c)
    return np.stack([a, b, c], axis=-1)


def _argus_order(M: np.ndarray) -> np.ndarray:
    a, b, c = np.moveaxis(_zyx_angles(M), -1, 0)
    return np.stack([-a, -b, -c], axis=-1)  # (yaw, pitch, roll)


def angles_from_opencv_c2w(c2w, mode: PoseConversion = "exact", relative: bool = True) -> np.ndarray:
    """OpenCV camera-to-world rotations -> per-frame (yaw, pitch, roll), radians, pack convention.

    c2w: (T, 3, 3) or (T, 4, 4) (translation ignored), camera axes x right, y down, z forward.
    relative: angles of R_0ᵀ·R_t, so frame 0 is (0, 0, 0) (Argus); False reads each rotation in
    the source's world frame (its y axis flipped to point up).

    mode "argus" reproduces ``inference.py`` / ``src/rotation2euler.py``: R_rel = R_iᵀ·R_0,
    M = Pᵀ·R_rel·P, M read as Z-Y-X Euler angles, all three negated.  M equals
    R_x(−roll)·R_y(−pitch)·R_z(−yaw) in Argus's axes, so the Z-Y-X reading is exact for
    rotations about one axis and only a first-order approximation when several angles are
    combined (tests/cameras/test_camera_path.py measures the gap).  mode "exact" (default) reads
    the rotation in the pack's own Euler order and is exact.
    """
    c2w = np.asarray(c2w, dtype=np.float64)[..., :3, :3]
    if c2w.ndim != 3 or c2w.shape[0] < 1:
        raise ValueError(f"c2w: expected (T, 3, 3) or (T, 4, 4), got {c2w.shape}")
    if not np.isfinite(c2w).all():
        raise ValueError("c2w: poses must be finite numbers")
    R0 = c2w[0] if relative else np.eye(3)
    if mode == "argus":
        M = _ARGUS_P.T @ (np.swapaxes(c2w, -1, -2) @ R0) @ _ARGUS_P
        return _argus_order(M)
    if mode != "exact":
        raise ValueError(f"mode must be 'exact' or 'argus', got {mode!r}")
    rel = R0.T @ c2w  # camera_t -> camera_0 (or world), OpenCV axes
    return angles_from_rotation(flip_camera_y(torch.from_numpy(rel))).numpy()


def path_from_opencv_c2w(c2w, fov_x, mode: PoseConversion = "exact", source: str = "c2w",
                         relative: bool = True) -> CameraPath:
    """CameraPath from OpenCV camera-to-world poses; fov_x radians (one or per frame).

    (T, 4, 4) poses also give positions (pack axes: y flipped; relative to frame 0's camera
    when ``relative``)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    ang = angles_from_opencv_c2w(c2w, mode, relative)
    position = None
    if c2w.shape[-2:] == (4, 4):
        t = c2w[:, :3, 3] * np.array([1.0, -1.0, 1.0])
        if relative:
            r0 = flip_camera_y(torch.from_numpy(c2w[0, :3, :3])).numpy()
            t = (t - t[0]) @ r0
        position = t
    return path_from_arrays(ang[:, 0], ang[:, 1], ang[:, 2], fov_x, source, position)
