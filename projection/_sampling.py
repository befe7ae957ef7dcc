"""Sampling kernels: precomputed integer taps + weights, and a bounded grid cache.

Every resampling in this package is ``out[n] = sum_k weight[n, k] * src[index[n, k]]`` over
the flattened source pixels.  Building the taps once per (geometry, sizes, mode, device,
dtype) and reusing them across frames is what makes the conversions fast
(shared/specs/projection-performance.md); the wrap across the equirect seam and the
continuation across the poles are folded into the integer indices, so no padding copy is
needed and a sample between the last and the first column blends both.

Coordinates are continuous pixel coordinates with pixel centres at integers (``x = j`` is
the centre of column ``j``).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Mode = Literal["nearest", "bilinear", "bicubic"]
MODES = ("nearest", "bilinear", "bicubic")
# Keys' cubic convolution with a = -0.75, the value torch.nn.functional.grid_sample and
# OpenCV use (aten/src/ATen/native/UpSample.h: get_cubic_upsample_coefficients).
BICUBIC_A = -0.75
# Entries kept by the grid cache.  A videopanda8 rig at 512x512 needs ~2M taps x 4 (bilinear)
# = ~100 MB of indices + weights, so a handful of geometries is plenty.
GRID_CACHE_SIZE = 16
# ... and at most this many bytes: a 1024x1024 view costs 32 MB of bilinear taps (4 int32
# indices + 4 float32 weights per pixel), 128 MB bicubic; the lookbeyond_loop rig at
# 1024 px bilinear (12 views) is ~400 MB.
GRID_CACHE_BYTES = 1 << 30
# A batch with more distinct cameras than this (a camera path, a sweep) builds its taps
# without caching them, so it neither thrashes the cache nor evicts the rig grids.
MAX_CACHED_CAMERAS = 4


# Fresh CPU buffers at least this large are allocated with a transparent-huge-page hint.
HUGEPAGE_MIN_BYTES = 16 << 20
_HUGE = 1 << 21  # 2 MiB, the x86-64 / arm64 huge page
_MADV_HUGEPAGE = 14


def _load_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise()


def empty_like_huge(like: Tensor, *shape: int) -> Tensor:
    """``like.new_empty(shape)``, asking Linux for transparent huge pages on a large CPU buffer.

    The first write to a fresh 100-400 MB torch buffer costs more in 4 KiB page faults
    than the resampling itself (shared/specs/projection-performance.md: ~0.15 s per
    400 MB, ~0.03 s with huge pages).  torch only asks for huge pages when the process is
    started with ``THP_MEM_ALLOC_ENABLE=1``; this gives the same hint (``madvise
    MADV_HUGEPAGE``) for the buffers the conversions write, before they are touched.
    The hint only changes how pages are backed, never the contents; where it is not
    available (other OS, THP disabled, not CPU) it is skipped silently.
    """
    out = like.new_empty(shape)
    nbytes = out.numel() * out.element_size()
    if _madvise is not None and out.device.type == "cpu" and nbytes >= HUGEPAGE_MIN_BYTES:
        start = (out.data_ptr() + _HUGE - 1) & ~(_HUGE - 1)
        stop = (out.data_ptr() + nbytes) & ~(_HUGE - 1)
        if stop > start:
            _madvise(start, stop - start, _MADV_HUGEPAGE)  # advice only: failure is harmless
    return out


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: unknown interpolation {mode!r}; choose one of {list(MODES)}")
    return mode


@dataclass(frozen=True)
class Taps:
    """``index (N, K)`` into a flattened ``(H*W)`` source and ``weight (N, K)``.

    Indices are int32 when the source allows it: with a flat index and ``offsets`` (one
    bag of ``K`` taps per output pixel) ``embedding_bag`` takes fbgemm's fused kernel,
    ~5x faster than the int64 ``(N, K)`` form on this CPU (measured, 1 thread).
    """

    index: Tensor
    weight: Tensor

    @staticmethod
    def make(index: Tensor, weight: Tensor, dtype: torch.dtype) -> "Taps":
        small = index.numel() == 0 or int(index.max()) < 2**31 - 1
        return Taps(index.to(torch.int32 if small else torch.int64).contiguous(), weight.to(dtype).contiguous())

    @property
    def taps_per_pixel(self) -> int:
        return self.index.shape[-1]


# --------------------------------------------------------------------------- cache


def _nbytes(value) -> int:
    """Bytes held by the tensors inside a cache value (tensors, tuples, dataclasses)."""
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


class GridCache:
    """An explicit LRU cache of sampling taps, bounded by entries and by bytes.

    Values are never written in place by this package (tests check it), so callers may
    share them.  Thread-safe.  The newest entry is always kept, even alone over the byte
    budget (it is in use).
    """

    def __init__(self, maxsize: int = GRID_CACHE_SIZE, max_bytes: int = GRID_CACHE_BYTES):
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], object], use: bool = True):
        """The value for ``key``, built (and stored) if absent; ``use=False`` just builds."""
        if not use:
            return build()
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key][0]
        value = build()
        size = _nbytes(value)
        with self._lock:
            if key in self._data:
                self._bytes -= self._data[key][1]
            self._data[key] = (value, size)
            self._bytes += size
            self._data.move_to_end(key)
            while len(self._data) > 1 and (len(self._data) > self.maxsize or self._bytes > self.max_bytes):
                _, (_, old) = self._data.popitem(last=False)
                self._bytes -= old
        return value

    def items(self):
        with self._lock:
            return [(k, v) for k, (v, _) in self._data.items()]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)


GRID_CACHE = GridCache()


# --------------------------------------------------------------------------- tap builders


def _1d_taps(x: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Integer positions ``(..., K)`` and weights ``(..., K)`` along one axis."""
    if mode == "nearest":
        return torch.floor(x + 0.5).long()[..., None], torch.ones_like(x)[..., None]
    x0 = torch.floor(x)
    t = x - x0
    x0 = x0.long()
    if mode == "bilinear":
        return torch.stack([x0, x0 + 1], -1), torch.stack([1 - t, t], -1)
    a = BICUBIC_A
    t1, t2 = t + 1, 1 - t

    def near(s):  # |s| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s):  # 1 < |s| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    w = torch.stack([far(t1), near(t), near(t2), far(t2 + 1)], -1)
    return torch.stack([x0 - 1, x0, x0 + 1, x0 + 2], -1), w


