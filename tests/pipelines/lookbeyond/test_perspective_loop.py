"""Look Beyond stage 2: loop cameras in RealEstate10K pose.txt format, frame folders.

References: the spec's closed-form pose (R_y(θ) rows, shared/specs/
lookbeyond-videopanda-diffpano.md §1e), panorama2cube's yaw list (linspace(180, −180, 12)),
the pack's direction formula at (lon, lat) (docs/conventions.md), and a re-implementation
of Look Beyond's own reader (`Camera`, `ray_condition` in dataset/realestate10K.py) whose
world rays must equal projection.view_rays under the documented axis flip.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

try:
    from pano360.projection import View, rig_preset, rotation_matrix, view_rays
except ImportError:  # until the projection core (branch proj) is merged
    pytest.skip("pano360.projection core not merged yet", allow_module_level=True)

from pano360.cameras import constant_path  # noqa: E402
from pano360.cameras.formats.realestate10k import format_rows, parse_rows, rows_from_path  # noqa: E402
from pano360.cameras.trajectories import interpolate, path_from_views  # noqa: E402
from pano360.media.atomic import next_free_folder  # noqa: E402
from pano360.pipelines.lookbeyond.perspective_loop import (  # noqa: E402
    POSE_HEADER,
    frame_name,
    loop_cameras,
    write_frame_folders,
)
from pano360.projection.geometry import OPENCV_FROM_PACK as _OPENCV_FROM_PACK  # noqa: E402
from pano360.projection.geometry import fov_centres_to_corners, flip_camera_y  # noqa: E402

OPENCV_FROM_PACK = torch.tensor(_OPENCV_FROM_PACK, dtype=torch.float64)


def camera_rows(views):
    """The pose rows of one camera per view (the loop's writer path)."""
    return rows_from_path(path_from_views(views), views[0].width, views[0].height)


def opencv_camera_to_world(yaw, pitch, roll):
    return flip_camera_y(rotation_matrix(yaw, pitch, roll))


def format_pose_txt(rows):
    return format_rows(rows, POSE_HEADER)


parse_pose_txt = parse_rows
# pose.txt holds 9 significant digits
FILE_TOL = 1e-8
# float64 rotations
EXACT_TOL = 1e-12


def spec_c2w(theta_deg: float) -> torch.Tensor:
    """The spec's derived c2w for a panorama2cube frame: rows [[c,0,s],[0,1,0],[-s,0,c]]."""
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)


def test_loop_preset_has_look_beyond_yaws():
    rig = rig_preset("lookbeyond_loop")
    assert [v.yaw for v in rig.views] == pytest.approx(np.linspace(180, -180, 12).tolist())
    # FOV 90 in Look Beyond's convention: border pixel centres on the frustum edges (issue 17)
    assert {(round(fov_centres_to_corners(v.fov, v.width), 9), v.pitch, v.width, v.height)
            for v in rig.views} == {(90.0, 0.0, 1024, 1024)}


def test_frame_zero_at_yaw_180_has_the_analytic_pose():
    rows = camera_rows(rig_preset("lookbeyond_loop").views)
    assert [r.frame_id for r in rows] == list(range(12))
    first = rows[0]
    # Look Beyond's 90-degree frame puts its border pixel CENTRES at +-tan 45 (linspace(-1, 1, W)):
    # focal (W - 1) / 2 pixels, principal point at the image centre (issue 17)
    w = 1024
    assert first.intrinsics == pytest.approx(((w - 1) / (2 * w), (w - 1) / (2 * w), 0.5, 0.5), rel=1e-12)
    expected = torch.tensor([[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 0]], dtype=torch.float64)
    torch.testing.assert_close(first.w2c_tensor(), expected, rtol=0, atol=EXACT_TOL)


def test_every_loop_pose_is_the_spec_rotation_about_y():
    views = rig_preset("lookbeyond_loop").views
    for view, row in zip(views, camera_rows(views)):
        w2c = row.w2c_tensor()
        torch.testing.assert_close(w2c[:, :3].T, spec_c2w(view.yaw), rtol=0, atol=EXACT_TOL)
        assert torch.all(w2c[:, 3] == 0)


