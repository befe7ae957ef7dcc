"""Projection speed against OpenCV's remap, py360convert and pytorch360convert, in one process.

    python benchmarks/projection.py [--repeats 3] [--threads N] [--no-write]

Cases (bilinear, float32, issue 2): e2p of a 16-frame 512x1024 video into the videopanda8 rig
(8 views of 512x512, view-major IMAGE batch out), from ComfyUI's channels-last layout and from
a contiguous ``(T, C, H, W)`` tensor (issue 10: both must be fast), against ``cv2.remap`` with
the same sampling points (maps built once, like the pack's cached taps; fixed-point and float
maps, ``BORDER_WRAP``); the inverse stitch (views -> 512x1024,
uniform average); 25 frames of 384x512, each at its own pose, placed on 512x1024 (Argus's
conditioning; nothing cached per frame); e2c and c2e at 1024x2048 (faces of 512).  Inputs are in each library's
native layout: ComfyUI's IMAGE ``[B,H,W,C]`` for Pano360 and pytorch360convert
(``channels_first=False``), ``[H,W,C]`` numpy for py360convert.  Every result is also
checked against the analytic truth of a smooth test signal ("error" = mean abs error), so
the speed ratios are taken at equal accuracy.  A large tensor copy measures the memory
bandwidth; ``bound`` is the time to read the input and write the output once at that rate.

Timings: median wall time of ``--repeats`` runs after one warm-up (grids/taps are built in
the warm-up for the libraries that cache them).  The table goes to docs/benchmarks.md
(section "Projection") unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _import_pack():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pano360", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["pano360"] = module
    spec.loader.exec_module(module)


_import_pack()
from pano360.projection import (  # noqa: E402
    View,
    cubemap_to_erp,
    erp_to_cubemap,
    erp_to_rig,
    perspective_to_erp,
    rig_preset,
    stitch_rig,
)
from pano360.projection.conventions import view_to_py360convert  # noqa: E402

CONTIGUOUS = "pano360, contiguous (T, C, H, W) input"
CV2_FIXED = "OpenCV cv2.remap, fixed-point maps"
CV2_FLOAT = "OpenCV cv2.remap, float32 maps"
# Issue 10's target: e2p from a contiguous tensor within 1.3x of the channels-last one.
LAYOUT_TARGET = 1.3
# Rounds of the interleaved layout comparison (at least; more than --repeats on a loaded machine).
LAYOUT_REPEATS = 9

# Issue 2's sizes; --quick shrinks them for a smoke test (not for the record).
# P*: Argus placement, PT frames of PHxPW each at its own pose (no cached geometry).
FULL = {"T": 16, "H": 512, "VIEW": 512, "CUBE_H": 1024, "FACE": 512, "PT": 25, "PH": 384, "PW": 512}
QUICK = {"T": 2, "H": 64, "VIEW": 64, "CUBE_H": 64, "FACE": 32, "PT": 3, "PH": 24, "PW": 32}


# --------------------------------------------------------------------------- analytic signal


def signal(d: np.ndarray) -> np.ndarray:
    """Smooth RGB of unit directions ``d [..., 3]`` (x right, y up, z forward)."""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return np.stack([0.5 + 0.3 * x + 0.1 * y * z, 0.5 + 0.3 * y - 0.1 * x * x, 0.5 + 0.2 * z + 0.2 * x * y], -1)


def erp_dirs(h: int) -> np.ndarray:
    w = 2 * h
    lon = ((np.arange(w) + 0.5) / w - 0.5) * 2 * np.pi
    lat = (0.5 - (np.arange(h) + 0.5) / h) * np.pi
    lon, lat = np.meshgrid(lon, lat)
    return np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], -1)


def yaw_matrix(a: float) -> np.ndarray:
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def view_dirs(view) -> np.ndarray:
    """World rays through a view's pixel centres (docs/conventions.md), ``[h, w, 3]``."""
    h, w = view.height, view.width
    tx = math.tan(math.radians(view.fov) / 2)
    xs = ((np.arange(w) + 0.5) / w * 2 - 1) * tx
    ys = (1 - (np.arange(h) + 0.5) / h * 2) * tx * h / w
    x, y = np.meshgrid(xs, ys)
    cam = np.stack([x, y, np.ones_like(x)], -1)
    yaw, pitch, roll = (math.radians(a) for a in (view.yaw, view.pitch, view.roll))
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), math.sin(pitch)], [0, -math.sin(pitch), math.cos(pitch)]])
    rz = np.array([[math.cos(roll), math.sin(roll), 0], [-math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    d = cam @ (yaw_matrix(yaw) @ rx @ rz).T
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


# --------------------------------------------------------------------------- timing


def timed(fn, repeats: int):
    """(median wall seconds, median process CPU seconds), result of the warm-up call."""
    result = fn()  # warm-up (and the result, for the error check)
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return (statistics.median(walls), statistics.median(cpus)), result


def timed_interleaved(fns: list, repeats: int) -> list:
    """:func:`timed` for several functions run round-robin (one call each per round, the order
    rotating every round), so a change in the machine's load, and the page faults of a fresh
    output that depend on what ran just before (a fresh 400 MB buffer costs 0.1-1 s of faults
    when the kernel has no huge pages to give), fall on all of them alike.  Results copied at
    the warm-up."""
    results = []
    for fn in fns:
        out = fn()
        results.append(out.copy() if isinstance(out, np.ndarray) else out)
    walls, cpus = [[] for _ in fns], [[] for _ in fns]
    for r in range(repeats):
        for j in range(len(fns)):
            k = (j + r) % len(fns)
            fn = fns[k]
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            walls[k].append(time.perf_counter() - t0)
            cpus[k].append(time.process_time() - c0)
    return [((statistics.median(w), statistics.median(c)), r) for w, c, r in zip(walls, cpus, results)]


def bandwidth(repeats: int) -> float:
    """Bytes per second of a large copy (read + write), preallocated buffers."""
    n = 128 * 1024 * 1024  # 512 MiB of float32
    src = torch.rand(n)
    dst = torch.empty_like(src)
    dst.copy_(src)
    (wall, cpu), _ = timed(lambda: dst.copy_(src), max(3, repeats))
    return 2 * n * 4 / min(wall, cpu / torch.get_num_threads())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------------- cases


def _cv2_maps(rig, view_hw, erp_hw):
    """Per view the float32 remap maps of the pack's own sampling points, and their fixed-point
    form (``cv2.convertMaps``, OpenCV's fastest remap input)."""
    import cv2

    from pano360.projection import erp_to_perspective_coords

    maps = []
    for v in rig.views:
        x, y = erp_to_perspective_coords(*(math.radians(a) for a in (v.yaw, v.pitch, v.roll, v.fov)), view_hw, erp_hw)
        fx, fy = x.float().numpy(), y.float().numpy()
        maps.append(((fx, fy), cv2.convertMaps(fx, fy, cv2.CV_16SC2)))
    return maps


def run(repeats: int, sizes: dict) -> tuple[list[dict], dict]:
    import cv2
    import py360convert
    import pytorch360convert as p3c

    cv2.setNumThreads(torch.get_num_threads())

    T, H, VIEW, CUBE_H, FACE = (sizes[k] for k in ("T", "H", "VIEW", "CUBE_H", "FACE"))
    W = 2 * H
    rig = rig_preset("videopanda8", size=VIEW)
    frame_rot = [yaw_matrix(0.35 * t) for t in range(T)]
    d = erp_dirs(H)
    video_np = np.stack([signal(d @ r) for r in frame_rot]).astype(np.float32)  # [T, H, W, 3]
    video = torch.from_numpy(video_np)  # IMAGE layout
    truth_views = [signal(view_dirs(v)) for v in rig.views]  # frame 0
    rows = []

    def view_error(views_by_view):  # list over views of [h, w, 3] (frame 0)
        return float(np.mean([np.abs(np.asarray(v) - t).mean() for v, t in zip(views_by_view, truth_views)]))

    # e2p ----------------------------------------------------------------------------
    def ours_e2p():
        return erp_to_rig(video.movedim(-1, 1), rig).movedim(1, -1)  # IMAGE [V*T, h, w, 3]

    video_tchw = video.movedim(-1, 1).contiguous()  # the README's library layout

    def ours_e2p_contiguous():
        return erp_to_rig(video_tchw, rig)  # (V*T, 3, h, w), contiguous like its input

    cv_maps = _cv2_maps(rig, (VIEW, VIEW), (H, W))
    cv_out = np.empty((rig.num_views * T, VIEW, VIEW, 3), np.float32)

    def cv2_e2p(fixed: bool):
        def call():
            for i, (floats, fixed_maps) in enumerate(cv_maps):
                m1, m2 = fixed_maps if fixed else floats
                for t in range(T):
                    cv2.remap(video_np[t], m1, m2, cv2.INTER_LINEAR, dst=cv_out[i * T + t],
                              borderMode=cv2.BORDER_WRAP)
            return cv_out
        return call

    def py_e2p():
        return [[py360convert.e2p(video_np[t], **view_to_py360convert(v), mode="bilinear") for t in range(T)]
                for v in rig.views]

    def p3c_e2p():
        out = []
        for v in rig.views:
            kw = view_to_py360convert(v)
            out.append(p3c.e2p(video, kw["fov_deg"], kw["u_deg"], kw["v_deg"], kw["out_hw"], kw["in_rot_deg"],
                               mode="bilinear", channels_first=False))
        return out

    e2p = {}
    # The layout comparison (issue 10) runs round-robin, so the four share the machine's load.
    layouts = timed_interleaved([ours_e2p, ours_e2p_contiguous, cv2_e2p(True), cv2_e2p(False)],
                                max(repeats, LAYOUT_REPEATS))
    (t, r), (t_ct, r_ct), (t_fx, r_fx), (t_fl, r_fl) = layouts
    e2p["pano360"] = (t, view_error([r[i * T].numpy() for i in range(rig.num_views)]))
    e2p[CONTIGUOUS] = (t_ct, view_error([r_ct[i * T].permute(1, 2, 0).numpy() for i in range(rig.num_views)]))
    e2p[CV2_FIXED] = (t_fx, view_error([r_fx[i * T] for i in range(rig.num_views)]))
    e2p[CV2_FLOAT] = (t_fl, view_error([r_fl[i * T] for i in range(rig.num_views)]))
    t, r = timed(py_e2p, repeats)
    e2p["py360convert"] = (t, view_error([r[i][0] for i in range(rig.num_views)]))
    t, r = timed(p3c_e2p, repeats)
    e2p["pytorch360convert"] = (t, view_error([r[i][0].numpy() for i in range(rig.num_views)]))
    rows.append({"op": f"e2p: {T}x{H}x{W} video -> videopanda8 (8 x {VIEW}x{VIEW}), bilinear", "times": e2p,
                 "bytes": video.numel() * 4 * (1 + 8 * VIEW * VIEW / (H * W))})

    # stitch -------------------------------------------------------------------------
    views = ours_e2p()  # IMAGE [V*T, VIEW, VIEW, 3]
    truth0 = video_np[0]

    def ours_stitch():
        erp, _ = stitch_rig(views.movedim(-1, 1), rig, (H, W))
        return erp.movedim(1, -1)

    grids, masks = _stitch_grids(rig, views.shape[1:3], H)

    def gs_stitch():
        x = views.movedim(-1, 1)
        acc = torch.zeros(T, 3, H, W)
        count = torch.zeros(1, 1, H, W)
        for i in range(rig.num_views):
            s = torch.nn.functional.grid_sample(x[i * T:(i + 1) * T], grids[i].expand(T, -1, -1, -1),
                                                mode="bilinear", padding_mode="border", align_corners=False)
            acc += s * masks[i]
            count += masks[i]
        return (acc / count.clamp_min(1)).movedim(1, -1)

    st = {}
    t, r = timed(ours_stitch, repeats)
    st["pano360"] = (t, float(np.abs(r[0].numpy() - truth0).mean()))
    t, r = timed(gs_stitch, repeats)
    st["torch grid_sample, every view over the full canvas"] = (t, float(np.abs(r[0].numpy() - truth0).mean()))
    rows.append({"op": f"stitch: videopanda8 {T} frames -> {H}x{W}, bilinear, uniform", "times": st,
                 "bytes": video.numel() * 4 * (1 + 8 * VIEW * VIEW / (H * W)),
                 "note": "py360convert and pytorch360convert have no perspective-to-equirect"})

    # per-frame placement (Argus) -----------------------------------------------------
    rows.append(_placement_row(repeats, sizes, H))

    # e2c / c2e ----------------------------------------------------------------------
    big_np = signal(erp_dirs(CUBE_H)).astype(np.float32)  # [1024, 2048, 3]
    big = torch.from_numpy(big_np)[None]
    big_chw = big[0].permute(2, 0, 1).contiguous()
    face_truth = [signal(view_dirs(v)) for v in rig_preset("cube6", size=FACE).views]

    def dice_faces(dice):  # [3w, 4w, 3] -> faces F R B L U D
        slots = ((1, 1), (2, 1), (3, 1), (0, 1), (1, 0), (1, 2))
        return [dice[sy * FACE:(sy + 1) * FACE, sx * FACE:(sx + 1) * FACE] for sx, sy in slots]

    def face_error(dice):
        return float(np.mean([np.abs(np.asarray(f) - t).mean() for f, t in zip(dice_faces(dice), face_truth)]))

    e2c = {}
    t, r = timed(lambda: erp_to_cubemap(big.movedim(-1, 1), FACE, "dice").movedim(1, -1), repeats)
    e2c["pano360"] = (t, face_error(r[0].numpy()))
    t, r = timed(lambda: py360convert.e2c(big_np, FACE, mode="bilinear", cube_format="dice"), repeats)
    e2c["py360convert"] = (t, face_error(r))
    t, r = timed(lambda: p3c.e2c(big[0], FACE, mode="bilinear", cube_format="dice", channels_first=False), repeats)
    e2c["pytorch360convert"] = (t, face_error(r.numpy()))
    rows.append({"op": f"e2c: {CUBE_H}x{2 * CUBE_H} -> 6 x {FACE}x{FACE} (dice), bilinear", "times": e2c,
                 "bytes": big.numel() * 4 * 2})

    dice = erp_to_cubemap(big.movedim(-1, 1), FACE, "dice").movedim(1, -1).contiguous()  # [1, 3w, 4w, 3]
    dice_np = dice[0].numpy()
    c2e = {}
    t, r = timed(lambda: cubemap_to_erp(dice.movedim(-1, 1), CUBE_H, "dice").movedim(1, -1), repeats)
    c2e["pano360"] = (t, float(np.abs(r[0].numpy() - big_np).mean()))
    t, r = timed(lambda: py360convert.c2e(dice_np, CUBE_H, 2 * CUBE_H, mode="bilinear", cube_format="dice"), repeats)
    c2e["py360convert"] = (t, float(np.abs(r - big_np).mean()))
    t, r = timed(lambda: p3c.c2e(dice[0], CUBE_H, 2 * CUBE_H, mode="bilinear", cube_format="dice",
                                 channels_first=False), repeats)
    c2e["pytorch360convert"] = (t, float(np.abs(r.numpy() - big_np).mean()))
    rows.append({"op": f"c2e: 6 x {FACE}x{FACE} (dice) -> {CUBE_H}x{2 * CUBE_H}, bilinear", "times": c2e,
                 "bytes": big.numel() * 4 * 2})
    del big_chw
    env = {"py360convert": py360convert.__version__ if hasattr(py360convert, "__version__") else "?",
           "pytorch360convert": getattr(p3c, "__version__", None) or getattr(p3c, "version", "?"),
           "opencv": cv2.__version__}
    return rows, env


def _placement_row(repeats: int, sizes: dict, H: int) -> dict:
    """Each frame placed on its own equirect canvas at its own pose (Argus's conditioning):
    ``perspective_to_erp`` against the direct recipe (per-frame grid + ``grid_sample`` + mask)."""
    PT, PH, PW = sizes["PT"], sizes["PH"], sizes["PW"]
    W = 2 * H
    poses = [View(14.4 * t - 180, 30 * math.sin(t), 5 * math.cos(t), 75.0, PW, PH) for t in range(PT)]
    frames = torch.from_numpy(np.stack([signal(view_dirs(v)) for v in poses]).astype(np.float32))  # IMAGE
    yaw, pitch, roll, fov = (torch.tensor([math.radians(getattr(v, k)) for v in poses])
                             for k in ("yaw", "pitch", "roll", "fov"))
    truth0 = signal(erp_dirs(H))

    def ours():
        erp, weight = perspective_to_erp(frames.movedim(-1, 1), yaw, pitch, roll, fov, (H, W))
        return erp.movedim(1, -1), weight[:, 0] > 0

    def recipe():
        d = torch.from_numpy(erp_dirs(H)).float()
        x = frames.movedim(-1, 1)
        outs, masks = [], []
        for t, v in enumerate(poses):
            a = [math.radians(v.yaw), math.radians(v.pitch), math.radians(v.roll)]
            rx = np.array([[1, 0, 0], [0, math.cos(a[1]), math.sin(a[1])], [0, -math.sin(a[1]), math.cos(a[1])]])
            rz = np.array([[math.cos(a[2]), math.sin(a[2]), 0], [-math.sin(a[2]), math.cos(a[2]), 0], [0, 0, 1]])
            c = d @ torch.from_numpy(yaw_matrix(a[0]) @ rx @ rz).float()  # world -> camera
            tx = math.tan(math.radians(v.fov) / 2)
            z = c[..., 2]
            u, w = c[..., 0] / z / tx, -c[..., 1] / z / (tx * PH / PW)
            m = (z > 0) & (u.abs() < 1) & (w.abs() < 1)
            s = torch.nn.functional.grid_sample(x[t:t + 1], torch.stack([u, w], -1)[None], mode="bilinear",
                                                padding_mode="border", align_corners=False)[0]
            outs.append(s * m)
            masks.append(m)
        return torch.stack(outs).movedim(1, -1), torch.stack(masks)

    def error(r):
        img, m = r[0][0].numpy(), r[1][0].numpy()
        return float(np.abs(img - truth0)[m].mean())

    times = {}
    t, r = timed(ours, repeats)
    times["pano360"] = (t, error(r))
    t, r = timed(recipe, repeats)
    times["torch grid_sample, grid built per frame"] = (t, error(r))
    return {"op": f"place: {PT} frames {PH}x{PW}, each at its own pose -> {H}x{W}, bilinear (Argus)",
            "times": times, "bytes": PT * 4 * (3 * PH * PW + 4 * H * W)}


def _stitch_grids(rig, view_hw, H):
    """grid_sample grids and masks placing each view on the full equirect canvas (baseline)."""
    d = torch.from_numpy(erp_dirs(H))
    grids, masks = [], []
    for v in rig.views:
        yaw, pitch, roll = (math.radians(a) for a in (v.yaw, v.pitch, v.roll))
        rx = np.array([[1, 0, 0], [0, math.cos(pitch), math.sin(pitch)], [0, -math.sin(pitch), math.cos(pitch)]])
        rz = np.array([[math.cos(roll), math.sin(roll), 0], [-math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
        rot = torch.from_numpy(yaw_matrix(yaw) @ rx @ rz)
        c = d @ rot  # world -> camera
        tx = math.tan(math.radians(v.fov) / 2)
        ty = tx * view_hw[0] / view_hw[1]
        z = c[..., 2].clamp_min(1e-9)
        u, w = c[..., 0] / z / tx, -c[..., 1] / z / ty
        masks.append(((c[..., 2] > 0) & (u.abs() < 1) & (w.abs() < 1)).float()[None, None])
        grids.append(torch.stack([u, w], -1).float()[None])
    return grids, masks


# --------------------------------------------------------------------------- report


def table(runs: dict, env: dict, threads: int, load: str) -> str:
    """Markdown for docs/benchmarks.md from ``{config: (rows, bandwidth)}``."""
    base_rows, bw = runs["default"]
    thp = runs.get("THP_MEM_ALLOC_ENABLE=1")
    lines = [
        "## Projection",
        "",
        f"`python benchmarks/projection.py --threads {threads}` on {cpu_name()} ({os.cpu_count()} logical CPUs, shared "
        f"with other jobs: load average {load} at the start), torch {torch.__version__}, {threads} torch thread(s) "
        f"for every library (OpenCV set to the same thread count; py360convert samples with OpenCV's remap when OpenCV is installed, as it is here since it became a test dependency, hence its much smaller gap than before), "
        f"OpenCV {env.get('opencv', '?')}, py360convert {env['py360convert']}, "
        f"pytorch360convert {env['pytorch360convert']}, float32, median of the runs after a warm-up.",
        "",
        "On a loaded machine wall time mostly measures waiting for a core, so the speed-ups use process CPU "
        "time (each implementation runs single-threaded, so CPU time is the time it needs on an idle core); "
        "wall times are listed too. One thread because this 2-core machine is oversubscribed by other jobs: "
        "with 2 threads every torch library's OpenMP workers wait for cores and all torch timings (ours and "
        "pytorch360convert's) get 3-6x slower and erratic. error = mean abs error against the analytic truth of a smooth test signal: "
        "equal accuracy for e2p; for e2c/c2e the peers' larger error is their half-pixel face convention "
        "(border pixel centres on the cube edges), not noise.",
        "",
        "| operation | implementation | CPU s | wall s | error | Pano360 speed-up (CPU) |"
        + (" CPU s, THP | speed-up, THP |" if thp else ""),
        "|---|---|---|---|---|---|" + ("---|---|" if thp else ""),
    ]
    for i, row in enumerate(base_rows):
        ours = row["times"]["pano360"]
        for name, ((wall, cpu), err) in row["times"].items():
            ratio = "" if name == "pano360" else f"{cpu / ours[0][1]:.1f}x"
            line = f"| {row['op']} | {name} | {cpu:.3f} | {wall:.3f} | {err:.1e} | {ratio} |"
            if thp:
                trow = thp[0][i]["times"]
                tcpu, tours = trow[name][0][1], trow["pano360"][0][1]
                line += f" {tcpu:.3f} | {'' if name == 'pano360' else f'{tcpu / tours:.1f}x'} |"
            lines.append(line)
        if row.get("note"):
            lines.append(f"| | ({row['note']}) | | | | |" + (" | |" if thp else ""))
    lines += ["", *_layout_summary(base_rows[0]["times"])]
    lines += ["", f"Memory bandwidth (copy of 512 MiB, read + write, preallocated): {bw / 1e9:.1f} GB/s. "
              "The bound is the time to read the input and write the output once at that rate.", ""]
    lines.append("| operation | bytes moved once | bound (s) | Pano360 CPU s | x bound |"
                 + (" Pano360 CPU s, THP | x bound, THP |" if thp else ""))
    lines.append("|---|---|---|---|---|" + ("---|---|" if thp else ""))
    for i, row in enumerate(base_rows):
        bound = row["bytes"] / bw
        ours = row["times"]["pano360"][0][1]
        line = f"| {row['op']} | {row['bytes'] / 1e6:.0f} MB | {bound:.3f} | {ours:.3f} | {ours / bound:.1f}x |"
        if thp:
            t = thp[0][i]["times"]["pano360"][0][1]
            line += f" {t:.3f} | {t / bound:.1f}x |"
        lines.append(line)
    lines.append("")
    if thp:
        lines += ["THP: the same run in a process started with `THP_MEM_ALLOC_ENABLE=1` (torch's allocator then "
                  "asks for transparent huge pages, which removes most of the page-fault cost of fresh "
                  "100-400 MB outputs; it cannot be switched on inside a running process). Pano360 gives the same "
                  "hint itself (`madvise(MADV_HUGEPAGE)` on the large CPU buffers it writes, "
                  "`projection/_sampling.py: empty_like_huge`), so its default-run times already include most "
                  "of that gain; the peers' do not.", ""]
    return "\n".join(lines)


def _layout_summary(times: dict) -> list[str]:
    """Issue 10's comparison: contiguous vs channels-last input, both vs OpenCV's remap (CPU s)."""
    if CONTIGUOUS not in times:
        return []
    cl, ct = times["pano360"][0][1], times[CONTIGUOUS][0][1]
    fixed, flt = times[CV2_FIXED][0][1], times[CV2_FLOAT][0][1]
    verdict = "within" if ct / cl <= LAYOUT_TARGET else "NOT within"
    return [
        f"e2p by input layout (CPU s): channels-last {cl:.3f}, contiguous {ct:.3f}: contiguous / channels-last = "
        f"**{ct / cl:.2f}** ({verdict} the {LAYOUT_TARGET}x target of issue 10; before the fix the contiguous "
        "input was gathered through a strided view, ~7x slower). Against `cv2.remap` on the same sampling points "
        "(maps built once, outside the timing, like the pack's cached taps) Pano360 takes "
        f"{cl / fixed:.2f}x (channels-last) and {ct / fixed:.2f}x (contiguous) the time of OpenCV with fixed-point "
        f"maps ({fixed:.3f} s), {cl / flt:.2f}x and {ct / flt:.2f}x that of OpenCV with float maps ({flt:.3f} s). "
        "OpenCV writes "
        "`[H, W, C]` numpy frames one by one; its fixed-point maps quantise positions to 1/32 pixel (hence its "
        "larger error), and `BORDER_WRAP` wraps rows to the opposite pole instead of across it.",
    ]


def write_section(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by its script in `benchmarks/`.\n"
    pattern = re.compile(r"^## Projection\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def _child(args, env_extra: dict) -> tuple:
    """Run the measurements in a fresh process (allocator settings are read at start)."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--child-json", str(out)] + (["--quick"] if args.quick else [])
        subprocess.run(cmd, check=True, env={**os.environ, **env_extra})
        data = json.loads(out.read_text())
    return (data["rows"], data["bandwidth"]), data["env"]


def main(argv=None) -> int:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--no-thp", action="store_true", help="skip the second run with THP_MEM_ALLOC_ENABLE=1")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test (implies --no-write)")
    parser.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child_json:
        bw = bandwidth(args.repeats)
        rows, env = run(args.repeats, QUICK if args.quick else FULL)
        args.child_json.write_text(json.dumps({"rows": rows, "bandwidth": bw, "env": env}))
        return 0
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    runs = {}
    runs["default"], env = _child(args, {"THP_MEM_ALLOC_ENABLE": "0"})
    if not args.no_thp:
        runs["THP_MEM_ALLOC_ENABLE=1"], _ = _child(args, {"THP_MEM_ALLOC_ENABLE": "1"})
    text = table(runs, env, args.threads, load)
    print(text)
    if not (args.no_write or args.quick):
        write_section(text, ROOT / "docs" / "benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
