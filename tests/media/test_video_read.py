"""Reading frames back from an MP4 (media.video.read_frames / count_frames)."""

from __future__ import annotations

import numpy as np
import pytest

from pano360.media.video import count_frames, read_frames, write_mp4

# H.264 yuv420p at crf 0 keeps flat grey frames to within a code value or two.
GREY_TOL = 3


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    """12 flat grey frames 16x32, frame k at level 20 k."""
    frames = np.stack([np.full((16, 32, 3), 20 * k, np.uint8) for k in range(12)])
    return write_mp4(frames, tmp_path_factory.mktemp("video") / "ramp.mp4", fps=8, crf=0)


def test_frames_come_back_in_the_order_asked(ramp):
    assert count_frames(ramp) == 12
    got = read_frames(ramp, [5, 0, 5, 11])
    assert got.shape == (4, 16, 32, 3) and got.dtype == np.uint8
    assert np.abs(got.mean(axis=(1, 2, 3)) - np.array([100, 0, 100, 220])).max() <= GREY_TOL


def test_reading_past_the_end_names_the_file(ramp):
    with pytest.raises(ValueError, match=r"ramp\.mp4.*frame 12.*has 12"):
        read_frames(ramp, [0, 12])
    with pytest.raises(ValueError, match="indices"):
        read_frames(ramp, [])
