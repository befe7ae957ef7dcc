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

__all__ = ["render_path", "render_peak_bytes", "CHUNK_BYTES_PER_PIXEL"]

# Working memory of one chunk beyond the output it fills, in bytes per output pixel of the
# chunk: erp_to_perspective's rays, grid and gathered samples (float32).  Measured on the 2-core
# CPU, torch 2.13, 1280x720 from a 1024x2048 panorama: 28 B/px for a lone chunk of 8 frames
# (40 B/px with its 12 B/px output), 9 B/px over 96 frames (benchmarks/sweep_memory.py, where
# freed chunks are reused); rounded up for other shapes, modes and allocators.
CHUNK_BYTES_PER_PIXEL = 64


def render_peak_bytes(num_frames: int, out_hw: tuple[int, int], channels: int, chunk: int = 8,
                      element_bytes: int = 4) -> int:
    """Peak memory :func:`render_path` adds when it fills a preallocated ``out``: the output
    itself plus one chunk's working memory (:data:`CHUNK_BYTES_PER_PIXEL`).  The input is
    not counted (the caller holds it already)."""
    pixels = out_hw[0] * out_hw[1]
    return num_frames * pixels * channels * element_bytes + min(chunk, num_frames) * pixels * CHUNK_BYTES_PER_PIXEL


def render_path(erp: torch.Tensor, path: CameraPath, out_hw: tuple[int, int], *, chunk: int = 8,
                callback: ProgressCallback | None = None, sampler=None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Render ``path`` over ``erp`` (image or video) as perspective frames.

    erp: (T, C, H, W) equirect frames; T == 1 (a still, reused for every frame) or
        T == path.num_frames (a video, frame t seen by camera t).
    out_hw: (h, w) of the output frames.  chunk: frames sampled per call (bounds memory).
    callback(done, total): after each chunk (progress/interrupt).
    sampler: ``erp_to_perspective``-compatible function (default: the projection library's).
    out: optional destination (path.num_frames, C, h, w), any memory layout (e.g. a channels-last
        view of a ComfyUI IMAGE): each chunk is written into it as it is rendered, so the peak
        is the output plus one chunk (:func:`render_peak_bytes`) instead of twice the output.
    Returns (path.num_frames, C, h, w) on erp's device and dtype (``out`` when given).
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
    expected = (n, erp.shape[1], *out_hw)
    if out is not None and tuple(out.shape) != expected:
        raise ValueError(f"out must have shape {list(expected)}, got {list(out.shape)}")
    yaw, pitch, roll, fov = path.tensors(erp.device, erp.dtype)
    parts = []
    chunks = -(-n // chunk)
    for step, start in enumerate(range(0, n, chunk)):
        sl = slice(start, min(start + chunk, n))
        k = sl.stop - sl.start
        src = erp.expand(k, -1, -1, -1) if erp.shape[0] == 1 else erp[sl]
        frames = sampler(src, yaw[sl], pitch[sl], roll[sl], fov[sl], tuple(out_hw))
        if out is None:
            parts.append(frames)
        else:
            out[sl].copy_(frames)
        del frames
        report(callback, step + 1, chunks)
    return out if out is not None else torch.cat(parts, 0)
