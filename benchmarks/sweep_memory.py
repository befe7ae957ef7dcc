"""Peak memory of the Perspective Sweep and of reading a MegaSaM path (issue 18 item 2).

Question: what does the Perspective Sweep add to the process's peak RSS per byte of the IMAGE
it returns, against the way it worked before (every chunk kept in a list, concatenated at the
end, then clamped and made contiguous: ``torch.cat`` + ``bchw_to_image``)?  And what does
reading a MegaSaM ``.npz`` of :data:`cameras.formats.megasam.MAX_POSES` poses peak at?

Each measurement runs in a fresh Python process (peak RSS, ``VmHWM``, is per process), after
a warm-up call at a small size; the peak is reported as bytes above the RSS just before the
call.  Run from the repository's parent folder's view of the pack::

    python benchmarks/sweep_memory.py [--frames 96] [--size 1280x720]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import io, json, sys
sys.path.insert(0, {tests!r}); import conftest  # registers the checkout as `pano360`
import numpy as np, torch
torch.set_num_threads(1)

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

case, n, h, w = {case!r}, {n}, {h}, {w}
from pano360.cameras import render_path, yaw_sweep
erp = torch.rand(1, 3, 1024, 2048)
render_path(erp, yaw_sweep(2), (h, w), chunk=2)   # warm-up: kernels, allocator
if case == "megasam":
    from pano360.cameras.formats.megasam import MAX_POSES, read_megasam_npz
    buf = io.BytesIO()
    c2w = np.tile(np.eye(4, dtype=np.float32), (MAX_POSES, 1, 1))
    np.savez_compressed(buf, cam_c2w=c2w, intrinsic=np.array([[500., 0, 320], [0, 500., 240], [0, 0, 1]]))
    del c2w
    buf.seek(0)
base = rss("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")   # peak := now
if case == "ours":
    image = torch.empty(n, h, w, 3)
    render_path(erp, yaw_sweep(n), (h, w), chunk=8, out=image.movedim(-1, 1))
    image.clamp_(0, 1)
    out_bytes = image.numel() * 4
elif case == "collect_then_cat":
    out = render_path(erp, yaw_sweep(n), (h, w), chunk=8)
    image = out.movedim(1, -1).clamp(0.0, 1.0).to(torch.float32).contiguous()   # the old bchw_to_image
    out_bytes = image.numel() * 4
else:
    path = read_megasam_npz(buf).fit_to(n)
    out_bytes = 0
print(json.dumps({{"peak": rss("VmHWM") - base, "out_bytes": out_bytes}}))
"""


def measure(case: str, n: int, h: int, w: int) -> dict:
    code = CHILD.format(tests=str(ROOT / "tests"), case=case, n=n, h=h, w=w)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", default="1280x720", help="WxH of the output frames")
    args = parser.parse_args()
    w, h = map(int, args.size.split("x"))
    import torch

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, float32, "
          f"panorama 1024x2048, {args.frames} frames of {w}x{h}\n")
    print("| case | peak above start | output IMAGE | peak / output |")
    print("|---|---|---|---|")
    for case, label in (("ours", "Pano360 Perspective Sweep (frames rendered into the IMAGE)"),
                        ("collect_then_cat", "before: chunks collected, torch.cat, clamped copy")):
        r = measure(case, args.frames, h, w)
        print(f"| {label} | {r['peak'] / 1e6:.0f} MB | {r['out_bytes'] / 1e6:.0f} MB | {r['peak'] / r['out_bytes']:.2f} |")
    from pano360.cameras.formats.megasam import MAX_POSES  # noqa: E402  (after the children: same import path)

    r = measure("megasam", 97, h, w)
    print(f"\nMegaSaM npz of {MAX_POSES} poses read and fitted to 97 frames: peak {r['peak'] / 1e6:.0f} MB above start.")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # noqa: F401,E402  (registers the checkout as `pano360`)

    main()
