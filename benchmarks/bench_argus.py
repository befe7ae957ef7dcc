"""What do Argus's placement and the rotation estimate cost?

1. Placement: :func:`place_frames_on_sphere` (the pack's ``perspective_to_erp`` with its
   cached footprint) against the peer, Argus's ``pers2equi`` recipe written directly in torch:
   directions for every equirect pixel, rotation, pinhole projection, ``grid_sample`` and mask,
   recomputed for every frame.  The shapes are Argus's: T frames at 384×512 (long side 512,
   ``calibration_img_size``) onto 512×1024.
2. Rotation estimate: :func:`estimate_rotation_path` for T frames at 96×128 against placing
   the same number of frames (peer 1 above), to put its cost in proportion.

Fixed shapes and seed, warm-up, synchronised timing, median of repeats; prints a table with
device, dtype, thread count and torch version.

    python benchmarks/bench_argus.py [--device cuda] [--frames 25]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import platform
import sys

import torch
from _timing import median_time
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import conftest  # noqa: E402,F401  (registers this checkout as `pano360`)

from pano360.pipelines.argus.conditioning import place_frames_on_sphere  # noqa: E402
from pano360.cameras import CameraPath, estimate_rotation_path  # noqa: E402
from pano360.projection import erp_to_perspective, rotation_matrix  # noqa: E402

SEED = 0
ERP_HW = (512, 1024)  # Argus inference resolution
VIEW_HW = (384, 512)  # long side 512 (Argus calibration_img_size), 4:3


def argus_recipe(frames, yaw, pitch, roll, fov, erp_hw):
    """Peer: per-frame directions -> camera -> pinhole -> grid_sample, no caching."""
    H, W = erp_hw
    T, _, h, w = frames.shape
    lon = ((torch.arange(W, device=frames.device) + 0.5) / W - 0.5) * 2 * math.pi
    lat = (0.5 - (torch.arange(H, device=frames.device) + 0.5) / H) * math.pi
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    d = torch.stack([lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()], -1).to(frames.dtype)
    out, masks = [], []
    for t in range(T):
        R = rotation_matrix(yaw[t], pitch[t], roll[t]).to(frames)
        c = d @ R
        z = c[..., 2]
        tx = math.tan(float(fov[t]) / 2)
        ty = tx * h / w
        u, v = c[..., 0] / z / tx, -c[..., 1] / z / ty
        m = (z > 0) & (u.abs() < 1) & (v.abs() < 1)
        s = F.grid_sample(frames[t : t + 1], torch.stack([u, v], -1)[None], align_corners=False)[0]
        out.append(s * m)
        masks.append(m)
    return torch.stack(out), torch.stack(masks)[:, None]



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(SEED)
    T = args.frames
    frames = torch.rand(T, 3, *VIEW_HW, generator=g).to(device)
    yaw = torch.linspace(0, 0.5, T)
    pitch = torch.linspace(0, 0.2, T)
    roll = torch.linspace(0, -0.1, T)
    fov = torch.full((T,), math.radians(75.0))
    path = CameraPath(*(tuple(x.tolist()) for x in (yaw, pitch, roll, fov)))

    rows = []
    peer = median_time(lambda: argus_recipe(frames, yaw, pitch, roll, fov, ERP_HW), device, args.repeats)
    ours = median_time(lambda: place_frames_on_sphere(frames, path, ERP_HW), device, args.repeats)
    rows += [("placement: Argus recipe in torch (peer)", peer, 1.0), ("placement: place_frames_on_sphere", ours, ours / peer)]

    pano = torch.rand(1, 3, 256, 512, generator=g)
    small = erp_to_perspective(pano.expand(T, -1, -1, -1), yaw, pitch, roll, fov, (96, 128))
    est = median_time(lambda: estimate_rotation_path(small, math.radians(75.0)), torch.device("cpu"), args.repeats)
    rows.append((f"rotation estimate, {T} frames 96×128 (CPU)", est, est / peer))

    print(f"device {device}, float32, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.machine()}; {T} frames {VIEW_HW[0]}×{VIEW_HW[1]} -> {ERP_HW[0]}×{ERP_HW[1]}")
    print(f"{'step':58s} {'median':>10s} {'ratio':>7s}")
    for name, t, r in rows:
        print(f"{name:58s} {t * 1000:8.1f} ms {r:7.2f}")


if __name__ == "__main__":
    main()