def _combine(ix: Tensor, wx: Tensor, iy: Tensor, wy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Outer product of per-axis taps: ``(N, Ky*Kx)`` columns, rows and weights."""
    k = ix.shape[-1]
    cols = ix[..., None, :].expand(*ix.shape[:-1], k, k)
    rows = iy[..., :, None].expand(*iy.shape[:-1], k, k)
    w = wy[..., :, None] * wx[..., None, :]
    flat = (*ix.shape[:-1], k * k)
    return cols.reshape(flat), rows.reshape(flat), w.reshape(flat)


def erp_taps(x: Tensor, y: Tensor, erp_hw: tuple[int, int], mode: str) -> Taps:
    """Taps sampling an equirect at pixel coordinates ``x, y`` (any shape, flattened).

    Columns wrap around the seam; rows past a pole continue on the other side of the pole
    (row ``-1 - r`` is row ``r`` shifted by half the width).
    """
    h, w = erp_hw
    ix, wx = _1d_taps(x.reshape(-1), mode)
    iy, wy = _1d_taps(y.reshape(-1), mode)
    cols, rows, weight = _combine(ix, wx, iy, wy)
    above, below = rows < 0, rows >= h
    rows = torch.where(above, -1 - rows, torch.where(below, 2 * h - 1 - rows, rows))
    cols = cols + (above | below).long() * (w // 2)
    # Rows can only leave the image by less than the kernel size; clamp for safety with
    # tiny images (H < 4 with bicubic).
    rows = rows.clamp(0, h - 1)
    cols = torch.remainder(cols, w)
    return Taps(rows * w + cols, weight)


def clamp_taps(x: Tensor, y: Tensor, hw: tuple[int, int], mode: str) -> Taps:
    """Taps sampling a plain image at ``x, y`` with edge clamping (border extension)."""
    h, w = hw
    ix, wx = _1d_taps(x.reshape(-1), mode)
    iy, wy = _1d_taps(y.reshape(-1), mode)
    cols, rows, weight = _combine(ix.clamp(0, w - 1), wx, iy.clamp(0, h - 1), wy)
    return Taps(rows * w + cols, weight)


# --------------------------------------------------------------------------- gather


def _offsets(n: int, k: int, like: Tensor) -> Tensor:
    return torch.arange(0, n * k, k, dtype=like.dtype, device=like.device)


def bag(table: Tensor, taps: Taps, start: int = 0, stop: int | None = None,
        extra_weight: Tensor | None = None) -> Tensor:
    """``out[n] = sum_k weight[n, k] * table[index[n, k]]`` for pixels ``start:stop``.

    table: ``(rows, D)``.  Returns ``(stop - start, D)``.  ``extra_weight (N,)`` multiplies
    each pixel's weights (stitch weights).  Differentiable in ``table`` and the weights.
    """
    index, weight = taps.index[start:stop], taps.weight[start:stop]
    if extra_weight is not None:
        weight = weight * extra_weight[start:stop, None]
    n, k = index.shape
    return F.embedding_bag(index.reshape(-1), table, _offsets(n, k, index),
                           per_sample_weights=weight.reshape(-1).to(table.dtype), mode="sum")


def table_of(src: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> the ``(H*W, B*C)`` gather table: each row holds one pixel's
    values for the whole batch, so a tap reads one contiguous run (one copy)."""
    b, c, h, w = src.shape
    return src.permute(2, 3, 0, 1).reshape(h * w, b * c)


def scratch_table_of(src: Tensor) -> Tensor:
    """:func:`table_of` for the no-grad fast paths: the view when the layout allows it,
    else one copy into a huge-page buffer (see :func:`empty_like_huge`)."""
    b, c, h, w = src.shape
    perm = src.permute(2, 3, 0, 1)
    try:
        return perm.view(h * w, b * c)
    except RuntimeError:
        table = empty_like_huge(src, h, w, b, c)
        table.copy_(perm)
        return table.view(h * w, b * c)


def gather(src: Tensor, taps: Taps) -> Tensor:
    """Apply ``taps`` to every image of ``src (B, C, H, W)``; returns ``(N, B, C)``.

    Differentiable in ``src`` and in ``taps.weight``.
    """
    b, c = src.shape[:2]
    return bag(table_of(src), taps).view(-1, b, c)


def gather_table_into(table: Tensor, b: int, c: int, taps: Taps, out: Tensor, rows_per_chunk: int) -> Tensor:
    """Fast path of :func:`gather` writing straight into ``out (B, h, w, C)`` memory.

    ``table`` is :func:`table_of` the source; ``taps`` cover ``h*w`` output pixels in
    row-major order; ``out`` is channels-last ``(B, h, w, C)`` (e.g. one view's frames of a
    view-major batch).  Works in chunks of ``rows_per_chunk`` output rows so the small
    ``(pixels, B, C) -> (B, pixels, C)`` transpose stays in cache.  Not for autograd.
    """
    oh, ow = out.shape[1:3]
    for r0 in range(0, oh, rows_per_chunk):
        r1 = min(oh, r0 + rows_per_chunk)
        chunk = bag(table, taps, r0 * ow, r1 * ow)
        out[:, r0:r1].copy_(chunk.view(r1 - r0, ow, b, c).permute(2, 0, 1, 3))
    return out
