"""Training data for VideoPanda: random view×frame matrices rendered from equirect 360° videos.

A dataset is a folder of equirect videos (2:1, ``.mp4``/``.webm``/``.mov``/``.mkv``) with a
caption beside each (``<name>.txt``, UTF-8).  Every sample (VideoPanda §3.2):

* draws a matrix ``views × latent frames`` from a set (the paper's 3×16, 4×12, 6×8, 8×6,
  :data:`PAPER_MATRICES`: its "random matrix");
* draws the views: a random subset of the rig (``videopanda8``), the first a random side
  view (rays are relative to it), under a random yaw of the whole rig (360° videos have no
  preferred heading; relative rays do not change);
* draws ``(T - 1) * 4 + 1`` consecutive pixel frames (Wan's causal VAE turns them into ``T``
  latent frames) at ``frame_stride`` from a random start, and renders every view with the
  pack's projection (bilinear, ``projection.erp_to_rig``);
* draws the conditioning regime: text only, video column, autoregressive (§3.2, equal
  probability by default), and the column's view among the side views.

Randomness comes only from the generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ...media.video import read_frames
from ...projection import Rig, View, erp_to_rig

__all__ = [
    "PAPER_MATRICES",
    "REGIMES",
    "VIDEO_EXTENSIONS",
    "WAN_TEMPORAL_STRIDE",
    "Clip",
    "MatrixPlan",
    "scan_folder",
    "pixel_frames",
    "read_equirect_frames",
    "plan_sample",
    "regime_mask",
    "render_views",
    "subrig",
]

# VideoPanda §3.2: "view-frame matrices of varying sizes, such as 3x16, 4x12, 6x8, and 8x6".
PAPER_MATRICES: tuple[tuple[int, int], ...] = ((3, 16), (4, 12), (6, 8), (8, 6))
# VideoPanda §3.2 / Fig. 3: all zeros (text), first column (video), first row and column (autoregressive).
REGIMES = ("text", "column", "autoregressive")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv")
# Wan 2.1 VAE: 4x causal temporal compression, T pixel frames = (T' - 1) * 4 + 1 (Wan2.1 README: 81 frames -> 21).
WAN_TEMPORAL_STRIDE = 4
# A side view looks at the horizon (|pitch| < 45 deg, the half angle of a cube face).
_SIDE_PITCH = 45.0


@dataclass(frozen=True)
class Clip:
    path: Path
    caption: str


def scan_folder(root: str | Path) -> list[Clip]:
    """The videos of ``root`` (sorted) with their captions.  ValueError naming what is
    missing: no videos, or a video without ``<name>.txt``."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data folder {str(root)!r} does not exist")
    videos = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not videos:
        raise ValueError(f"data folder {str(root)!r} holds no videos ({', '.join(VIDEO_EXTENSIONS)})")
    missing = [p.name for p in videos if not p.with_suffix(".txt").is_file()]
    if missing:
        raise ValueError(f"data folder {str(root)!r}: no caption file (<name>.txt) for {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}")
    return [Clip(p, p.with_suffix(".txt").read_text(encoding="utf-8").strip()) for p in videos]


def pixel_frames(latent_frames: int) -> int:
    """Pixel frames that Wan's causal VAE encodes into ``latent_frames``."""
    if latent_frames < 1:
        raise ValueError(f"latent_frames must be >= 1, got {latent_frames}")
    return (latent_frames - 1) * WAN_TEMPORAL_STRIDE + 1


def read_equirect_frames(path: Path, indices: list[int]) -> np.ndarray:
    """Frames of an equirect video, uint8 ``(N, H, 2H, 3)``; ValueError if it is not 2:1."""
    frames = read_frames(path, indices)
    h, w = frames.shape[1:3]
    if w != 2 * h:
        raise ValueError(f"{path.name}: equirect videos are 2:1, got {w}x{h}")
    return frames


@dataclass(frozen=True)
class MatrixPlan:
    """One training sample's draws.  views: rig view indices (first = reference side view);
    yaw: rig rotation in degrees; frames: pixel frame indices to encode; skip: leading
    latent frames to drop after encoding; regime: one of :data:`REGIMES`; column: index into
    ``views`` of the given video view."""

    clip: int
    views: tuple[int, ...]
    yaw: float
    frames: tuple[int, ...]
    skip: int
    regime: str
    column: int

    @property
    def latent_frames(self) -> int:
        return (len(self.frames) - 1) // WAN_TEMPORAL_STRIDE + 1 - self.skip


