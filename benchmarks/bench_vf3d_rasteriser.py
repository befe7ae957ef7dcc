"""How fast is VideoFrom3D's scene rasteriser, and what share of an arc is preprocessing?

1. Frames per second of a 720x480 G-buffer (per-pixel face, exact hit point, depth, normal,
   barycentrics) of the bundled street scene, against two peers that compute the same per-pixel
   first hit: trimesh's ray casting (``trimesh.ray.ray_triangle``, NumPy + an R-tree) and a plain
   torch brute-force ray caster (Möller–Trumbore over every triangle, in chunks).  The peers are
   slow, so they are timed on every ``PEER_ROW_STEP``-th image row and scaled to the full frame;
   their agreement with our face buffer on those rows is printed as a check.
2. The preprocessing time of one arc at the official resolutions (46 edge frames at 1080x720, 13
   correspondence views at 360x240, 12 noise warps at 1920x2880 with 16 channels), measured per
   unit and added up, against the model time of one arc (one Flux anchor + one 48-channel
   CogVideoX inbetweening) *estimated* from its floating-point operations and this device's
   measured matmul throughput (no weights can be downloaded here, so the models cannot be run).

Process CPU time with one torch thread (the machine is shared; see docs/benchmarks.md).

    python benchmarks/bench_vf3d_rasteriser.py [--threads 1] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import platform
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import conftest  # noqa: E402,F401  (registers this checkout as `pano360`)

from pano360.pipelines.videofrom3d.correspondence import flow_from_correspondence  # noqa: E402
from pano360.pipelines.videofrom3d.noise_warp import (  # noqa: E402
    VF3D_NOISE,
    initial_state,
    resize_flow,
    warp_state,
)
from pano360.projection.pinhole import camera_rays  # noqa: E402
from pano360.pipelines.videofrom3d.preprocess import arc_correspondences  # noqa: E402
from pano360.pipelines.videofrom3d.render import line_art, render_gbuffer, soft_edges  # noqa: E402
from pano360.pipelines.videofrom3d.scene import procedural_town, street_camera_path  # noqa: E402

HW = (480, 720)
TRIMESH_CHUNK = 8192  # rays per trimesh call (its candidate arrays grow with rays x triangles)
PEER_ROW_STEP = 16  # the peers cast every 16th row (30 of 480) and are scaled by 16
FOV = math.radians(60)

# FLOPs per arc, 2 x params x tokens for the linear layers plus 4 x L^2 x d x layers for attention:
# CogVideoX-5B (42 layers, d 3072, ~5.6e9 params incl. 48-ch patch embed) on 13x30x45 + 226 tokens,
# 30 steps x 2 (CFG); Flux-dev (~11.9e9 params, 19 + 38 blocks, d 3072) on 67x45 + 512 tokens,
# 25 steps, step 0 without CFG then 24 x 2, plus the 2-block XLabs ControlNet (~0.6e9) alongside.
COG_TOKENS, COG_PARAMS, COG_D, COG_LAYERS = 13 * 30 * 45 + 226, 5.6e9, 3072, 42
FLUX_TOKENS, FLUX_PARAMS, FLUX_D, FLUX_LAYERS, CN_PARAMS = 67 * 45 + 512, 11.9e9, 3072, 57, 0.6e9


def cpu_time(fn, repeats: int) -> float:
    fn()
    best = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best.append(time.process_time() - t0)
    best.sort()
    return best[len(best) // 2]


def arc_flops() -> tuple[float, float]:
    cog = 2 * COG_PARAMS * COG_TOKENS + 4 * COG_TOKENS**2 * COG_D * COG_LAYERS
    flux = 2 * (FLUX_PARAMS + CN_PARAMS) * FLUX_TOKENS + 4 * FLUX_TOKENS**2 * FLUX_D * FLUX_LAYERS
    return cog * 30 * 2, flux * (1 + 24 * 2)


def matmul_flops_per_s(device, dtype, repeats: int) -> float:
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    t = cpu_time(lambda: a @ a, repeats)
    return 2 * 2048**3 / t


def brute_force_faces(tri: torch.Tensor, origin: torch.Tensor, rays: torch.Tensor, chunk: int = 1 << 12) -> torch.Tensor:
    """Peer: Möller–Trumbore against every triangle, nearest hit per ray."""
    d = rays.reshape(-1, 3)
    a, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    best = torch.full((d.shape[0],), -1, dtype=torch.int64)
    for s in range(0, d.shape[0], chunk):
        r = d[s : s + chunk, None, :]
        p = torch.linalg.cross(r.expand(-1, tri.shape[0], -1), e2[None].expand(r.shape[0], -1, -1))
        det = (e1[None] * p).sum(-1)
        inv = 1.0 / torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        tv = origin - a[None]
        u = (tv * p).sum(-1) * inv
        q = torch.linalg.cross(tv.expand(r.shape[0], -1, -1), e1[None].expand(r.shape[0], -1, -1))
        v = (r * q).sum(-1) * inv
        t = (e2[None] * q).sum(-1) * inv
        hit = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6)
        t = torch.where(hit, t, torch.full_like(t, float("inf")))
        tmin, idx = t.min(1)
        best[s : s + chunk] = torch.where(torch.isfinite(tmin), idx, torch.full_like(idx, -1))
    return best.reshape(rays.shape[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mesh = procedural_town()
    path = street_camera_path(46, fov_deg=math.degrees(FOV))
    cam = path.select([10])

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"device {device}, scene {mesh.num_faces} triangles")  # noqa: T201
    ours = cpu_time(lambda: render_gbuffer(mesh, cam, HW, device=device), args.repeats)
    g = render_gbuffer(mesh, cam, HW, device=device)
    print(f"| pano360 rasteriser + exact hits | {ours:.3f} s / frame | {1 / ours:.2f} frames / s |")  # noqa: T201

    import trimesh

    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)
    origin = cam.positions(dtype=torch.float64)[0]
    rays = camera_rays(cam.rotations(), torch.tensor(cam.fov_x, dtype=torch.float64), HW)[0][::PEER_ROW_STEP]
    origins = origin.expand(rays.shape[0] * rays.shape[1], 3).numpy()
    dirs = rays.reshape(-1, 3).numpy()
    caster = trimesh.ray.ray_triangle.RayMeshIntersector(tm)

    def trimesh_faces():  # in chunks of rays: one call on all 345,600 rays needs > 20 GB here
        import numpy as np

        step = TRIMESH_CHUNK
        return np.concatenate([caster.intersects_first(origins[s : s + step], dirs[s : s + step])
                               for s in range(0, len(dirs), step)])

    t_tm = cpu_time(trimesh_faces, 1) * PEER_ROW_STEP
    tm_face = torch.from_numpy(trimesh_faces()).reshape(rays.shape[:2])
    tri = mesh.triangles().double()
    t_bf = cpu_time(lambda: brute_force_faces(tri, origin, rays), 1) * PEER_ROW_STEP
    bf_face = brute_force_faces(tri, origin, rays)
    ours_face = g.face[0].cpu()[::PEER_ROW_STEP]
    print("| renderer (720x480 G-buffer) | CPU s / frame | frames / s | ours faster | face agreement with ours |")  # noqa: T201
    print("|---|---|---|---|---|")  # noqa: T201
    print(f"| pano360 rasteriser + exact hits | {ours:.3f} | {1 / ours:.2f} |  |  |")  # noqa: T201
    print(f"| trimesh ray_triangle (R-tree) | {t_tm:.3f} | {1 / t_tm:.2f} | {t_tm / ours:.1f}x | "
          f"{float((tm_face == ours_face).float().mean()):.4f} |")  # noqa: T201
    print(f"| torch brute-force Möller–Trumbore | {t_bf:.3f} | {1 / t_bf:.2f} | {t_bf / ours:.1f}x | "
          f"{float((bf_face == ours_face).float().mean()):.4f} |")  # noqa: T201

    # 2. one arc at the official resolutions, per unit
    t_edge = cpu_time(lambda: soft_edges(line_art(render_gbuffer(mesh, cam, (720, 1080), device=device))),
                      args.repeats)
    sampled = path.select(range(13))
    t_corres = cpu_time(lambda: arc_correspondences(mesh, sampled, device=device), 1) / 13
    codes, _ = arc_correspondences(mesh, sampled, device=device)
    flow = resize_flow(flow_from_correspondence(codes[0]), (240 * VF3D_NOISE.flow_scale, 360 * VF3D_NOISE.flow_scale))
    gen = torch.Generator().manual_seed(0)
    state = initial_state(VF3D_NOISE.channels, *flow.shape[1:], generator=gen)
    print("timing one noise warp at 1920x2880x16 ...")  # noqa: T201
    t_warp = cpu_time(lambda: warp_state(state, flow, gen), 1)
    pre = 46 * t_edge + 13 * t_corres + 12 * t_warp
    cog, flux = arc_flops()
    rate = matmul_flops_per_s(device, torch.float32, args.repeats)
    models = (cog + flux) / rate
    print()  # noqa: T201
    print("| arc unit | CPU s each | count | CPU s per arc |")  # noqa: T201
    print("|---|---|---|---|")  # noqa: T201
    print(f"| soft edges 1080x720 | {t_edge:.3f} | 46 | {46 * t_edge:.1f} |")  # noqa: T201
    print(f"| correspondence view 360x240 | {t_corres:.3f} | 13 | {13 * t_corres:.1f} |")  # noqa: T201
    print(f"| noise warp 1920x2880x16 | {t_warp:.3f} | 12 | {12 * t_warp:.1f} |")  # noqa: T201
    print(f"| preprocessing total | | | {pre:.1f} |")  # noqa: T201
    print(f"| models (estimated: {cog:.2e} + {flux:.2e} FLOPs at {rate / 1e9:.1f} GFLOP/s fp32 matmul) | | | "
          f"{models:.0f} |")  # noqa: T201
    print(f"| preprocessing share of an arc on this device | | | {pre / (pre + models):.2%} |")  # noqa: T201


if __name__ == "__main__":
    main()
