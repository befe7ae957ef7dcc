"""MP4 writing through the ffmpeg binary bundled with imageio-ffmpeg.

H.264 (libx264), yuv420p, so every browser and player decodes it.  The file appears
only when complete: frames go to a hidden temporary name in the target folder, which
is renamed on success and removed on failure.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import numpy as np

from .atomic_file import atomic_path

__all__ = ["write_mp4"]

log = logging.getLogger(__name__)

# x264's CRF scale (0 = lossless, 51 = worst); 18 is "visually lossless" per the x264/
# ffmpeg H.264 encoding guide (trac.ffmpeg.org/wiki/Encode/H.264).
CRF_RANGE = (0, 51)


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float, crf: int, *,
              callback: Callable[[int], None] | None = None) -> None:
    """Encode ``frames`` to an H.264 yuv420p MP4 at ``path``.

    frames: uint8 ``[T, H, W, 3]`` RGB with even H and W (yuv420p halves chroma).
    fps: frames per second (> 0).  crf: x264 constant rate factor in 0..51 (lower is better).
    callback(i): called after frame i was sent (progress; an exception aborts cleanly).
    Raises ValueError on bad arguments; on any failure no file is left at ``path``.
    """
    import imageio_ffmpeg

    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {list(getattr(frames, 'shape', []))}"
        raise ValueError(f"frames must be a uint8 array [T, H, W, 3], got {got}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise ValueError("frames must hold at least one frame, got 0")
    if h % 2 or w % 2:
        raise ValueError(f"frames: H.264 yuv420p needs even width and height, got {w}x{h}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not CRF_RANGE[0] <= int(crf) <= CRF_RANGE[1]:
        raise ValueError(f"crf must be in {CRF_RANGE[0]}..{CRF_RANGE[1]}, got {crf}")
    with atomic_path(path, ".mp4") as tmp:
        writer = imageio_ffmpeg.write_frames(
            tmp, (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(int(crf)), "-f", "mp4"],
        )
        writer.send(None)  # start ffmpeg
        try:
            for i, frame in enumerate(frames):
                writer.send(np.ascontiguousarray(frame))
                if callback is not None:
                    callback(i)
        finally:
            writer.close()
