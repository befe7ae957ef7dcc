"""Rendering a camera path over an equirect image or video as a flat perspective video.

For platforms without 360° support: a virtual pinhole camera follows a
:class:`.path.CameraPath` (yaw, pitch, roll, horizontal FOV per frame, radians) around the
panorama.  Camera positions are ignored (a panorama is seen from its centre).

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import torch

from ..sampling.types import ProgressCallback, report
from .path import CameraPath

__all__ = ["render_path"]


def render_path(erp: torch.Tensor, path: CameraPath, out_hw: tuple[int, int], *, chunk: int = 8,
                callback: ProgressCallback | None = None, sampler=None) -> torch.Tensor:
    """Render ``path`` over ``erp`` (image or video) as perspective frames.

    erp: (T, C, H, W) equirect frames; T == 1 (a still, reused for every frame) or
        T == path.num_frames (a video, frame t seen by camera t).
    out_hw: (h, w) of the output frames.  chunk: frames sampled per call (bounds memory).
    callback(done, total): after each chunk (progress/interrupt).
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
    yaw, pitch, roll, fov = path.tensors(erp.device, erp.dtype)
    out = []
    chunks = -(-n // chunk)
    for step, start in enumerate(range(0, n, chunk)):
        sl = slice(start, min(start + chunk, n))
        k = sl.stop - sl.start
        src = erp.expand(k, -1, -1, -1) if erp.shape[0] == 1 else erp[sl]
        out.append(sampler(src, yaw[sl], pitch[sl], roll[sl], fov[sl], tuple(out_hw)))
        report(callback, step + 1, chunks)
    return torch.cat(out, 0)
