"""Autoregressive windows over a view×frame grid (VideoPanda §3.3, Fig. 3c).

The first window generates ``window`` frames (16 in the paper) of every view, conditioned
on the input video's first frames at one view when a video is given (Fig. 3b) or on text
only.  Each next window generates ``window - overlap`` new frames (15), conditioned on the
previous window's last ``overlap`` frames of every view (the first row) and, when a video
is given, on the video's next frames at its view (the column).  Four windows give
16 + 3×15 = 61 frames (paper §4.6; the project page's long results have 61 frames).

Windows come from the pack's one planner (:func:`...sampling.windows.plan_windows`);
:class:`WindowSchedule` holds VideoPanda's parameters and :func:`window_mask` the view mask of a
window.  :func:`extend`
drives a per-window sampling callable and keeps only the current window on the
accelerator: finished frames are copied into one output buffer on the offload device, so
memory stays flat as windows are added.  Frames here are the latent grid's frames (pixel
frames for image models and SVD, latent frames for 5-D video latents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ...sampling.fusion import LatentLayout
from ...sampling.types import ProgressCallback, report
from ...sampling.windows import Window, plan_windows, total_frames, windows_for_frames as _windows_for

# VideoPanda §3.3 / §4.6: 16-frame windows, 1 frame carried, 4 windows -> 61 frames.
PAPER_WINDOW = 16
PAPER_OVERLAP = 1
PAPER_WINDOWS = 4

# (window latents in the model's layout, view mask [V, window], window index) -> latents
SampleWindowFn = Callable[[Tensor, Tensor, int], Tensor]

__all__ = [
    "PAPER_WINDOW",
    "PAPER_OVERLAP",
    "PAPER_WINDOWS",
    "WindowSchedule",
    "windows_for_frames",
    "window_mask",
    "extend",
]


@dataclass(frozen=True)
class WindowSchedule:
    """``windows`` windows of ``window`` frames, consecutive ones sharing ``overlap`` frames."""

    window: int = PAPER_WINDOW
    overlap: int = PAPER_OVERLAP
    windows: int = PAPER_WINDOWS

    def __post_init__(self):
        if self.window < 1 or self.windows < 1:
            raise ValueError(f"window and windows must be >= 1, got window={self.window}, windows={self.windows}")
        if not 0 <= self.overlap < self.window:
            raise ValueError(f"overlap must be in 0..window-1 = 0..{self.window - 1}, got {self.overlap}")
        if self.windows > 1 and self.overlap == 0:
            raise ValueError("overlap must be >= 1 when there is more than one window (nothing to carry)")

    @property
    def stride(self) -> int:
        return self.window - self.overlap

    @property
    def total_frames(self) -> int:
        return total_frames(self.window, self.overlap, self.windows)

    @property
    def plan(self) -> tuple[Window, ...]:
        """The windows, from the pack's one planner (all full: the total is a whole plan)."""
        return plan_windows(self.total_frames, self.window, self.overlap)

    def span(self, k: int) -> tuple[int, int]:
        """Frames ``[start, stop)`` of the output covered by window ``k``."""
        self._check(k)
        w = self.plan[k]
        return w.start, w.stop

    def new_frames(self, k: int) -> tuple[int, int]:
        """Frames ``[start, stop)`` that window ``k`` adds (all of window 0; after the carry later)."""
        self._check(k)
        w = self.plan[k]
        return w.new_start, w.stop

    def _check(self, k: int) -> None:
        if not 0 <= k < self.windows:
            raise ValueError(f"window index must be in 0..{self.windows - 1}, got {k}")


def windows_for_frames(total_frames: int, window: int = PAPER_WINDOW, overlap: int = PAPER_OVERLAP) -> int:
    """The fewest windows whose schedule covers ``total_frames`` frames."""
    return _windows_for(total_frames, window, overlap)


def window_mask(schedule: WindowSchedule, k: int, views: int, column_view: int | None) -> Tensor:
    """The ``[views, window]`` view mask of window ``k`` (1 = given).

    Window 0: the column (``column_view`` for every frame) when a video is given, else
    nothing.  Window k >= 1: the first ``overlap`` frames of every view (the row carried
    from window k-1) plus the column when a video is given.
    """
    schedule._check(k)
    if column_view is not None and not 0 <= column_view < views:
        raise ValueError(f"column_view must be in 0..{views - 1}, got {column_view}")
    mask = torch.zeros(views, schedule.window, dtype=torch.float32)
    if column_view is not None:
        mask[column_view] = 1.0
    if k > 0:
        mask[:, : schedule.overlap] = 1.0
    return mask


def extend(
    sample_window: SampleWindowFn,
    schedule: WindowSchedule,
    layout: LatentLayout,
    *,
    video: Tensor | None = None,
    column_view: int | None = None,
    device: torch.device | str = "cpu",
    offload_device: torch.device | str = "cpu",
    callback: ProgressCallback | None = None,
) -> Tensor:
    """Generate ``schedule.total_frames`` frames of every view window by window.

    sample_window(latents, mask, k) -> latents: samples one window; ``latents`` are in
    ``layout``'s format with ``layout.frames == schedule.window`` (given cells filled,
    others zero), ``mask`` is ``[V, window]`` (1 = given).  layout: one window's layout.
    video: ``(T, C, h, w)`` latent frames of the given view (T >= total_frames), or None
    for text only.  column_view: the view that shows ``video``.

    Returns the whole grid in ``layout``'s format with ``total_frames`` frames, on
    ``offload_device``.  Only the current window lives on ``device``; callback(done, total)
    runs before the first and after every window (raise from it to interrupt).
    """
    if layout.frames != schedule.window:
        raise ValueError(f"layout has {layout.frames} frames, the schedule's window is {schedule.window}")
    total, views = schedule.total_frames, layout.views
    cell = (layout.channels, layout.height, layout.width)
    if video is not None:
        if column_view is None:
            raise ValueError("column_view is required when a video is given")
        if video.ndim != 4 or tuple(video.shape[1:]) != cell or video.shape[0] < total:
            raise ValueError(
                f"video must be (T >= {total}, {cell[0]}, {cell[1]}, {cell[2]}) latent frames, "
                f"got {list(video.shape)}"
            )
    else:
        column_view = None
    out = torch.zeros(views, total, *cell, dtype=video.dtype if video is not None else torch.float32,
                      device=offload_device)
    report(callback, 0, schedule.windows)
    for k in range(schedule.windows):
        start, stop = schedule.span(k)
        mask = window_mask(schedule, k, views, column_view)
        cells = torch.zeros(views, schedule.window, *cell, dtype=out.dtype, device=device)
        if k > 0:
            cells[:, : schedule.overlap] = out[:, start : start + schedule.overlap].to(device)
        if column_view is not None:
            cells[column_view] = video[start:stop].to(device=device, dtype=out.dtype)
        result = sample_window(layout.from_cells(cells), mask, k)
        del cells
        if tuple(result.shape) != layout.shape:
            raise ValueError(f"sample_window returned shape {list(result.shape)}, expected {list(layout.shape)}")
        new_start, new_stop = schedule.new_frames(k)
        out[:, new_start:new_stop] = layout.to_cells(result)[:, new_start - start :].to(offload_device)
        del result
        report(callback, k + 1, schedule.windows)
    out_layout = LatentLayout(views, total, *cell, layout.video)
    return out_layout.from_cells(out)
