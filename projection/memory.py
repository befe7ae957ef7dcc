"""Peak memory of a projection request, estimated before anything is allocated.

Every conversion needs its output, sometimes one copy of its input in gather layout, the
taps it keeps in the grid cache (only when they fit its budget) and a working set bounded by
the chunk sizes of :mod:`._sampling` and :mod:`.placement`, whatever the request's size
(docs/projection.md "Memory" states the model per operation; benchmarks/projection_memory.py
measures it).  Nodes compare these estimates with ComfyUI's free memory
(``nodes._common.check_fits``) and refuse a request that cannot fit, naming the input, before
allocating anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from . import placement as _placement
from ._sampling import CHUNK_PIXELS, GRID_CACHE, ROWS_PER_CHUNK, TAPS_PER_PIXEL, Taps, check_mode
from .coordinates import perspective_to_erp_coords
from .geometry import Rig, View, _check_size, check_erp_hw

__all__ = [
    "MemoryEstimate",
    "estimate_erp_to_perspective",
    "estimate_erp_to_rig",
    "estimate_erp_to_cubemap",
    "estimate_cubemap_to_erp",
    "estimate_rotate_erp",
    "estimate_perspective_to_erp",
    "estimate_stitch_rig",
    "estimate_rig",
    "footprint_fraction",

]

# Temporaries of building the taps of one chunk, per output pixel (float64 rays and angles,
# int64 tap indices and float64 weights before the cast, the cast copies), measured as peak
# RSS growth per chunk pixel with benchmarks/projection_memory.py --calibrate (82 / 347 /
# 1075 bytes for nearest / bilinear / bicubic) and rounded up.
GEOMETRY_BYTES_PER_PIXEL = {"nearest": 128, "bilinear": 512, "bicubic": 1536}
# The coarse footprint pass per canvas pixel of a band: float32 directions (cached or built),
# R^T d, three masks and the candidate list (measured ~60 bytes, rounded up).
COARSE_BYTES_PER_PIXEL = 96
# The cube-map taps build per-face coordinates of every pixel (six candidate faces in float64):
# about twice the perspective chunk's temporaries (measured, benchmarks/projection_memory.py).
CUBE_GEOMETRY_FACTOR = 2
# Fixed cost of the process-wide allocations a conversion may touch (the arange/offset
# buffers, torch's small-allocation pools), rounded up from the smallest measured growth.
BASE_BYTES = 16 << 20


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes above the inputs, by part (``parts`` name -> bytes)."""

    op: str
    parts: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def describe(self) -> str:
        shown = ", ".join(f"{k} {_format_bytes(v)}" for k, v in self.parts.items() if v >= (1 << 20))
        return f"{self.op} needs about {_format_bytes(self.total)} ({shown})"