def test_poses_are_orthonormal_rotations_for_random_angles():
    g = torch.Generator().manual_seed(0)
    yaw, pitch, roll = (torch.rand(64, generator=g, dtype=torch.float64) * 2 - 1) * torch.tensor(
        [[math.pi], [math.pi / 2], [math.pi]], dtype=torch.float64)
    r = opencv_camera_to_world(yaw, pitch, roll)
    eye = torch.eye(3, dtype=torch.float64).expand_as(r)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye, rtol=0, atol=EXACT_TOL)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(64, dtype=torch.float64), rtol=0, atol=EXACT_TOL)


def test_opencv_pose_is_the_pack_rotation_with_y_flipped():
    g = torch.Generator().manual_seed(1)
    yaw, pitch, roll = torch.rand(3, 16, generator=g, dtype=torch.float64) * 2 - 1
    flip = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(opencv_camera_to_world(yaw, pitch, roll),
                               flip @ rotation_matrix(yaw, pitch, roll) @ flip, rtol=0, atol=EXACT_TOL)
    torch.testing.assert_close(OPENCV_FROM_PACK, flip)
    # forward axis (third column) = the pack's direction at (lon=yaw, lat=pitch), y flipped
    forward = opencv_camera_to_world(yaw, pitch, roll)[..., :, 2]
    pack_dir = torch.stack([torch.cos(pitch) * torch.sin(yaw), torch.sin(pitch), torch.cos(pitch) * torch.cos(yaw)], -1)
    torch.testing.assert_close(forward, pack_dir @ flip, rtol=0, atol=EXACT_TOL)


def test_signs_yaw_right_pitch_up_in_opencv_axes():
    turn_right = opencv_camera_to_world(*torch.tensor([[0.3], [0.0], [0.0]], dtype=torch.float64))[0, :, 2]
    look_up = opencv_camera_to_world(*torch.tensor([[0.0], [0.3], [0.0]], dtype=torch.float64))[0, :, 2]
    assert turn_right[0] > 0     # forward moves to +x (right)
    assert look_up[1] < 0        # forward moves to -y (up, since OpenCV's y points down)


def look_beyond_world_rays(row, width: int, height: int) -> torch.Tensor:
    """Look Beyond's reader: K scaled by (W, H), c2w = inv(w2c), rays through pixel
    centres ((i + .5 − cx)/fx, (j + .5 − cy)/fy, 1) rotated to the world."""
    fx, fy, cx, cy = row.intrinsics
    fx, fy, cx, cy = fx * width, fy * height, cx * width, cy * height
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3] = row.w2c_tensor()
    c2w = torch.linalg.inv(w2c)
    j, i = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    d = torch.stack([(i + 0.5 - cx) / fx, (j + 0.5 - cy) / fy, torch.ones_like(i)], -1)
    d = d / d.norm(dim=-1, keepdim=True)
    return d @ c2w[:3, :3].T


@pytest.mark.parametrize("view", [View(-32.7, 0, 0, 90, 8, 8), View(40, 20, 10, 70, 12, 6), View(170, -35, -20, 100, 6, 10)])
def test_pose_file_rays_match_projection_view_rays(view):
    """End to end through the text file: what Look Beyond's reader computes from our
    pose.txt equals the pack's own rays for the same view (y flipped)."""
    from pano360.projection import Rig

    text = format_pose_txt(camera_rows([view]))
    row = parse_pose_txt(text)[0]
    ours = view_rays(Rig("one", (view,)), relative_to_first=False, dtype=torch.float64)[0]
    theirs = look_beyond_world_rays(row, view.width, view.height)
    torch.testing.assert_close(theirs, ours @ OPENCV_FROM_PACK, rtol=0, atol=FILE_TOL * 10)


