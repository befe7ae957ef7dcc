"""The scene rasteriser and its passes, against closed-form projections of boxes and planes."""

from __future__ import annotations

import math

import pytest
import torch

from pano360.pipelines.videofrom3d.correspondence import (
    decode_correspondence,
    encode_correspondence,
    flow_from_correspondence,
)
from pano360.pipelines.videofrom3d.mesh import Mesh, box_mesh, load_mesh, merge_meshes, quad_mesh
from pano360.cameras import path_from_arrays
from pano360.pipelines.videofrom3d.raster import clip_near, rasterize
from pano360.pipelines.videofrom3d.render import (
    EdgeSettings,
    forward_flow,
    line_art,
    normal_image,
    render_erp_gbuffer,
    render_gbuffer,
    reproject,
    soft_edges,
)

# Exact ray/plane hits in float64: agreement with closed form to rounding.
EXACT = 1e-9
HW = (48, 72)
FOV = math.radians(70)


def _cams(positions, yaw=0.0, pitch=0.0, fov=FOV):
    n = len(positions)
    return path_from_arrays([yaw] * n, [pitch] * n, [0.0] * n, fov, "test", positions)


def _focal(hw=HW, fov=FOV):
    return (hw[1] / 2) / math.tan(fov / 2)


def test_wall_depth_and_points_are_exact():
    d = 5.0
    wall = quad_mesh([[-20, -20, d], [20, -20, d], [20, 20, d], [-20, 20, d]])
    g = render_gbuffer(wall, _cams([[0, 0, 0]]), HW)
    assert bool(g.mask.all())
    assert float((g.depth - d).abs().max()) < EXACT
    f = _focal()
    j = torch.arange(HW[1], dtype=torch.float64) + 0.5
    i = torch.arange(HW[0], dtype=torch.float64) + 0.5
    x = (j - HW[1] / 2) / f * d
    y = -(i - HW[0] / 2) / f * d
    assert float((g.point[0, ..., 0] - x[None, :]).abs().max()) < EXACT
    assert float((g.point[0, ..., 1] - y[:, None]).abs().max()) < EXACT
    # normal faces the camera (-z world)
    assert torch.allclose(g.normal[0], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand_as(g.normal[0]))


def test_box_front_face_covers_exactly_the_pixels_whose_centres_project_inside():
    # box front face at z=4, x in [-1, 1.3], y in [-0.7, 0.9]: its image is a rectangle.
    box = box_mesh([-1.0, -0.7, 4.0], [1.3, 0.9, 6.0])
    g = render_gbuffer(box, _cams([[0, 0, 0]]), HW)
    f = _focal()
    u0, u1 = HW[1] / 2 + f * (-1.0) / 4, HW[1] / 2 + f * 1.3 / 4
    v0, v1 = HW[0] / 2 - f * 0.9 / 4, HW[0] / 2 + f * 0.7 / 4
    j = torch.arange(HW[1]) + 0.5
    i = torch.arange(HW[0]) + 0.5
    expect = ((j[None, :] > u0) & (j[None, :] < u1)) & ((i[:, None] > v0) & (i[:, None] < v1))
    assert torch.equal(g.mask[0], expect)
    assert float((g.depth[0][expect] - 4.0).abs().max()) < EXACT