def _side_views(rig: Rig) -> list[int]:
    return [i for i, v in enumerate(rig.views) if abs(v.pitch) < _SIDE_PITCH]


def plan_sample(rng: torch.Generator, clip_lengths: list[int], matrix: tuple[int, int], rig: Rig, *,
                frame_stride: int = 1, regime_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                regime: str | None = None) -> MatrixPlan:
    """Draw one :class:`MatrixPlan` for ``matrix = (views, latent frames)`` (``regime``: fixed
    instead of drawn).

    Autoregressive samples are cut from a longer encoding, one latent frame later: Wan's
    causal VAE codes the first frame of a video alone and every later latent frame from 4
    frames, and the row an autoregressive window carries is such a later latent frame (the
    last of the previous window), so training encodes ``T + 1`` latent frames and drops the
    first.
    """
    v, t = matrix
    if not 1 <= v <= rig.num_views:
        raise ValueError(f"matrix {matrix}: views must be in 1..{rig.num_views} (the rig's)")
    sides = _side_views(rig)
    if not sides:
        raise ValueError(f"rig {rig.name!r} has no side view (|pitch| < {_SIDE_PITCH:g})")
    weights = torch.tensor(regime_weights, dtype=torch.float64)
    if weights.shape != (3,) or torch.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"regime_weights must be 3 non-negative numbers, not all 0, got {regime_weights}")
    if v == 1:  # one view given at every frame leaves nothing to generate: a one-view matrix is text-only
        weights = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    drawn = REGIMES[int(torch.multinomial(weights, 1, generator=rng))]
    regime = drawn if regime is None else regime
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    skip = 1 if regime == "autoregressive" else 0
    count = pixel_frames(t + skip)
    span = (count - 1) * frame_stride + 1
    usable = [i for i, n in enumerate(clip_lengths) if n >= span]
    if not usable:
        raise ValueError(f"matrix {matrix} ({regime}) needs {span} frames at stride {frame_stride}; the longest "
                         f"video has {max(clip_lengths)}")
    clip = usable[int(torch.randint(len(usable), (1,), generator=rng))]
    first = sides[int(torch.randint(len(sides), (1,), generator=rng))]
    others = [i for i in range(rig.num_views) if i != first]
    order = torch.randperm(len(others), generator=rng).tolist()[: v - 1]
    views = (first, *[others[i] for i in order])
    yaw = float(torch.rand((), generator=rng)) * 360.0
    start = int(torch.randint(clip_lengths[clip] - span + 1, (1,), generator=rng))
    frames = tuple(start + k * frame_stride for k in range(count))
    side_in = [k for k, i in enumerate(views) if i in sides]
    column = side_in[int(torch.randint(len(side_in), (1,), generator=rng))]
    return MatrixPlan(clip, views, yaw, frames, skip, regime, column)


def regime_mask(regime: str, views: int, frames: int, column: int) -> Tensor:
    """The ``[views, frames]`` view mask of a regime (VideoPanda Fig. 3)."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    mask = torch.zeros(views, frames)
    if regime in ("column", "autoregressive"):
        mask[column] = 1.0
    if regime == "autoregressive":
        mask[:, 0] = 1.0
    return mask


def subrig(rig: Rig, views: tuple[int, ...], yaw: float, size: int) -> Rig:
    """The views ``views`` of ``rig``, turned by ``yaw`` degrees, at ``size``² pixels."""
    picked = []
    for i in views:
        src = rig.views[i]
        picked.append(View(math.remainder(src.yaw + yaw, 360.0), src.pitch, src.roll, src.fov, size, size))
    return Rig(f"{rig.name}[{','.join(map(str, views))}]", tuple(picked))


def render_views(frames: np.ndarray, rig: Rig) -> Tensor:
    """Render every view of ``rig`` from equirect frames uint8 ``(N, H, 2H, 3)``.

    Returns ``(V, 3, N, h, w)`` float32 in [-1, 1] (the VAE's range), per view a video.
    """
    erp = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    views = erp_to_rig(erp, rig)  # (V*N, 3, h, w), view-major
    n = frames.shape[0]
    views = views.reshape(rig.num_views, n, *views.shape[1:]).permute(0, 2, 1, 3, 4)
    return views.mul(2.0).sub(1.0).contiguous()

