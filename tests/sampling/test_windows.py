"""Argus long-video windows: bookkeeping against the frame counts of Argus's demo (25/45/65)."""

from __future__ import annotations

import pytest
import torch

from pano360.pipelines.argus.long_video import ARGUS_OVERLAP, ARGUS_WINDOW, generate_long_video
from pano360.sampling.windows import Window, crossfade_weights, join_latents, plan_windows, window_seed


@pytest.mark.parametrize(
    "n, expected",
    [
        (25, [(0, 25, 0)]),
        (45, [(0, 25, 0), (20, 45, 5)]),
        (65, [(0, 25, 0), (20, 45, 5), (40, 65, 5)]),
        (30, [(0, 25, 0), (20, 30, 5)]),
        (10, [(0, 10, 0)]),
    ],
)
def test_windows_for_argus_frame_counts(n, expected):
    windows = plan_windows(n, ARGUS_WINDOW, ARGUS_OVERLAP)
    assert [(w.start, w.stop, w.carried) for w in windows] == expected
    # frames covered once each, after removing the carried overlap
    assert sum(w.length - w.carried for w in windows) == n


def test_crossfade_goes_from_old_to_new_window():
    assert crossfade_weights(5).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_join_latents_crossfades_only_the_overlap():
    old = torch.zeros(25, 1, 1, 1)
    new = torch.ones(25, 1, 1, 1)
    joined = join_latents(old, new, 5)
    assert joined.shape[0] == 45
    assert joined[:20].eq(0).all() and joined[25:].eq(1).all()
    assert joined[20:25].flatten().tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("n", [25, 45, 65])
def test_long_video_conditions_each_window_on_previous_decoded_frames(n):
    cond = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 4, 8).clone() / 100
    mask = torch.ones(n, 1, 4, 8)
    frames = torch.zeros(n, 3, 2, 2)
    seen = []

    def sample(c, m, f, i):
        seen.append(c[:, 0, 0, 0].clone())
        return torch.full((c.shape[0], 4, 1, 1), float(i))

    def decode(lat):  # "decoded" frames say which window made them
        return torch.full((lat.shape[0], 3, 4, 8), 10.0 + lat[0, 0, 0, 0].item())

    out = generate_long_video(cond, mask, frames, sample, decode)
    assert out.shape == (n, 4, 1, 1)
    for i, c in enumerate(seen):
        w = plan_windows(n, ARGUS_WINDOW, ARGUS_OVERLAP)[i]
        if i == 0:
            assert torch.allclose(c, cond[: w.stop, 0, 0, 0])
        else:
            assert c[:5].eq(10.0 + i - 1).all()  # previous window's decoded frames
            assert torch.allclose(c[5:], cond[w.start + 5 : w.stop, 0, 0, 0])


def test_bad_window_arguments_are_named():
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(30, window=5, overlap=5)
    with pytest.raises(ValueError, match="num_frames"):
        plan_windows(0, ARGUS_WINDOW, ARGUS_OVERLAP)
    assert plan_windows(3, window=2, overlap=1) == (Window(0, 2, 0), Window(1, 3, 1))


def test_window_seeds_count_up_and_wrap_at_the_64_bit_seed_range():
    # ComfyUI seeds go up to 2**64 - 1; seed + i must stay a valid torch seed for every window.
    assert [window_seed(7, i) for i in range(3)] == [7, 8, 9]
    top = 0xFFFFFFFFFFFFFFFF
    assert [window_seed(top, i) for i in range(3)] == [top, 0, 1]
    for i in range(3):
        torch.Generator().manual_seed(window_seed(top, i))   # would raise "Overflow" for top + 1
