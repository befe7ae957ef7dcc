"""Camera paths over an equirect image or video, rendered as a flat perspective video.

For platforms without 360° support: a virtual pinhole camera looks around the
panorama, either sweeping in yaw or moving between keyframes of yaw/pitch/FOV.

Angles are in DEGREES here (the path is user data; the projection library takes
radians) and follow docs/conventions.md: yaw 0 looks at the equirect centre column,
+yaw turns right, +pitch looks up; FOV is horizontal.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

__all__ = ["EASINGS", "Keyframe", "CameraPath", "yaw_sweep", "keyframe_path", "parse_keyframes", "render_path"]

Easing = Literal["linear", "ease_in_out", "ease_in", "ease_out"]

# Easing curves on [0, 1]: the cubic "smoothstep" and its halves (standard Hermite forms).
EASINGS: dict[str, Callable[[float], float]] = {
    "linear": lambda s: s,
    "ease_in_out": lambda s: s * s * (3.0 - 2.0 * s),
    "ease_in": lambda s: s * s * s,
    "ease_out": lambda s: 1.0 - (1.0 - s) ** 3,
}

FOV_RANGE = (1.0, 179.0)  # a pinhole camera's horizontal FOV, degrees, exclusive of 0 and 180
PITCH_RANGE = (-90.0, 90.0)


@dataclass(frozen=True)
class Keyframe:
    """Camera at frame ``frame`` (0-based): yaw, pitch, horizontal FOV in degrees."""

    frame: int
    yaw: float
    pitch: float = 0.0
    fov: float = 90.0

    def __post_init__(self):
        if self.frame < 0:
            raise ValueError(f"keyframe frame must be >= 0, got {self.frame}")
        if not PITCH_RANGE[0] <= self.pitch <= PITCH_RANGE[1]:
            raise ValueError(f"keyframe pitch must be in [-90, 90] degrees, got {self.pitch}")
        if not FOV_RANGE[0] <= self.fov <= FOV_RANGE[1]:
            raise ValueError(f"keyframe fov must be in [{FOV_RANGE[0]}, {FOV_RANGE[1]}] degrees, got {self.fov}")


@dataclass(frozen=True)
class CameraPath:
    """Per-frame camera angles in degrees, each a tuple of length ``num_frames``."""

    yaw: tuple[float, ...]
    pitch: tuple[float, ...]
    fov: tuple[float, ...]

    @property
    def num_frames(self) -> int:
        return len(self.yaw)


def yaw_sweep(num_frames: int, start_yaw: float = 0.0, total_yaw: float = 360.0, pitch: float = 0.0,
              fov: float = 90.0, easing: Easing = "linear", loop: bool = True) -> CameraPath:
    """Turn from ``start_yaw`` by ``total_yaw`` degrees (positive = to the right).

    loop=True leaves out the end pose (frame ``num_frames`` would equal frame 0 for a full
    turn), so the video loops without a repeated frame; loop=False ends exactly on it.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if easing not in EASINGS:
        raise ValueError(f"easing must be one of {sorted(EASINGS)}, got {easing!r}")
    Keyframe(0, start_yaw, pitch, fov)  # validates pitch and fov
    steps = num_frames if loop else max(num_frames - 1, 1)
    ease = EASINGS[easing]
    yaw = tuple(start_yaw + total_yaw * ease(i / steps) for i in range(num_frames))
    return CameraPath(yaw, (float(pitch),) * num_frames, (float(fov),) * num_frames)


