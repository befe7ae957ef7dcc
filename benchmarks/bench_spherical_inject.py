"""How much does tagging an MP4 with spherical metadata cost, next to copying the file?

Peer: ``shutil.copyfile`` of the same file (the least any rewrite must do).  Also the
encode time of the frames with the bundled ffmpeg (libx264), to put the tagging into
perspective.  Fixed sizes, warm-up, median of repeats; prints a table.

    python benchmarks/bench_spherical_inject.py
"""

from __future__ import annotations

import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import conftest  # noqa: E402,F401  (registers this checkout as `pano360`)

from pano360.media.spherical_mp4 import inject_spherical  # noqa: E402
from pano360.media.video import write_mp4  # noqa: E402

FRAMES, H, W, FPS, CRF = 48, 512, 1024, 24, 18
REPEATS = 5


def _median_time(fn, repeats=REPEATS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    # Noise compresses badly, so the file is large and copy/inject are dominated by I/O.
    frames = rng.integers(0, 256, (FRAMES, H, W, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src.mp4")
        t0 = time.perf_counter()
        write_mp4(frames, src, FPS, CRF)
        encode = time.perf_counter() - t0
        size_mb = os.path.getsize(src) / 1e6
        copy = _median_time(lambda: shutil.copyfile(src, os.path.join(tmp, "copy.mp4")))
        inject = _median_time(lambda: inject_spherical(src, os.path.join(tmp, "tagged.mp4")))
    print(f"device: CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores; python {platform.python_version()}")
    print(f"{FRAMES} frames {W}x{H}, crf {CRF}: file {size_mb:.1f} MB")
    print("| step | time | ratio to copy |")
    print("|---|---|---|")
    print(f"| shutil.copyfile (peer) | {copy * 1e3:.1f} ms | 1.00 |")
    print(f"| inject_spherical (V1+V2) | {inject * 1e3:.1f} ms | {inject / copy:.2f} |")
    print(f"| encode (libx264, once) | {encode * 1e3:.0f} ms | {encode / copy:.0f} |")


if __name__ == "__main__":
    main()
