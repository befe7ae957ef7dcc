"""Autoregressive window schedule (VideoPanda §3.3) and the window driver."""

import gc
import weakref

import pytest
import torch

from pano360.pipelines.videopanda.autoregressive import WindowSchedule, extend, window_mask, windows_for_frames
from pano360.sampling.fusion import LatentLayout


def test_paper_schedule_gives_61_frames():
    s = WindowSchedule()  # 16-frame windows, 1 carried frame, 4 windows
    assert s.total_frames == 16 + 3 * 15 == 61
    assert [s.span(k) for k in range(4)] == [(0, 16), (15, 31), (30, 46), (45, 61)]
    assert [s.new_frames(k) for k in range(4)] == [(0, 16), (16, 31), (31, 46), (46, 61)]
    assert windows_for_frames(61) == 4 and windows_for_frames(62) == 5 and windows_for_frames(16) == 1
    with pytest.raises(ValueError, match="overlap must be in 0..window-1 = 0..15, got 16"):
        WindowSchedule(overlap=16)


def test_window_masks_give_row_and_column():
    s = WindowSchedule()
    m0 = window_mask(s, 0, 8, column_view=2)
    assert m0[2].all() and m0.sum() == 16  # Fig. 3b: the video's view only
    assert window_mask(s, 0, 8, column_view=None).sum() == 0  # text only
    m1 = window_mask(s, 1, 8, column_view=2)
    assert m1[:, 0].all() and m1[2].all() and m1.sum() == 8 + 15  # Fig. 3c
    m3 = window_mask(s, 3, 8, column_view=None)
    assert m3[:, 0].all() and m3.sum() == 8


def _driver_run(layout_video: bool):
    views, c, h, w = 3, 2, 4, 4
    s = WindowSchedule(window=5, overlap=1, windows=4)  # 5 + 3*4 = 17 frames
    shape = (views, c, s.window, h, w) if layout_video else (views * s.window, c, h, w)
    layout = LatentLayout.of(shape, views)
    video = torch.arange(s.total_frames, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, c, h, w) + 1000
    seen, refs = [], []

    def sample_window(latents, mask, k):
        # every earlier result must be gone: only its copy in the CPU buffer survives
        assert all(r() is None for r in refs), "driver kept a window result alive"
        cells = layout.to_cells(latents)
        seen.append((k, tuple(latents.shape), mask.clone(), cells.clone()))
        start = s.span(k)[0]
        out = cells.clone()
        for v in range(views):
            for t in range(s.window):
                if mask[v, t] == 0:
                    out[v, t] = 100 * (k + 1) + 10 * v + (start + t) / 100  # window, view, frame
        res = layout.from_cells(out)
        refs.append(weakref.ref(res))
        return res

    progress = []
    out = extend(sample_window, s, layout, video=video, column_view=1, callback=lambda d, n: progress.append((d, n)))
    gc.collect()
    return s, layout, views, out, seen, progress, video


@pytest.mark.parametrize("video_layout", [False, True])
def test_extend_carries_the_last_row_and_the_video_column(video_layout):
    s, layout, views, out, seen, progress, video = _driver_run(video_layout)
    assert progress == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert {shape for _, shape, _, _ in seen} == {layout.shape}  # flat: same size every window
    total = LatentLayout.of(out.shape, views).to_cells(out)
    assert total.shape[1] == s.total_frames == 17 and out.device.type == "cpu"
    for k, _, mask, cells in seen:
        start, _ = s.span(k)
        assert torch.equal(mask, window_mask(s, k, views, 1))
        # the column holds the video's frames of this window
        assert torch.equal(cells[1], video[start : start + s.window])
        if k > 0:  # the row carried from the previous window's last frame
            assert torch.equal(cells[:, 0], total[:, start])
    # output: view 1 is the video; other frames come from the window that added them
    assert torch.equal(total[1], video[: s.total_frames])
    for f in range(s.total_frames):
        k = 0 if f < 5 else (f - 5) // 4 + 1
        assert total[0, f, 0, 0, 0] == pytest.approx(100 * (k + 1) + f / 100)


def test_extend_rejects_a_short_video():
    s = WindowSchedule()
    layout = LatentLayout.of((8 * 16, 4, 2, 2), 8)
    with pytest.raises(ValueError, match="T >= 61"):
        extend(lambda x, m, k: x, s, layout, video=torch.zeros(40, 4, 2, 2), column_view=0)


def test_extend_stops_between_windows_when_the_callback_raises():
    s = WindowSchedule(window=3, overlap=1, windows=4)
    layout = LatentLayout.of((2 * 3, 1, 2, 2), 2)
    done = []

    class Interrupted(Exception):
        pass

    def callback(finished, total):
        if finished == 2:
            raise Interrupted

    def sample_window(x, mask, k):
        done.append(k)
        return x

    with pytest.raises(Interrupted):
        extend(sample_window, s, layout, callback=callback)
    assert done == [0, 1]