def test_normalized_intrinsics_non_square():
    fx, fy, cx, cy = rows_from_path(constant_path(1, 60.0), 640, 320)[0].intrinsics
    f_px = 320 / math.tan(math.radians(30))
    assert (fx, fy, cx, cy) == pytest.approx((f_px / 640, f_px / 320, 0.5, 0.5))
    with pytest.raises(ValueError, match="fov"):
        rows_from_path(constant_path(1, 180.0), 8, 8)


def test_pose_txt_round_trip_and_layout():
    rows = camera_rows(rig_preset("lookbeyond_loop").views)
    text = format_pose_txt(rows)
    lines = text.splitlines()
    assert len(lines) == 13 and lines[0] and not lines[0][0].isdigit()   # a skipped header line
    tokens = lines[2].split()
    assert len(tokens) == 19 and tokens[0] == "1" and tokens[5:7] == ["0", "0"]
    back = parse_pose_txt(text)
    assert [r.frame_id for r in back] == list(range(12))
    for a, b in zip(rows, back):
        assert b.intrinsics == pytest.approx(a.intrinsics, abs=FILE_TOL)
        torch.testing.assert_close(b.w2c_tensor(), a.w2c_tensor(), rtol=0, atol=FILE_TOL)
    with pytest.raises(ValueError, match="line 2"):
        parse_pose_txt("header\n1 2 3\n")


def test_frame_ids_match_look_beyond_file_lookup():
    """videogen.py looks rows up by str(int(basename(frame)))."""
    ids, rows = loop_cameras(rig_preset("lookbeyond_loop", size=8).views)
    table = {line.split()[0] for line in format_pose_txt(rows).splitlines()[1:]}
    for fid in ids:
        assert str(int(os.path.splitext(frame_name(fid))[0])) in table
    assert frame_name(3) == "00003.png"


def test_interpolated_cameras_give_the_video_stage_enough_rows():
    views = rig_preset("lookbeyond_loop", size=8).views
    ids, rows = loop_cameras(views, between=12)
    assert ids == [13 * k for k in range(12)] and len(rows) == 11 * 13 + 1
    # 14 rows between consecutive keyframes (videogen.select_between_frames needs num_frames=14)
    assert sum(ids[0] <= r.frame_id <= ids[1] for r in rows) == 14
    # keyframes keep their exact pose; the midway camera turns half a step
    torch.testing.assert_close(rows[13].w2c_tensor()[:, :3].T, spec_c2w(views[1].yaw), rtol=0, atol=EXACT_TOL)
    mid = interpolate(path_from_views(views[:2]), 1).yaw[1]
    assert math.degrees(mid) == pytest.approx((views[0].yaw + views[1].yaw) / 2)


def test_write_frame_folders_is_all_or_nothing(tmp_path):
    frames = torch.rand(3, 4, 4, 3)
    text = format_pose_txt(camera_rows([View(0, 0, 0, 90, 4, 4)] * 3))
    folder = next_free_folder(str(tmp_path), "loop")
    assert os.path.basename(folder) == "loop_00001"
    written = write_frame_folders([folder], [frames], [0, 1, 2], text)
    assert sorted(os.listdir(written[0])) == ["00000.png", "00001.png", "00002.png", "pose.txt"]
    from PIL import Image

    png = np.asarray(Image.open(os.path.join(folder, "00001.png")))
    np.testing.assert_array_equal(png, (frames[1] * 255).round().to(torch.uint8).numpy())
    assert os.path.basename(next_free_folder(str(tmp_path), "loop")) == "loop_00002"

    # a failure in the second folder leaves no trace of either
    def cancel_at_fifth(done, total):
        if done == 5:
            raise KeyboardInterrupt("user cancelled")

    targets = [str(tmp_path / "a"), str(tmp_path / "b")]
    with pytest.raises(KeyboardInterrupt):
        write_frame_folders(targets, [frames, frames], [0, 1, 2], text, callback=cancel_at_fifth)
    assert sorted(os.listdir(tmp_path)) == ["loop_00001"]
    with pytest.raises(FileExistsError):
        write_frame_folders([folder], [frames], [0, 1, 2], text)
