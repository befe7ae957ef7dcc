"""Peak memory of the projection operations: measured peak RSS against the estimate.

    python benchmarks/projection_memory.py [--before PATH] [--no-write] [--only NAME ...]

Each case runs in a fresh process: it builds its inputs, reads the resident set size, runs
the operation once and reads the process's peak RSS (``ru_maxrss``); the growth is the
operation's peak memory above its inputs.  Next to it: the estimate of
``projection.memory`` for the same request, and the bytes per output pixel.  ``--before
PATH`` runs the same cases on another checkout of the pack (e.g. ``git worktree add /tmp/old
<commit>``) for a before/after table; cases whose old peak would not fit this machine run
there at a reduced size only (marked), and the table gives the old bytes per output pixel.
The three large cases are issue 18's: a 16000x16000 view from a 512x1024 panorama, an
8192x8192 view from a 64x128 panorama, 64 views stitched at height 4096 (feather).
``--calibrate`` measures the per-pixel working set of the geometry chunks instead.

The table goes to docs/benchmarks.md (section "Projection memory") unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (operation, arguments); sizes of issue 18's cases and of the everyday ones.
CASES = {
    "view16000": ("e2p", {"frames": 1, "erp_h": 512, "out": 16000, "mode": "bilinear"}),
    "e2p8192": ("e2p", {"frames": 1, "erp_h": 64, "out": 8192, "mode": "bilinear"}),
    "stitch64": ("stitch", {"views": 64, "size": 512, "fov": 90.0, "frames": 1, "erp_h": 4096, "weight": "feather"}),
    "e2p_videopanda8": ("rig", {"frames": 16, "erp_h": 512, "size": 512, "mode": "bilinear"}),
    "stitch_videopanda8": ("stitch_vp8", {"frames": 16, "size": 512, "erp_h": 512, "weight": "uniform"}),
    "place_argus": ("place", {"frames": 25, "h": 384, "w": 512, "erp_h": 512}),
    "e2c": ("e2c", {"erp_h": 1024, "face": 512}),
    "c2e": ("c2e", {"erp_h": 1024, "face": 512}),
    "rotate": ("rotate", {"frames": 4, "erp_h": 1024}),
}
# Reduced sizes for the old code where its peak would not fit this machine (24 GB shared).
REDUCED = {
    "view16000": {"out": 2048},
    "e2p8192": {"out": 2048},
    "stitch64": {"erp_h": 1024},
}


# --------------------------------------------------------------------------- child


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _import(root: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("pano360", root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["pano360"] = module
    spec.loader.exec_module(module)


def child(root: Path, op: str, kw: dict, estimate: bool) -> dict:
    import resource

    import torch

    torch.set_num_threads(1)
    _import(root)
    from pano360 import projection as P

    def image(b, h, w):  # ComfyUI's IMAGE as the nodes pass it: channels-last (B, C, H, W)
        return torch.rand(b, h, w, 3).movedim(-1, 1)

    est = None
    if op == "e2p":
        src = image(kw["frames"], kw["erp_h"], 2 * kw["erp_h"])
        out_px = kw["out"] ** 2 * kw["frames"]
        run = lambda: P.erp_to_perspective(src, 0.3, 0.2, 0.1, math.radians(90), (kw["out"], kw["out"]), kw["mode"])
        if estimate:
            from pano360.projection.memory import estimate_erp_to_perspective
            est = estimate_erp_to_perspective(kw["frames"], 3, (kw["erp_h"], 2 * kw["erp_h"]), (kw["out"], kw["out"]),
                                              kw["mode"])
    elif op == "rig":
        rig = P.rig_preset("videopanda8", size=kw["size"])
        src = image(kw["frames"], kw["erp_h"], 2 * kw["erp_h"])
        out_px = 8 * kw["size"] ** 2 * kw["frames"]
        run = lambda: P.erp_to_rig(src, rig, mode=kw["mode"])
        if estimate:
            from pano360.projection.memory import estimate_rig
            est = estimate_rig(rig, kw["frames"], 3, (kw["erp_h"], 2 * kw["erp_h"]), mode=kw["mode"])
    elif op in ("stitch", "stitch_vp8"):
        rig = P.rig_preset("horizontal_n", n=kw["views"], fov=kw["fov"], size=kw["size"]) if op == "stitch" else \
            P.rig_preset("videopanda8", size=kw["size"])
        views = image(rig.num_views * kw["frames"], kw["size"], kw["size"])
        out_px = kw["erp_h"] * 2 * kw["erp_h"] * kw["frames"]
        run = lambda: P.stitch_rig(views, rig, (kw["erp_h"], 2 * kw["erp_h"]), weight=kw["weight"])
        if estimate:
            from pano360.projection.memory import estimate_stitch_rig
            est = estimate_stitch_rig(rig, kw["frames"], 3, (kw["erp_h"], 2 * kw["erp_h"]))
    elif op == "place":
        t, h, w = kw["frames"], kw["h"], kw["w"]
        frames = image(t, h, w)
        angles = [torch.tensor([math.radians(a(i)) for i in range(t)]) for a in
                  (lambda i: 14.4 * i - 180, lambda i: 30 * math.sin(i), lambda i: 5 * math.cos(i))]
        out_px = t * kw["erp_h"] * 2 * kw["erp_h"]
        run = lambda: P.perspective_to_erp(frames, *angles, math.radians(75), (kw["erp_h"], 2 * kw["erp_h"]))
        if estimate:
            from pano360.projection.memory import estimate_perspective_to_erp
            views = [P.View(math.degrees(a), math.degrees(b), math.degrees(c), 75.0, w, h)
                     for a, b, c in zip(*[x.tolist() for x in angles])]
            est = estimate_perspective_to_erp(views, 3, (kw["erp_h"], 2 * kw["erp_h"]))
    elif op == "e2c":
        src = image(1, kw["erp_h"], 2 * kw["erp_h"])
        out_px = 6 * kw["face"] ** 2
        run = lambda: P.erp_to_cubemap(src, kw["face"], "dice")
        if estimate:
            from pano360.projection.memory import estimate_erp_to_cubemap
            est = estimate_erp_to_cubemap(1, 3, (kw["erp_h"], 2 * kw["erp_h"]), kw["face"], layout="dice")
    elif op == "c2e":
        cube = image(1, 3 * kw["face"], 4 * kw["face"])
        out_px = kw["erp_h"] * 2 * kw["erp_h"]
        run = lambda: P.cubemap_to_erp(cube, kw["erp_h"], "dice")
        if estimate:
            from pano360.projection.memory import estimate_cubemap_to_erp
            est = estimate_cubemap_to_erp(1, 3, kw["face"], kw["erp_h"])
    elif op == "rotate":
        src = image(kw["frames"], kw["erp_h"], 2 * kw["erp_h"])
        out_px = kw["frames"] * kw["erp_h"] * 2 * kw["erp_h"]
        run = lambda: P.rotate_erp(src, 0.3, 0.2, 0.1)
        if estimate:
            from pano360.projection.memory import estimate_rotate_erp
            est = estimate_rotate_erp(kw["frames"], 3, (kw["erp_h"], 2 * kw["erp_h"]))
    else:
        raise ValueError(f"op: unknown case operation {op!r}")
    import time

    base = _rss()
    cpu = time.process_time()
    run()
    cpu = time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"growth": peak - base, "out_px": out_px, "estimate": None if est is None else est.total,
            "parts": None if est is None else est.parts, "cpu_s": cpu}


def calibrate(root: Path, mode: str) -> dict:
    """Peak growth of building the taps of one chunk, per chunk pixel."""
    import resource

    import torch

    torch.set_num_threads(1)
    _import(root)
    from pano360.projection import _sampling as S
    from pano360.projection.perspective import perspective_source

    source = perspective_source((0.3, 0.2, 0.1, 1.5, None), (256, 256), (512, 1024), mode, "centres", "centres",
                                torch.device("cpu"), torch.float32, cache=False)
    source.rows(0, 1)  # warm-up: torch's own first-call allocations
    base = _rss()
    source.rows(0, S.CHUNK_PIXELS // 256)
    return {mode: (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base) / S.CHUNK_PIXELS}


# --------------------------------------------------------------------------- parent


def _run_child(root: Path, name: str, kw_override: dict, estimate: bool) -> dict:
    op, kw = CASES[name]
    kw = {**kw, **kw_override}
    cmd = [sys.executable, __file__, "--child", json.dumps({"root": str(root), "op": op, "kw": kw, "estimate": estimate})]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1], "kw": kw}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "kw": kw}


def _mib(n) -> str:
    return "–" if n is None else f"{n / 2**20:,.0f}"


def _size(name: str, kw: dict) -> str:
    op = CASES[name][0]
    if op == "e2p":
        return f"{kw['out']}x{kw['out']} view from {kw['erp_h']}x{2 * kw['erp_h']}"
    if op == "stitch":
        return f"{kw['views']} views {kw['size']}px -> {kw['erp_h']}x{2 * kw['erp_h']}, {kw['weight']}"
    if op == "stitch_vp8":
        return f"videopanda8 {kw['frames']} frames {kw['size']}px -> {kw['erp_h']}x{2 * kw['erp_h']}"
    if op == "rig":
        return f"{kw['frames']}x{kw['erp_h']}x{2 * kw['erp_h']} -> videopanda8 {kw['size']}px"
    if op == "place":
        return f"{kw['frames']} frames {kw['h']}x{kw['w']} -> {kw['erp_h']}x{2 * kw['erp_h']}, own poses"
    if op == "e2c":
        return f"{kw['erp_h']}x{2 * kw['erp_h']} -> 6 x {kw['face']}"
    if op == "c2e":
        return f"6 x {kw['face']} -> {kw['erp_h']}x{2 * kw['erp_h']}"
    return f"{kw['frames']} x {kw['erp_h']}x{2 * kw['erp_h']}"


def table(rows: list[dict], before: bool) -> str:
    import torch

    lines = [
        "## Projection memory",
        "",
        f"`python benchmarks/projection_memory.py{' --before <old checkout>' if before else ''}` on "
        f"{platform.machine()} ({os.cpu_count()} logical CPUs, 24 GB, shared), torch {torch.__version__}, 1 torch "
        "thread, float32 RGB, inputs in ComfyUI's channels-last layout. Peak = growth of the process's peak RSS "
        "above its inputs (fresh process per case); B/px = peak bytes per output pixel; estimate = "
        "`projection.memory` for the same request, before allocating.",
        "",
        "| case | size | peak MiB | B/px | estimate MiB | estimate / peak | CPU s |"
        + (" before: size | before: peak MiB | before: B/px |" if before else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|---|" if before else ""),
    ]
    for r in rows:
        new = r["new"]
        if "error" in new:
            line = f"| {r['name']} | {_size(r['name'], new['kw'])} | failed: {new['error']} | | | | |"
        else:
            ratio = new["estimate"] / new["growth"] if new["estimate"] and new["growth"] > 0 else float("nan")
            line = (f"| {r['name']} | {_size(r['name'], new['kw'])} | {_mib(new['growth'])} | "
                    f"{new['growth'] / new['out_px']:.1f} | {_mib(new['estimate'])} | {ratio:.2f} | "
                    f"{new['cpu_s']:.1f} |")
        if before:
            old = r.get("old")
            if old is None:
                line += " | | |"
            elif "error" in old:
                line += f" {_size(r['name'], old['kw'])} | failed: {old['error']} | |"
            else:
                reduced = " (reduced)" if r["name"] in REDUCED else ""
                line += (f" {_size(r['name'], old['kw'])}{reduced} | {_mib(old['growth'])} | "
                         f"{old['growth'] / old['out_px']:.1f} |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Projection memory\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old)
    else:  # right after the Projection section
        at = re.search(r"^## (?!Projection\b).*$", old[old.find("## Projection"):], re.M)
        cut = old.find("## Projection") + at.start() if at and "## Projection" in old else len(old)
        new = old[:cut].rstrip("\n") + "\n\n" + text + "\n" + old[cut:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout of the pack to measure too")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="run only these cases")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--calibrate", action="store_true", help="per-pixel working set of the geometry chunks")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        if spec["op"] == "calibrate":
            print(json.dumps(calibrate(Path(spec["root"]), spec["mode"])))
        else:
            print(json.dumps(child(Path(spec["root"]), spec["op"], spec["kw"], spec["estimate"])))
        return 0
    if args.calibrate:
        out = {}
        for mode in ("nearest", "bilinear", "bicubic"):  # one fresh process per mode
            cmd = [sys.executable, __file__, "--child", json.dumps({"root": str(ROOT), "op": "calibrate", "mode": mode})]
            out.update(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
        print(json.dumps(out))
        return 0
    rows = []
    for name in args.only or list(CASES):
        row = {"name": name, "new": _run_child(ROOT, name, {}, True)}
        if args.before:
            row["old"] = _run_child(args.before, name, REDUCED.get(name, {}), False)
        rows.append(row)
        print(json.dumps(row), flush=True)
    text = table(rows, args.before is not None)
    print(text)
    if not args.no_write:
        write_section(text, ROOT / "docs" / "benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