def keyframe_path(keyframes: Sequence[Keyframe], num_frames: int, easing: Easing = "ease_in_out") -> CameraPath:
    """Interpolate keyframes (sorted by frame, distinct frames) with an easing per segment.

    Yaw is interpolated as given (0 -> 360 is a full turn to the right; 350 -> 10 turns
    340° left), so the user decides the direction.  Frames before the first keyframe
    hold its pose, frames after the last hold the last pose.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not keyframes:
        raise ValueError("keyframes must hold at least one keyframe, got none")
    if easing not in EASINGS:
        raise ValueError(f"easing must be one of {sorted(EASINGS)}, got {easing!r}")
    frames = [k.frame for k in keyframes]
    if frames != sorted(set(frames)):
        raise ValueError(f"keyframes must have increasing, distinct frame numbers, got {frames}")
    ease = EASINGS[easing]
    yaw, pitch, fov = [], [], []
    for t in range(num_frames):
        nxt = next((i for i, k in enumerate(keyframes) if k.frame >= t), None)
        if nxt is None:
            a = b = keyframes[-1]
        elif nxt == 0:
            a = b = keyframes[0]
        else:
            a, b = keyframes[nxt - 1], keyframes[nxt]
        s = 0.0 if a is b else ease((t - a.frame) / (b.frame - a.frame))
        yaw.append(a.yaw + (b.yaw - a.yaw) * s)
        pitch.append(a.pitch + (b.pitch - a.pitch) * s)
        fov.append(a.fov + (b.fov - a.fov) * s)
    return CameraPath(tuple(yaw), tuple(pitch), tuple(fov))


def parse_keyframes(text: str) -> list[Keyframe]:
    """Keyframes from text: one ``frame, yaw, pitch, fov`` per line (pitch and fov
    optional; commas or spaces; ``#`` starts a comment), or a JSON list of objects
    ``{"frame", "yaw", "pitch", "fov"}``.  Errors name the line."""
    text = text.strip()
    if not text:
        raise ValueError("keyframes: empty text; expected lines 'frame, yaw, pitch, fov'")
    if text.startswith("["):
        try:
            items = json.loads(text)
            return [Keyframe(int(d["frame"]), float(d["yaw"]), float(d.get("pitch", 0.0)), float(d.get("fov", 90.0)))
                    for d in items]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"keyframes: bad JSON keyframe list: {e}") from e
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in re.split(r"[,\s]+", line) if p]
        if not 2 <= len(parts) <= 4:
            raise ValueError(f"keyframes line {n}: expected 'frame, yaw[, pitch[, fov]]', got {line!r}")
        try:
            frame, *angles = float(parts[0]), *map(float, parts[1:])
        except ValueError as e:
            raise ValueError(f"keyframes line {n}: not a number in {line!r}") from e
        if frame != int(frame):
            raise ValueError(f"keyframes line {n}: frame must be an integer, got {parts[0]}")
        out.append(Keyframe(int(frame), *angles))
    return out


def render_path(erp: torch.Tensor, path: CameraPath, out_hw: tuple[int, int], *, chunk: int = 8,
                callback: Callable[[int], None] | None = None, sampler=None) -> torch.Tensor:
    """Render ``path`` over ``erp`` (image or video) as perspective frames.

    erp: (T, C, H, W) equirect frames; T == 1 (a still, reused for every frame) or
        T == path.num_frames (a video, frame t seen by camera t).
    out_hw: (h, w) of the output frames.  chunk: frames sampled per call (bounds memory).
    callback(step): called after each chunk with the chunk index (progress/interrupt).
    sampler: ``erp_to_perspective``-compatible function (default: the projection library's).
    Returns (path.num_frames, C, h, w) on erp's device and dtype.
    """
    if sampler is None:
        from ..projection import erp_to_perspective as sampler
    if erp.ndim != 4:
        raise ValueError(f"erp must be (T, C, H, W), got shape {list(erp.shape)}")
    n = path.num_frames
    if erp.shape[0] not in (1, n):
        raise ValueError(f"erp has {erp.shape[0]} frames; expected 1 (a still) or {n} (one per path frame)")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    deg = math.pi / 180.0
    opts = {"device": erp.device, "dtype": erp.dtype}
    yaw = torch.tensor(path.yaw, **opts) * deg
    pitch = torch.tensor(path.pitch, **opts) * deg
    fov = torch.tensor(path.fov, **opts) * deg
    out = []
    for step, start in enumerate(range(0, n, chunk)):
        sl = slice(start, min(start + chunk, n))
        k = sl.stop - sl.start
        src = erp.expand(k, -1, -1, -1) if erp.shape[0] == 1 else erp[sl]
        out.append(sampler(src, yaw[sl], pitch[sl], torch.zeros_like(yaw[sl]), fov[sl], tuple(out_hw)))
        if callback is not None:
            callback(step)
    return torch.cat(out, 0)
