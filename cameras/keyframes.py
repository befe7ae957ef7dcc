"""The keyframe text users type, for every camera path in the pack.

Grammar: entries ``frame: name=value, name=value`` separated by ``;`` or new lines; ``#``
starts a comment.  Names: ``yaw``, ``pitch``, ``roll``, ``fov`` in degrees (docs/conventions.md:
+yaw right, +pitch up, +roll clockwise; fov horizontal) and ``x``, ``y``, ``z``, the camera
position in world units (pack axes: x right, y up, z forward).  Example::

    0: yaw=0, pitch=0, fov=90
    24: yaw=90; 48: yaw=180, pitch=-20

Each name is interpolated on its own between the keyframes that set it, with an easing per
segment (:data:`.trajectories.EASINGS`), held before its first and after its last keyframe;
a name no keyframe sets stays 0 (fov: the caller's default).  Angles are interpolated as given
(0 -> 360 is a full turn to the right; 350 -> 10 turns 340° left), so the user picks the way.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

import numpy as np

from .path import DEFAULT_FOV_DEG, FOV_RANGE_DEG, CameraPath, path_from_arrays
from .trajectories import EASINGS, Easing

__all__ = ["KEYFRAME_NAMES", "Keyframe", "parse_keyframes", "keyframe_path"]

KEYFRAME_NAMES = ("yaw", "pitch", "roll", "fov", "x", "y", "z")
PITCH_RANGE_DEG = (-90.0, 90.0)
_ENTRY = re.compile(r"(\d+)\s*:\s*(.*)", re.S)
EXAMPLE = "0: yaw=0, pitch=0, fov=90; 24: yaw=90"


@dataclass(frozen=True)
class Keyframe:
    """The values set at ``frame`` (0-based); None = not set here.  Degrees / world units."""

    frame: int
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    fov: float | None = None
    x: float | None = None
    y: float | None = None
    z: float | None = None

    def __post_init__(self):
        if isinstance(self.frame, bool) or int(self.frame) != self.frame or self.frame < 0:
            raise ValueError(f"keyframes: frame must be an integer >= 0, got {self.frame!r}")
        for f in fields(self)[1:]:
            v = getattr(self, f.name)
            if v is None:
                continue
            if not math.isfinite(v):
                raise ValueError(f"keyframes: {f.name} at frame {self.frame} must be a finite number, got {v}")
        if self.pitch is not None and not PITCH_RANGE_DEG[0] <= self.pitch <= PITCH_RANGE_DEG[1]:
            raise ValueError(f"keyframes: pitch must be in [-90, 90] degrees, got {self.pitch} at frame {self.frame}")
        if self.fov is not None and not FOV_RANGE_DEG[0] <= self.fov <= FOV_RANGE_DEG[1]:
            raise ValueError(f"keyframes: fov must be in [{FOV_RANGE_DEG[0]:g}, {FOV_RANGE_DEG[1]:g}] degrees, "
                             f"got {self.fov} at frame {self.frame}")

    def values(self) -> dict[str, float]:
        return {n: getattr(self, n) for n in KEYFRAME_NAMES if getattr(self, n) is not None}


def _entries(text: str):
    """(line number, entry text) of every non-empty entry."""
    for n, line in enumerate(text.splitlines(), 1):
        for part in line.split("#", 1)[0].split(";"):
            if part.strip():
                yield n, part.strip()


def parse_keyframes(text: str) -> list[Keyframe]:
    """Keyframes from the text grammar of this module, sorted by frame.  Errors name the line.

    A frame may appear in several entries as long as no name is set twice for it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"keyframes: empty text; expected entries like '{EXAMPLE}'")
    merged: dict[int, dict[str, float]] = {}
    for n, entry in _entries(text):
        m = _ENTRY.fullmatch(entry)
        if m is None:
            hint = ""
            if re.fullmatch(r"[-+\d.eE\s,]+", entry):
                hint = " (the positional 'frame, yaw, pitch, fov' form is no longer read: write 'frame: yaw=…, pitch=…')"
            raise ValueError(f"keyframes line {n}: {entry!r} is not 'frame: name=value, ...'{hint}; e.g. '{EXAMPLE}'")
        frame = int(m.group(1))
        values = merged.setdefault(frame, {})
        for item in filter(None, (i.strip() for i in m.group(2).split(","))):
            name, eq, value = (s.strip() for s in item.partition("="))
            if not eq or name not in KEYFRAME_NAMES:
                raise ValueError(f"keyframes line {n}: unknown name {name!r} in {entry!r}; use {', '.join(KEYFRAME_NAMES)}")
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"keyframes line {n}: {name}={value!r} is not a number") from None
            if name in values:
                raise ValueError(f"keyframes line {n}: {name} is set twice for frame {frame}")
            values[name] = number
    try:
        return [Keyframe(frame, **values) for frame, values in sorted(merged.items())]
    except ValueError:
        raise
    except TypeError as err:  # pragma: no cover - names are checked above
        raise ValueError(f"keyframes: {err}") from None


def _interpolate(points: list[tuple[int, float]], num_frames: int, ease) -> np.ndarray:
    """Values at frames 0..num_frames-1 from sorted (frame, value) points, eased per segment."""
    frames = np.array([f for f, _ in points], dtype=np.float64)
    values = np.array([v for _, v in points], dtype=np.float64)
    t = np.arange(num_frames, dtype=np.float64)
    out = np.empty(num_frames)
    for i, ti in enumerate(t):
        k = int(np.searchsorted(frames, ti, side="right"))
        if k == 0:
            out[i] = values[0]
        elif k == len(frames):
            out[i] = values[-1]
        else:
            a, b = frames[k - 1], frames[k]
            s = ease((ti - a) / (b - a))
            out[i] = values[k - 1] + (values[k] - values[k - 1]) * s
    return out


def keyframe_path(keyframes, num_frames: int, *, easing: Easing = "linear",
                  fov_deg: float = DEFAULT_FOV_DEG, source: str = "keyframes") -> CameraPath:
    """A :class:`CameraPath` of ``num_frames`` frames from keyframes (a list of
    :class:`Keyframe` or the text of :func:`parse_keyframes`).

    easing: applied to every segment of every name.  fov_deg: the FOV where no keyframe sets
    one.  Positions are part of the path only when some keyframe sets x, y or z.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if easing not in EASINGS:
        raise ValueError(f"easing must be one of {sorted(EASINGS)}, got {easing!r}")
    keys = parse_keyframes(keyframes) if isinstance(keyframes, str) else list(keyframes)
    if not keys:
        raise ValueError("keyframes: at least one keyframe is needed, got none")
    frames = [k.frame for k in keys]
    if frames != sorted(set(frames)):
        raise ValueError(f"keyframes must have increasing, distinct frame numbers, got {frames}")
    ease = EASINGS[easing]
    out = {}
    for name in KEYFRAME_NAMES:
        pts = [(k.frame, getattr(k, name)) for k in keys if getattr(k, name) is not None]
        default = fov_deg if name == "fov" else 0.0
        out[name] = _interpolate(pts, num_frames, ease) if pts else np.full(num_frames, default)
    has_position = any(getattr(k, n) is not None for k in keys for n in ("x", "y", "z"))
    position = np.stack([out["x"], out["y"], out["z"]], -1) if has_position else None
    rad = {k: np.radians(out[k]) for k in ("yaw", "pitch", "roll", "fov")}
    return path_from_arrays(rad["yaw"], rad["pitch"], rad["roll"], rad["fov"], source, position)
