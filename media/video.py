"""Minimal, atomic video writing (H.264 MP4 through imageio-ffmpeg's bundled ffmpeg), and reading frames.

A file appears under its final name only once it is complete (:mod:`.atomic`): frames go to
a temporary name in the same folder, which takes the final name on success and is deleted on
failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..sampling.types import ProgressCallback, report
from .atomic import atomic_path

__all__ = ["write_mp4", "read_frames", "count_frames", "DEFAULT_CRF"]

# libx264's constant-rate factor: 18 is visually lossless for most content (x264 docs,
# "--crf": 0 lossless, 23 default, 51 worst).
DEFAULT_CRF = 18


def _check_frames(frames) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {list(getattr(frames, 'shape', []))}"
        raise ValueError(f"frames: expected a uint8 array [T, H, W, 3], got {got}")
    t, h, w, _ = frames.shape
    if t < 1:
        raise ValueError("frames: expected at least one frame, got 0")
    if h % 2 or w % 2:
        raise ValueError(f"frames: H.264 yuv420p needs even width and height, got {w}x{h} (WxH)")
    return frames


def write_mp4(frames: np.ndarray, path, fps: float = 24.0, crf: int = DEFAULT_CRF, *,
              callback: ProgressCallback | None = None, replace: bool = False) -> Path:
    """Encode ``frames`` (uint8 ``[T, H, W, 3]`` RGB, even ``H`` and ``W``) as H.264 yuv420p.

    ``path`` is written atomically (:func:`.atomic.atomic_path`; an existing file is replaced
    only with ``replace``); returns it as a ``Path``.  ``callback(done, total)`` after each
    frame sent (progress; raising aborts, nothing is left).
    """
    import imageio_ffmpeg

    frames = _check_frames(frames)
    if not fps > 0:
        raise ValueError(f"fps: expected a positive frame rate, got {fps!r}")
    if isinstance(crf, bool) or int(crf) != crf or not 0 <= int(crf) <= 51:
        raise ValueError(f"crf: expected an integer in 0..51 (x264 constant-rate factor), got {crf!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    with atomic_path(path, ".partial.mp4", replace=replace) as tmp:
        writer = imageio_ffmpeg.write_frames(
            tmp, (w, h), fps=float(fps), codec="libx264", pix_fmt_out="yuv420p", quality=None,
            macro_block_size=1, output_params=["-crf", str(int(crf)), "-movflags", "+faststart"],
        )
        try:
            writer.send(None)  # start ffmpeg
            for i, frame in enumerate(frames):
                writer.send(np.ascontiguousarray(frame))
                report(callback, i + 1, t)
        finally:
            writer.close()
    return path


def count_frames(path) -> int:
    """Frames in a video file (ffmpeg decodes it once to count)."""
    import imageio_ffmpeg

    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return int(frames)


def read_frames(path, indices: list[int]) -> np.ndarray:
    """Frames ``indices`` (any order, repeats allowed) of a video as uint8 RGB ``[N, H, W, 3]``.

    Decodes from the start and stops after the last index wanted.  ValueError naming the file
    when the video is shorter.
    """
    import imageio_ffmpeg

    want = set(int(i) for i in indices)
    if not want or min(want) < 0:
        raise ValueError(f"indices: expected frame numbers >= 0, got {list(indices)[:4]}")
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    found: dict[int, np.ndarray] = {}
    pos = 0
    try:
        for raw in reader:
            if pos in want:
                found[pos] = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
                if len(found) == len(want):
                    break
            pos += 1
    finally:
        reader.close()
    if len(found) != len(want):
        raise ValueError(f"{Path(path).name}: needs frame {max(want)}, the video has {pos}")
    return np.stack([found[int(i)] for i in indices])