def test_faces_behind_the_camera_are_clipped_and_the_ground_depth_is_exact():
    # a ground plane y = -1 under the camera, extending behind it
    ground = quad_mesh([[-50, -1, -50], [50, -1, -50], [50, -1, 50], [-50, -1, 50]])
    g = render_gbuffer(ground, _cams([[0, 0, 0]]), HW)
    f = _focal()
    i = torch.arange(HW[0], dtype=torch.float64) + 0.5
    ray_y = -(i - HW[0] / 2) / f  # camera-space y of the ray with z = 1
    below = ray_y < -1 / 50  # rows whose ray reaches the ground within the quad
    depth = 1.0 / -ray_y
    rows = g.depth[0, :, HW[1] // 2]
    assert bool(g.mask[0][below].all()) and not bool(g.mask[0][ray_y > 0].any())
    assert float((rows[below] - depth[below]).abs().max()) < 1e-6


def test_clip_near_keeps_the_part_in_front():
    tri = torch.tensor([[[0.0, 0.0, 2.0], [1.0, 0.0, -2.0], [0.0, 1.0, -2.0]]], dtype=torch.float64)
    pieces, src = clip_near(tri, 1.0)
    assert pieces.shape == (1, 3, 3) and src.tolist() == [0]
    assert float(pieces[..., 2].min()) >= 1.0 - 1e-12
    tri2 = torch.tensor([[[0.0, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, 1.0, -2.0]]], dtype=torch.float64)
    pieces, src = clip_near(tri2, 1.0)
    assert pieces.shape == (2, 3, 3) and src.tolist() == [0, 0]


def test_nearer_face_wins_the_depth_test():
    near = quad_mesh([[-1, -1, 3], [1, -1, 3], [1, 1, 3], [-1, 1, 3]])
    far = quad_mesh([[-9, -9, 8], [9, -9, 8], [9, 9, 8], [-9, 9, 8]])
    for mesh in (merge_meshes(near, far), merge_meshes(far, near)):
        g = render_gbuffer(mesh, _cams([[0, 0, 0]]), HW)
        centre = g.depth[0, HW[0] // 2, HW[1] // 2]
        assert abs(float(centre) - 3.0) < EXACT
        assert abs(float(g.depth[0, 0, 0]) - 8.0) < EXACT


def test_rasterize_on_chunks_equals_one_pass():
    box = box_mesh([-1.0, -0.7, 4.0], [1.3, 0.9, 6.0])
    screen = torch.tensor([[[3.2, 4.1, 2.0], [60.7, 9.3, 3.0], [20.5, 40.2, 5.0]],
                           [[10.0, 2.0, 1.5], [70.0, 30.0, 9.0], [5.0, 45.0, 1.0]]], dtype=torch.float64)
    f1, d1 = rasterize(screen, HW)
    f2, d2 = rasterize(screen, HW, chunk=97)
    assert torch.equal(f1, f2) and torch.equal(d1, d2)
    assert box.num_faces == 12


def test_correspondences_of_a_translated_wall_are_exact_and_survive_the_png_code():
    d, tx = 5.0, 0.4
    wall = quad_mesh([[-20, -20, d], [20, -20, d], [20, 20, d], [-20, 20, d]])
    cams = _cams([[tx, 0.0, 0.0], [0.0, 0.0, 0.0]])  # current view moved right of the reference
    g = render_gbuffer(wall, cams, HW)
    xy, valid = reproject(g.select(slice(0, 1)), cams.select([1]), g.select(slice(1, 2)))
    f = _focal()
    j = torch.arange(HW[1], dtype=torch.float64) + 0.5
    expect = j + f * tx / d  # the point seen at column j lies f*tx/d further right in the reference
    inside = expect < HW[1]
    assert torch.equal(valid[0], inside[None, :].expand(HW[0], -1))
    assert float((xy[0, ..., 0] - expect[None, :])[:, inside].abs().max()) < 1e-9
    # through the official 16-bit code: the decoded integer pixel holds the true position
    code = encode_correspondence(xy[0], valid[0], HW)
    x_ref, y_ref, ok = decode_correspondence(code)
    assert torch.equal(ok, valid[0])
    assert bool(((x_ref <= xy[0, ..., 0].floor() + 0) & (x_ref >= xy[0, ..., 0].floor() - 1))[ok].all())
    assert float((x_ref.double() + 0.5 - xy[0, ..., 0])[ok].abs().max()) <= 0.5 + 1e-3


def test_occluded_points_are_not_valid():
    wall = quad_mesh([[-20, -20, 6], [20, -20, 6], [20, 20, 6], [-20, 20, 6]])
    pillar = box_mesh([-0.3, -5, 3.0], [0.3, 5, 3.6])
    cams = _cams([[1.0, 0, 0], [0.0, 0, 0]])
    g = render_gbuffer(merge_meshes(wall, pillar), cams, HW)
    xy, valid = reproject(g.select(slice(0, 1)), cams.select([1]), g.select(slice(1, 2)))
    # wall points hidden behind the pillar from the reference view are invalid
    on_wall = g.face[0] < 2
    hidden = on_wall & (g.select(slice(1, 2)).face[0].flatten()[
        (xy[0, ..., 1].floor().clamp(0, HW[0] - 1).long() * HW[1]
         + xy[0, ..., 0].floor().clamp(0, HW[1] - 1).long()).flatten()].reshape(HW) >= 2)
    assert bool(hidden.any())
    assert not bool(valid[0][hidden].any())


def _colour(points: torch.Tensor) -> torch.Tensor:
    """A smooth colour of world points (any shape (..., 3))."""
    return torch.sin(1.3 * points[..., 0]) + torch.cos(0.7 * points[..., 1]) + 0.3 * points[..., 2]


def test_flow_carries_frame_t_onto_frame_t_plus_1():
    scene = merge_meshes(box_mesh([-1.0, -0.8, 4.0], [1.2, 0.9, 5.5]),
                         quad_mesh([[-30, -30, 9], [30, -30, 9], [30, 30, 9], [-30, 30, 9]]))
    cams = path_from_arrays([0.0, 0.05], [0.0, 0.02], [0.0, 0.0], FOV, "test", [[0, 0, 0], [0.3, 0.1, 0.2]])
    g = render_gbuffer(scene, cams, HW)
    flow, valid = forward_flow(g, cams)
    img = _colour(g.point)  # (2, H, W)
    # sample frame t+1 at the flowed positions (bilinear): equals frame t on covered pixels
    j = torch.arange(HW[1], dtype=torch.float64) + 0.5
    i = torch.arange(HW[0], dtype=torch.float64)[:, None] + 0.5
    x = j + flow[0, 0]
    y = i + flow[0, 1]
    grid = torch.stack([x / HW[1] * 2 - 1, y / HW[0] * 2 - 1], -1)[None]
    warped = torch.nn.functional.grid_sample(img[1][None, None], grid, align_corners=False,
                                             padding_mode="border")[0, 0]
    # away from silhouettes (bilinear mixes surfaces there): all four bilinear taps in frame t+1
    # lie on the plane of the pixel's face in frame t
    interior = valid[0] & (x > 1) & (x < HW[1] - 1) & (y > 1) & (y < HW[0] - 1)
    x0 = (x - 0.5).floor().long()
    y0 = (y - 0.5).floor().long()
    for dy in (0, 1):
        for dx in (0, 1):
            yy = (y0 + dy).clamp(0, HW[0] - 1)
            xx = (x0 + dx).clamp(0, HW[1] - 1)
            tap = g.point[1][yy, xx]
            on_plane = ((tap - g.point[0]) * g.normal[0]).sum(-1).abs() < 1e-9
            interior &= on_plane & g.mask[1][yy, xx]
    err = (warped - img[0])[interior].abs()
    # only bilinear interpolation error is left: <= h^2/8 * (|f_xx| + |f_yy|) for a pixel spacing of
    # h world units (at most 9 / focal on the far wall), with 10% slack for perspective
    h = 9.0 / _focal()
    assert float(err.max()) < 1.1 * h * h / 8 * (1.3**2 + 0.7**2)


def test_flow_through_the_correspondence_code_matches_the_rendered_flow():
    scene = box_mesh([-3.0, -2.0, 5.0], [3.0, 2.0, 7.0])
    cams = _cams([[0.0, 0, 0], [0.25, 0, 0]])
    g = render_gbuffer(scene, cams, HW)
    # correspondence map in the current view (frame 1) pointing into the reference (frame 0)
    xy, valid = reproject(g.select(slice(1, 2)), cams.select([0]), g.select(slice(0, 1)))
    flow = flow_from_correspondence(encode_correspondence(xy[0], valid[0], HW))
    true, ok = forward_flow(g, cams)
    hit = (flow[0] > -10000) & ok[0]
    assert int(hit.sum()) > 0.3 * HW[0] * HW[1]
    # integer-quantised flow (official decode): within one pixel of the exact flow
    assert float((flow[:, hit] - true[0][:, hit]).abs().max()) <= 1.0 + 1e-6


def test_equirect_depth_inside_a_room_is_the_exact_ray_distance():
    room = box_mesh([-3.0, -2.0, -4.0], [5.0, 2.5, 6.0])
    cams = _cams([[0.5, 0.1, 0.2]], yaw=0.3)
    g = render_erp_gbuffer(room, cams, (32, 64))
    assert bool(g.mask.all())
    # every hit lies on a wall of the box and on the pixel's ray
    p = g.point[0]
    lo = torch.tensor([-3.0, -2.0, -4.0], dtype=torch.float64)
    hi = torch.tensor([5.0, 2.5, 6.0], dtype=torch.float64)
    on_wall = ((p - lo).abs() < 1e-9) | ((p - hi).abs() < 1e-9)
    assert bool(on_wall.any(-1).all())
    # and the distance is the one to the first wall along the ray (closed form slab test)
    from pano360.projection.pinhole import erp_rays

    d = erp_rays(cams.rotations(), (32, 64))[0]
    o = cams.positions(dtype=torch.float64)[0]
    t_hi = torch.where(d > 0, (hi - o) / d, (lo - o) / d)
    t_exit = t_hi.min(-1).values
    assert float((g.depth[0] - t_exit).abs().max()) < 1e-9


def test_line_art_marks_silhouettes_and_creases_not_coplanar_seams():
    box = box_mesh([-1.0, -0.8, 4.0], [1.2, 0.9, 5.5])
    cams = path_from_arrays([0.4], [0.3], [0.0], FOV, "test", [[-1.5, 1.2, 0.0]])
    g = render_gbuffer(box, cams, (96, 144))
    lines = line_art(g)
    # the front face's diagonal (two coplanar triangles) draws nothing: every line pixel touches
    # either the background or a pixel of a face with another normal
    n = g.normal[0]
    nb = torch.nn.functional.pad(n.permute(2, 0, 1), (1, 1, 1, 1), mode="replicate")
    mask = torch.nn.functional.pad(g.mask[0][None].float(), (1, 1, 1, 1))
    ok = torch.zeros_like(lines[0], dtype=torch.bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            sl = (slice(1 + di, 1 + di + 96), slice(1 + dj, 1 + dj + 144))
            other = nb[:, sl[0], sl[1]].permute(1, 2, 0)
            ok |= ((n * other).sum(-1) < 0.9) | (mask[0][sl] == 0)
    assert bool(ok[lines[0] > 0].all())
    assert int(lines.sum()) > 100
    soft = soft_edges(lines)
    assert float(soft.max()) == pytest.approx(1.0, abs=1e-3) and float(soft.min()) >= 0
    img = normal_image(g, cams, soft)
    assert img.shape == (1, 96, 144, 3) and float(img.max()) <= 1


def test_load_mesh_maps_y_up_files_into_the_pack_frame(tmp_path):
    obj = tmp_path / "quad.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 2 0\nv 0 0 3\nf 1 2 3\nf 1 3 4\n")
    m = load_mesh(obj, axes="y_up")
    assert m.num_faces == 2
    assert m.vertices.tolist() == [[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, -3]]
    mz = load_mesh(obj, axes="z_up")
    assert mz.vertices.tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 2], [0, 3, 0]]
    with pytest.raises(ValueError, match="axes"):
        load_mesh(obj, axes="x_up")
    with pytest.raises(ValueError, match="expected a file ending"):
        load_mesh(tmp_path / "scene.fbx")
    bad = tmp_path / "empty.obj"
    bad.write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match="empty.obj"):
        load_mesh(bad)


def test_mesh_rejects_bad_indices():
    with pytest.raises(ValueError, match="face indices"):
        Mesh(torch.zeros(3, 3, dtype=torch.float64), torch.tensor([[0, 1, 3]]))
    with pytest.raises(ValueError):
        EdgeSettings(crease_deg=0)
