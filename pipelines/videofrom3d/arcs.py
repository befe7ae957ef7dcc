"""VideoFrom3D's arc layout: how a camera path is cut into arcs, and the official ``arc{k}/`` folders.

An arc is one inbetweening interval (ant-arktis/VideoFrom3D ``assets/readme.md``; spec §2e–f):
46 frames, consecutive arcs sharing their boundary frame, so arc ``k`` holds global frames
``45k … 45k + 45`` (0-based; files are numbered 1-based, ``arc1/hed/0046.png`` … ``0091.png``).
Per arc, the official preprocessing writes

- ``hed/NNNN.png``: 8-bit RGB soft-edge maps of all 46 frames (1080×720 in the sample);
- ``corres/NNNN.png``: 12 16-bit correspondence maps (360×240), one per CogVideoX latent frame
  after the first, at arc frames ``⌊i·45/12⌋`` (i = 1…12: 4, 8, 12, 16, 19, …), each mapping that
  frame onto the previous sampled frame (they drive the noise warping);
- ``corres_end.png``: the arc's last frame mapped onto its first (it drives SAG's warp);
- ``noises.npy``: (13, 60, 90, 16) float32 warped noise, F H W C (``mk_noise.py``);
- ``normal/NNNN.png`` (optional): the line-art renders HED was computed from.

:func:`read_arcs` reads such a folder as it is; :func:`write_arcs` writes one (atomically: the
folder appears only when complete).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ...media.atomic import atomic_folder
from .correspondence import read_correspondence_png, write_correspondence_png

__all__ = [
    "ARC_FRAMES",
    "LATENT_FRAMES",
    "NOISE_SHAPE",
    "Arc",
    "sampled_offsets",
    "arc_count",
    "arc_frame_range",
    "read_arcs",
    "write_arcs",
    "resample_hed",
]

ARC_FRAMES = 46  # frames per arc, boundary shared (assets/readme.md: "each interval generates 46 frames")
LATENT_FRAMES = 13  # CogVideoX latent frames of a 49-frame clip; 1 + 12 correspondence maps per arc
NOISE_SHAPE = (LATENT_FRAMES, 60, 90, 16)  # noises.npy: F, H/8, W/8, C for 480x720
_NUMBERED = re.compile(r"^(\d+)\.png$")


def sampled_offsets(frames: int = ARC_FRAMES, samples: int = LATENT_FRAMES) -> list[int]:
    """Arc-relative indices of the frames sampled for the latent grid: ``⌊i·(frames−1)/(samples−1)⌋``
    (the official arcs' ``corres/`` numbering: 0, 3, 7, 11, 15, 18, … 45 for 46 frames)."""
    return [(i * (frames - 1)) // (samples - 1) for i in range(samples)]


def arc_count(num_frames: int, frames_per_arc: int = ARC_FRAMES) -> int:
    """Arcs covering a path of ``num_frames`` frames; ValueError unless it is ``45·k + 1``."""
    step = frames_per_arc - 1
    if num_frames < frames_per_arc or (num_frames - 1) % step:
        raise ValueError(
            f"a VideoFrom3D path needs {step}·k + 1 frames (k arcs of {frames_per_arc} frames sharing their "
            f"boundary frames: 46, 91, 136, ...), got {num_frames}"
        )
    return (num_frames - 1) // step


def arc_frame_range(k: int, frames_per_arc: int = ARC_FRAMES) -> range:
    """Global 0-based frame indices of arc ``k``."""
    start = k * (frames_per_arc - 1)
    return range(start, start + frames_per_arc)


@dataclass(frozen=True)
class Arc:
    """One arc folder's contents.

    hed: (N, H, W, 3) float 0..1 edge maps, ``hed_frames`` their 1-based file numbers.
    corres: (M, h, w, 3) int32 colour codes, ``corres_frames`` their numbers.  corres_end: (h, w, 3)
    int32 or None.  noises: (13, 60, 90, 16) float32 (F H W C, as saved) or None.
    normal: (N, H, W, 3) float or None, with ``normal_frames``.
    """

    hed: Tensor
    hed_frames: tuple[int, ...]
    corres: Tensor | None = None
    corres_frames: tuple[int, ...] = ()
    corres_end: Tensor | None = None
    noises: Tensor | None = None
    normal: Tensor | None = None
    normal_frames: tuple[int, ...] = field(default=())


def _numbered_pngs(folder: str) -> list[tuple[int, str]]:
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = _NUMBERED.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found)


def _read_rgb8(path: str) -> Tensor:
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).float() / 255.0


def _read_stack(folder: str) -> tuple[Tensor | None, tuple[int, ...]]:
    files = _numbered_pngs(folder)
    if not files:
        return None, ()
    images = [_read_rgb8(p) for _, p in files]
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) != 1:
        raise ValueError(f"{folder}: images of different sizes {sorted(sizes)}")
    return torch.stack(images), tuple(n for n, _ in files)


