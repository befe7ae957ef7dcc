"""Trajectories, keyframes and rendering a path over a panorama: closed-form values at known frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pano360.cameras import EASINGS, Keyframe, keyframe_path, parse_keyframes, render_path, yaw_sweep


def deg(values) -> list[float]:
    return [math.degrees(v) for v in values]


def test_looping_yaw_sweep_steps_evenly_and_leaves_out_the_end_pose():
    path = yaw_sweep(8, start_yaw=-30.0, total_yaw=360.0, pitch=10.0, fov=75.0)
    assert deg(path.yaw) == pytest.approx([-30.0 + 45.0 * i for i in range(8)])
    assert deg(path.pitch) == pytest.approx([10.0] * 8) and deg(path.fov_x) == pytest.approx([75.0] * 8)


def test_non_looping_sweep_ends_on_the_end_pose():
    path = yaw_sweep(5, start_yaw=0.0, total_yaw=-90.0, loop=False)
    assert deg(path.yaw) == pytest.approx([0.0, -22.5, -45.0, -67.5, -90.0])


@pytest.mark.parametrize("name", sorted(EASINGS))
def test_easings_start_at_zero_and_end_at_one(name):
    assert EASINGS[name](0.0) == 0.0 and EASINGS[name](1.0) == pytest.approx(1.0)


def test_keyframes_are_hit_exactly_and_eased_between():
    keys = [Keyframe(2, yaw=0.0, pitch=0.0, fov=90.0), Keyframe(6, yaw=180.0, pitch=40.0, fov=50.0)]
    path = keyframe_path(keys, 9, easing="ease_in_out")
    yaw, pitch, fov = deg(path.yaw), deg(path.pitch), deg(path.fov_x)
    assert yaw[:3] == [0.0, 0.0, 0.0]  # held before the first keyframe
    assert (yaw[6], pitch[6], fov[6]) == pytest.approx((180.0, 40.0, 50.0))
    assert yaw[7:] == pytest.approx([180.0, 180.0])  # held after the last
    # smoothstep(0.5) = 0.5, smoothstep(0.25) = 0.15625
    assert yaw[4] == pytest.approx(90.0) and pitch[4] == pytest.approx(20.0)
    assert yaw[3] == pytest.approx(180.0 * 0.15625)
    assert fov[3] == pytest.approx(90.0 - 40.0 * 0.15625)


def test_keyframe_yaw_is_interpolated_as_given_not_the_short_way():
    path = keyframe_path([Keyframe(0, yaw=350.0), Keyframe(2, yaw=10.0)], 3, easing="linear")
    assert deg(path.yaw) == pytest.approx((350.0, 180.0, 10.0))


def test_keyframes_must_increase():
    with pytest.raises(ValueError, match="increasing"):
        keyframe_path([Keyframe(3, yaw=0.0), Keyframe(1, yaw=0.0)], 5)


def test_parse_keyframes_lines_semicolons_and_comments():
    text = """# frame: name=value
    0: yaw=0
    12: yaw=90, pitch=-10   # turn right, look down
    24: yaw=180, pitch=0, fov=60; 30: roll=5
    """
    assert parse_keyframes(text) == [Keyframe(0, yaw=0.0), Keyframe(12, yaw=90.0, pitch=-10.0),
                                     Keyframe(24, yaw=180.0, pitch=0.0, fov=60.0), Keyframe(30, roll=5.0)]


def test_each_name_is_interpolated_between_the_keyframes_that_set_it():
    path = keyframe_path("0: yaw=0, fov=60; 10: yaw=100; 20: fov=80", 21)
    assert deg(path.yaw)[5] == pytest.approx(50.0) and deg(path.yaw)[20] == pytest.approx(100.0)
    assert deg(path.fov_x)[10] == pytest.approx(70.0)
    assert not path.has_position
    moving = keyframe_path("0: z=0; 4: z=2, x=1", 5)
    assert moving.position[2] == pytest.approx((1.0, 0.0, 1.0))  # x is held before its only keyframe


@pytest.mark.parametrize("text, message", [
    ("0: yaw=0\n5: yaw=x", "line 2: yaw='x' is not a number"),
    ("0 yaw=3", "line 1: .* is not 'frame: name=value"),
    ("0, 0, 0, 90", "positional 'frame, yaw, pitch, fov' form is no longer read"),
    ("1.5: yaw=0", "line 1"),
    ("0: pitch=120", "pitch must be in"),
    ("0: yaw=nan", "finite"),
    ("0: yaw=1; 0: yaw=2", "yaw is set twice for frame 0"),
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
    assert torch.allclose(yaw, torch.tensor(path.yaw))
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
        kw = view_to_py360convert(View(math.degrees(path.yaw[t]), 15.0, 0.0, 80.0, 32, 24))
        ref = py360convert.e2p(src, **kw, mode="bilinear")
        assert np.abs(out[t].permute(1, 2, 0).numpy() - ref).mean() < ORACLE_TOL


@pytest.mark.skipif(not _projection_available(), reason="projection.erp_to_perspective not merged yet (branch proj)")
def test_video_frame_t_is_seen_by_camera_t():
    from _projection_fixtures import smooth_erp

    video = smooth_erp(32, frames=3)
    path = yaw_sweep(3, start_yaw=10.0, total_yaw=90.0)
    out = render_path(video, path, (8, 8), chunk=2)
    for t in range(3):
        single = render_path(video[t : t + 1], yaw_sweep(1, start_yaw=math.degrees(path.yaw[t])), (8, 8))
        torch.testing.assert_close(out[t : t + 1], single)