def _format_bytes(n: int) -> str:
    """Decimal MB / GB, as system monitors (and the nodes' messages) show memory."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _geometry(mode: str, width: int) -> int:
    """Working set of one geometry chunk plus the gather's row chunk."""
    rows = max(1, CHUNK_PIXELS // max(width, 1))
    return min(rows * width, CHUNK_PIXELS * 2) * GEOMETRY_BYTES_PER_PIXEL[mode]


def _cached_taps(n_pixels: int, mode: str, source_rows: int, dtype) -> int:
    nbytes = Taps.nbytes_for(n_pixels, TAPS_PER_PIXEL[mode], source_rows, dtype)
    return nbytes if GRID_CACHE.accepts(nbytes) else 0


def _table_copy(batch: int, channels: int, h: int, w: int, itemsize: int, channels_last: bool) -> int:
    """The gather table is a free view only for one channels-last image (or a single channel)."""
    free = (batch == 1 and channels_last) or (batch == 1 and channels == 1)
    return 0 if free else batch * channels * h * w * itemsize


def estimate_erp_to_rig(frames: int, channels: int, erp_hw, views: int, out_hw, mode: str = "bilinear",
                        dtype: torch.dtype = torch.float32, channels_last: bool = True,
                        op: str = "erp_to_rig") -> MemoryEstimate:
    """Splitting ``frames`` equirect frames into ``views`` views of ``out_hw`` (same for
    :func:`.perspective.erp_to_perspective` with ``views=1``)."""
    check_mode(mode)
    eh, ew = check_erp_hw(erp_hw)
    h, w = _check_size(out_hw[0], "out_hw[0]"), _check_size(out_hw[1], "out_hw[1]")
    s = dtype.itemsize
    out = views * frames * channels * h * w * s
    taps = min(views * _cached_taps(h * w, mode, eh * ew, dtype), GRID_CACHE.max_bytes)
    gather = 2 * ROWS_PER_CHUNK * w * frames * channels * s
    return MemoryEstimate(op, {
        "output": out,
        "input copy": _table_copy(frames, channels, eh, ew, s, channels_last),
        "cached taps": taps,
        "working set": _geometry(mode, w) + gather + BASE_BYTES,
    })


def estimate_erp_to_perspective(batch: int, channels: int, erp_hw, out_hw, mode: str = "bilinear",
                                dtype: torch.dtype = torch.float32, channels_last: bool = True,
                                cameras: int = 1) -> MemoryEstimate:
    """``batch`` views of ``out_hw`` from ``batch`` equirect images with ``cameras`` distinct
    cameras (more than four are streamed, nothing cached)."""
    est = estimate_erp_to_rig(batch, channels, erp_hw, 1, out_hw, mode, dtype, channels_last, "erp_to_perspective")
    parts = dict(est.parts)
    parts["cached taps"] = min(cameras * parts["cached taps"], GRID_CACHE.max_bytes) if cameras <= 4 else 0
    return MemoryEstimate("erp_to_perspective", parts)


# Output pixels of each cube-map layout per face pixel beyond the six faces: horizon and
# dice are copies of the faces (dice 4x3 face areas with the empty slots).
LAYOUT_COPY_FACES = {"stack": 0, "list": 0, "dict": 0, "horizon": 6, "dice": 12}


def estimate_erp_to_cubemap(frames: int, channels: int, erp_hw, face: int, mode: str = "bilinear",
                            dtype: torch.dtype = torch.float32, channels_last: bool = True,
                            layout: str = "stack") -> MemoryEstimate:
    est = estimate_erp_to_rig(frames, channels, erp_hw, 6, (face, face), mode, dtype, channels_last, "erp_to_cubemap")
    parts = dict(est.parts)
    parts["layout copy"] = LAYOUT_COPY_FACES[layout] * face * face * frames * channels * dtype.itemsize
    return MemoryEstimate("erp_to_cubemap", parts)


def estimate_cubemap_to_erp(frames: int, channels: int, face: int, erp_h: int, mode: str = "bilinear",
                            dtype: torch.dtype = torch.float32) -> MemoryEstimate:
    check_mode(mode)
    eh, ew = check_erp_hw((erp_h, 2 * int(erp_h)), "erp_h")
    face = _check_size(face, "face")
    s = dtype.itemsize
    return MemoryEstimate("cubemap_to_erp", {
        "output": frames * channels * eh * ew * s,
        "input copy": 6 * face * face * frames * channels * s,
        "cached taps": _cached_taps(eh * ew, mode, 6 * face * face, dtype),
        "working set": CUBE_GEOMETRY_FACTOR * _geometry(mode, ew) + 2 * ROWS_PER_CHUNK * ew * frames * channels * s
        + BASE_BYTES,
    })


def estimate_rotate_erp(batch: int, channels: int, erp_hw, mode: str = "bilinear",
                        dtype: torch.dtype = torch.float32, channels_last: bool = True) -> MemoryEstimate:
    check_mode(mode)
    eh, ew = check_erp_hw(erp_hw)
    s = dtype.itemsize
    return MemoryEstimate("rotate_erp", {
        "output": batch * channels * eh * ew * s,
        "input copy": _table_copy(batch, channels, eh, ew, s, channels_last),
        "cached taps": _cached_taps(eh * ew, mode, eh * ew, dtype),
        "working set": _geometry(mode, ew) + 2 * ROWS_PER_CHUNK * ew * batch * channels * s + BASE_BYTES,
    })


def _footprint_working(erp_hw, mode: str) -> int:
    """One band of the coarse pass, the band's footprint held while it is applied, one chunk
    of the exact test and taps."""
    eh, ew = erp_hw
    band = min(eh * ew, max(ew, (_placement.FOOTPRINT_BAND_PIXELS // ew) * ew))
    entry = 8 + TAPS_PER_PIXEL[mode] * 16 + 8  # pixel, taps (float64 weights before the cast), weight
    return band * (COARSE_BYTES_PER_PIXEL + entry) + CHUNK_PIXELS * GEOMETRY_BYTES_PER_PIXEL[mode] + 32 * (eh + ew)


# Canvas of the coarse footprint sample behind the estimates (a few thousand pixels, ~ms).
SAMPLE_ERP_HW = (64, 128)
# Safety factor on the sampled footprint area (its border pixels at the sample's resolution).
SAMPLE_MARGIN = 1.25


def footprint_fraction(view: View) -> float:
    """Share of an equirect canvas a view covers, sampled on a small canvas (rounded up)."""
    *_, inside = perspective_to_erp_coords(
        math.radians(view.yaw), math.radians(view.pitch), math.radians(view.roll), math.radians(view.fov),
        (view.height, view.width), SAMPLE_ERP_HW, fov_y=None if view.fov_y is None else math.radians(view.fov_y))
    border = 2 * (SAMPLE_ERP_HW[0] + SAMPLE_ERP_HW[1]) / (SAMPLE_ERP_HW[0] * SAMPLE_ERP_HW[1])
    return min(1.0, float(inside.double().mean()) * SAMPLE_MARGIN + border)


def _kept_footprints(fractions, canvas: int, view_pixels: int, mode: str, dtype) -> int:
    """Bytes of footprints kept for the cache (each entry: pixel + taps), at most its budget."""
    k = TAPS_PER_PIXEL[mode]
    entry = 8 + Taps.nbytes_for(1, k, view_pixels, dtype) + dtype.itemsize
    return min(int(sum(fractions) * canvas * entry), GRID_CACHE.max_bytes)


def estimate_perspective_to_erp(views: Sequence[View], channels: int, erp_hw, mode: str = "bilinear",
                                dtype: torch.dtype = torch.float32) -> MemoryEstimate:
    """Placing each of ``views`` (one image each, its camera and size) on its own canvas."""
    check_mode(mode)
    eh, ew = check_erp_hw(erp_hw)
    h, w = views[0].height, views[0].width
    s = dtype.itemsize
    cams = {(v.yaw, v.pitch, v.roll, v.fov, v.fov_y) for v in views}
    kept = 0
    if len(cams) <= 4:  # MAX_CACHED_CAMERAS: few cameras keep their footprints
        kept = _kept_footprints([footprint_fraction(v) for v in {(v.yaw, v.pitch, v.roll, v.fov, v.fov_y): v
                                                                  for v in views}.values()], eh * ew, h * w, mode, dtype)
    group = max(1, len(views) // len(cams))
    return MemoryEstimate("perspective_to_erp", {
        "output": len(views) * (channels + 1) * eh * ew * s,
        "input copy": group * channels * h * w * s,
        "cached footprints": kept,
        "working set": _footprint_working((eh, ew), mode) + BASE_BYTES,
    })


def estimate_stitch_rig(rig: Rig, frames: int, channels: int, erp_hw, view_hw=None, mode: str = "bilinear",
                        dtype: torch.dtype = torch.float32) -> MemoryEstimate:
    """Stitching ``rig``'s views (``frames`` each, of ``view_hw`` or the rig's size) into
    ``erp_hw`` frames."""
    check_mode(mode)
    eh, ew = check_erp_hw(erp_hw)
    h, w = rig.sizes(view_hw)
    s = dtype.itemsize
    canvas = eh * ew
    return MemoryEstimate("stitch_rig", {
        "output": frames * (channels + 1) * canvas * s,
        "accumulator": frames * channels * canvas * s,
        "weight sum": 8 * canvas,
        "view table": frames * channels * h * w * s,
        "stitch plan": _kept_footprints([footprint_fraction(v) for v in rig.views], canvas, h * w, mode, dtype),
        "working set": _footprint_working((eh, ew), mode) + _placement.STITCH_APPLY_BYTES + BASE_BYTES,
    })


def estimate_rig(rig: Rig, frames: int, channels: int, erp_hw, out_hw=None, mode: str = "bilinear",
                 dtype: torch.dtype = torch.float32, channels_last: bool = True) -> MemoryEstimate:
    """:func:`estimate_erp_to_rig` for a rig (its views' size unless ``out_hw``)."""
    return estimate_erp_to_rig(frames, channels, erp_hw, rig.num_views, rig.sizes(out_hw), mode, dtype, channels_last)
