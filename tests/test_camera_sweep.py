"""Camera paths for the perspective sweep: closed-form values at known frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pano360.pipelines.sweep import (
    EASINGS,
    Keyframe,
    keyframe_path,
    parse_keyframes,
    render_path,
    yaw_sweep,
)


def test_looping_yaw_sweep_steps_evenly_and_leaves_out_the_end_pose():
    path = yaw_sweep(8, start_yaw=-30.0, total_yaw=360.0, pitch=10.0, fov=75.0)
    assert path.yaw == pytest.approx([-30.0 + 45.0 * i for i in range(8)])
    assert path.pitch == (10.0,) * 8 and path.fov == (75.0,) * 8


def test_non_looping_sweep_ends_on_the_end_pose():
    path = yaw_sweep(5, start_yaw=0.0, total_yaw=-90.0, loop=False)
    assert path.yaw == pytest.approx([0.0, -22.5, -45.0, -67.5, -90.0])


@pytest.mark.parametrize("name", sorted(EASINGS))
def test_easings_start_at_zero_and_end_at_one(name):
    assert EASINGS[name](0.0) == 0.0 and EASINGS[name](1.0) == pytest.approx(1.0)


def test_keyframes_are_hit_exactly_and_eased_between():
    keys = [Keyframe(2, 0.0, 0.0, 90.0), Keyframe(6, 180.0, 40.0, 50.0)]
    path = keyframe_path(keys, 9, easing="ease_in_out")
    assert path.yaw[:3] == (0.0, 0.0, 0.0)  # held before the first keyframe
    assert (path.yaw[6], path.pitch[6], path.fov[6]) == (180.0, 40.0, 50.0)
    assert path.yaw[7:] == (180.0, 180.0)  # held after the last
    # smoothstep(0.5) = 0.5, smoothstep(0.25) = 0.15625
    assert path.yaw[4] == pytest.approx(90.0) and path.pitch[4] == pytest.approx(20.0)
    assert path.yaw[3] == pytest.approx(180.0 * 0.15625)
    assert path.fov[3] == pytest.approx(90.0 - 40.0 * 0.15625)


def test_keyframe_yaw_is_interpolated_as_given_not_the_short_way():
    path = keyframe_path([Keyframe(0, 350.0), Keyframe(2, 10.0)], 3, easing="linear")
    assert path.yaw == pytest.approx((350.0, 180.0, 10.0))


def test_keyframes_must_increase():
    with pytest.raises(ValueError, match="increasing"):
        keyframe_path([Keyframe(3, 0.0), Keyframe(1, 0.0)], 5)


def test_parse_keyframes_text_and_json():
    text = """# frame, yaw, pitch, fov
    0, 0
    12 90 -10   # turn right, look down
    24, 180, 0, 60
    """
    assert parse_keyframes(text) == [Keyframe(0, 0.0), Keyframe(12, 90.0, -10.0), Keyframe(24, 180.0, 0.0, 60.0)]
    js = '[{"frame": 0, "yaw": 0}, {"frame": 5, "yaw": -45, "pitch": 5, "fov": 100}]'
    assert parse_keyframes(js) == [Keyframe(0, 0.0), Keyframe(5, -45.0, 5.0, 100.0)]


@pytest.mark.parametrize("text, message", [
    ("0, 0\n5, x", "line 2: not a number"),
    ("0, 0, 0, 0, 0", "line 1: expected"),
    ("1.5, 0", "frame must be an integer"),
    ("0, 0, 120", "pitch must be in"),
    ("", "empty"),
])
def test_parse_keyframes_errors_name_the_line(text, message):
    with pytest.raises(ValueError, match=message):
        parse_keyframes(text)


def test_render_path_passes_radians_and_reuses_a_still():
    calls = []

    def fake_sampler(erp, yaw, pitch, roll, fov, out_hw):
        calls.append((erp.shape[0], yaw.clone(), pitch.clone(), roll.clone(), fov.clone(), out_hw))
        return torch.zeros(erp.shape[0], erp.shape[1], *out_hw)

    path = yaw_sweep(5, start_yaw=90.0, total_yaw=-180.0, pitch=30.0, fov=60.0)
    out = render_path(torch.rand(1, 3, 8, 16), path, (6, 10), chunk=2, sampler=fake_sampler)
    assert out.shape == (5, 3, 6, 10)
    assert [c[0] for c in calls] == [2, 2, 1]
    yaw = torch.cat([c[1] for c in calls])
    assert torch.allclose(yaw, torch.tensor(path.yaw) * math.pi / 180)
    assert torch.allclose(torch.cat([c[2] for c in calls]), torch.full((5,), math.pi / 6))
    assert torch.allclose(torch.cat([c[4] for c in calls]), torch.full((5,), math.pi / 3))
    assert torch.cat([c[3] for c in calls]).abs().max() == 0


def test_render_path_rejects_mismatched_video_length():
    with pytest.raises(ValueError, match="expected 1 .* or 4"):
        render_path(torch.rand(3, 3, 8, 16), yaw_sweep(4), (4, 4), sampler=lambda *a: None)


def _projection_available() -> bool:
    try:
        from pano360.projection import erp_to_perspective  # noqa: F401
    except ImportError:
        return False
    return True


# Same oracle tolerance as the projection tests (issue 2: mean abs difference on smooth panoramas).
ORACLE_TOL = 1e-3


@pytest.mark.skipif(not _projection_available(), reason="projection.erp_to_perspective not merged yet (branch proj)")
def test_rendered_sweep_matches_py360convert():
    py360convert = pytest.importorskip("py360convert")
    from _projection_fixtures import smooth_erp
    from pano360.projection import View
    from pano360.projection.conventions import view_to_py360convert

    erp = smooth_erp(128)  # (1, C, 128, 256)
    path = yaw_sweep(4, start_yaw=-60.0, total_yaw=240.0, pitch=15.0, fov=80.0)
    out = render_path(erp, path, (24, 32), chunk=3)
    src = erp[0].permute(1, 2, 0).numpy()
    for t in range(4):
        kw = view_to_py360convert(View(path.yaw[t], 15.0, 0.0, 80.0, 32, 24))
        ref = py360convert.e2p(src, **kw, mode="bilinear")
        assert np.abs(out[t].permute(1, 2, 0).numpy() - ref).mean() < ORACLE_TOL


@pytest.mark.skipif(not _projection_available(), reason="projection.erp_to_perspective not merged yet (branch proj)")
def test_video_frame_t_is_seen_by_camera_t():
    from _projection_fixtures import smooth_erp

    video = smooth_erp(32, frames=3)
    path = yaw_sweep(3, start_yaw=10.0, total_yaw=90.0)
    out = render_path(video, path, (8, 8), chunk=2)
    for t in range(3):
        single = render_path(video[t : t + 1], yaw_sweep(1, start_yaw=path.yaw[t]), (8, 8))
        torch.testing.assert_close(out[t : t + 1], single)
