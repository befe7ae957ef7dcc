"""Plücker rays of posed pinhole cameras against Look Beyond's ``ray_condition``.

Reference: ``C.plucker`` in ``tests/data/lookbeyond_inbetween_golden.safetensors``, the official
``dataset/realestate10K.py`` ``Camera`` + ``ray_condition`` on the golden file's RealEstate10K
pose text (5 of its 9 cameras, 32x48 pixels, an off-centre principal point, moving cameras).
"""

from __future__ import annotations

import json
import pathlib

import torch
from safetensors import safe_open

from pano360.cameras.formats.realestate10k import parse_rows
from pano360.projection.geometry import camera_plucker

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "lookbeyond_inbetween_golden.safetensors"
TOL = 1e-5  # the reference computes in float32


def _golden():
    with safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in ("C.plucker", "C.selected_ids")}, f.metadata()


def test_rays_match_lookbeyond_ray_condition():
    tensors, meta = _golden()
    h, w = json.loads(meta["image_hw"])
    rows = [parse_rows(meta["pose_txt"])[i] for i in tensors["C.selected_ids"].tolist()]
    w2c = torch.stack([torch.cat([r.w2c_tensor(), torch.tensor([[0.0, 0, 0, 1]], dtype=torch.float64)]) for r in rows])
    c2w = torch.linalg.inv(w2c)
    intrinsics = torch.tensor([[r.intrinsics[0] * w, r.intrinsics[1] * h, r.intrinsics[2] * w, r.intrinsics[3] * h]
                               for r in rows], dtype=torch.float64)
    rays = camera_plucker(c2w, intrinsics, (h, w))
    assert rays.shape == tensors["C.plucker"].shape == (5, 6, h, w)
    assert (rays - tensors["C.plucker"].double()).abs().max().item() < TOL
    assert rays[:, :3].abs().max() > 0.1  # moving cameras: the moment channels carry the positions


def test_centre_pixel_of_an_identity_camera_looks_down_plus_z():
    c2w = torch.eye(4)[None]
    rays = camera_plucker(c2w, torch.tensor([[10.0, 10.0, 2.0, 1.0]]), (2, 4))  # centre between pixels (1,0),(2,0)
    d = rays[0, 3:]
    assert torch.allclose(d[:, 0, 1] * torch.tensor([-1.0, 1, 1]), d[:, 0, 2])  # mirror pair about cx
    assert d[1, 0, 0] < 0 and d[1, 1, 0] > 0  # OpenCV: rows below the principal point have +y
    assert torch.allclose(rays[0, :3], torch.zeros(3, 2, 4))  # camera at the origin: zero moment