def read_arcs(root: str | os.PathLike) -> list[Arc]:
    """Read ``root/arc0``, ``arc1``, … (consecutive, from 0) as they are.

    Raises ValueError naming the folder when there is no ``arc0/hed`` or an arc lacks edge maps,
    or when ``noises.npy`` does not have the official shape.
    """
    root = os.fspath(root)
    arcs = []
    k = 0
    while os.path.isdir(os.path.join(root, f"arc{k}")):
        folder = os.path.join(root, f"arc{k}")
        hed, hed_frames = _read_stack(os.path.join(folder, "hed"))
        if hed is None:
            raise ValueError(f"{folder}: no hed/NNNN.png edge maps (run the preprocessing first)")
        corres_files = _numbered_pngs(os.path.join(folder, "corres"))
        corres = torch.stack([read_correspondence_png(p) for _, p in corres_files]) if corres_files else None
        end_path = os.path.join(folder, "corres_end.png")
        corres_end = read_correspondence_png(end_path) if os.path.isfile(end_path) else None
        noise_path = os.path.join(folder, "noises.npy")
        noises = None
        if os.path.isfile(noise_path):
            arr = np.load(noise_path, allow_pickle=False)
            if arr.ndim != 4 or arr.shape[0] != LATENT_FRAMES:
                raise ValueError(f"{noise_path}: expected ({LATENT_FRAMES}, H, W, C) warped noise, got {arr.shape}")
            noises = torch.from_numpy(arr.astype(np.float32))
        normal, normal_frames = _read_stack(os.path.join(folder, "normal"))
        arcs.append(Arc(hed, hed_frames, corres, tuple(n for n, _ in corres_files), corres_end, noises, normal,
                        normal_frames))
        k += 1
    if not arcs:
        raise ValueError(f"{root}: no arc0/ folder (expected VideoFrom3D's arc0/, arc1/, ... layout)")
    return arcs


def _write_rgb8(path: str, image: Tensor) -> None:
    from PIL import Image

    arr = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    Image.fromarray(arr, "RGB").save(path)


def write_arcs(root: str | os.PathLike, arcs: list[Arc]) -> None:
    """Write arcs in the official layout under ``root`` (which must not exist yet; the folder appears
    only when complete, ``media.atomic.atomic_folder``)."""
    with atomic_folder(root) as tmp:
        for k, arc in enumerate(arcs):
            folder = os.path.join(tmp, f"arc{k}")
            for sub, images, numbers in (("hed", arc.hed, arc.hed_frames), ("normal", arc.normal, arc.normal_frames)):
                if images is None:
                    continue
                os.makedirs(os.path.join(folder, sub))
                for n, image in zip(numbers, images):
                    _write_rgb8(os.path.join(folder, sub, f"{n:04d}.png"), image)
            if arc.corres is not None:
                os.makedirs(os.path.join(folder, "corres"))
                for n, code in zip(arc.corres_frames, arc.corres):
                    write_correspondence_png(os.path.join(folder, "corres", f"{n:04d}.png"), code)
            if arc.corres_end is not None:
                write_correspondence_png(os.path.join(folder, "corres_end.png"), arc.corres_end)
            if arc.noises is not None:
                np.save(os.path.join(folder, "noises.npy"), arc.noises.detach().cpu().float().numpy())


def resample_hed(frames: Tensor, length: int) -> Tensor:
    """Nearest-index resampling of a frame list to ``length`` frames (``rp.resize_list``, used by
    ``ggi.py`` to fit an arc's edge maps to 46 frames): index ``round(i·(n−1)/(length−1))`` with
    Python's half-to-even rounding, so the first and last frames are kept."""
    n = frames.shape[0]
    step = (n - 1) / (length - 1) if n > 1 and length > 1 else 0.0
    return frames[[round(i * step) for i in range(length)]]


def fit_path_to_arcs(path, arcs: int, frames_per_arc: int = ARC_FRAMES):
    """A camera path resampled to ``(frames_per_arc − 1)·arcs + 1`` frames, linearly in time (angles
    unwrapped, positions and FOV linear), so it splits into ``arcs`` VideoFrom3D arcs.

    path: a ``cameras.CameraPath`` with positions.  Returns a new ``CameraPath``.
    """
    from ...cameras import path_from_arrays

    if arcs < 1:
        raise ValueError(f"arcs must be >= 1, got {arcs}")
    if not path.has_position:
        raise ValueError("camera path: VideoFrom3D needs camera positions (x, y, z per frame)")
    n = (frames_per_arc - 1) * arcs + 1
    src = torch.linspace(0, path.num_frames - 1, n, dtype=torch.float64)
    lo = src.floor().long().clamp(max=path.num_frames - 1)
    hi = (lo + 1).clamp(max=path.num_frames - 1)
    w = (src - lo)[:, None]
    yaw, pitch, roll, fov = (t.double() for t in path.tensors(dtype=torch.float64))
    ang = torch.stack([yaw, pitch, roll, fov], 1)
    ang[:, :3] = torch.from_numpy(np.unwrap(ang[:, :3].numpy(), axis=0))
    vals = ang[lo] * (1 - w) + ang[hi] * w
    pos = path.positions(dtype=torch.float64)
    p = pos[lo] * (1 - w) + pos[hi] * w
    return path_from_arrays(vals[:, 0], vals[:, 1], vals[:, 2], vals[:, 3], path.source, p.numpy())
