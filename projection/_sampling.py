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
# How a plain image (a perspective view) is sampled past its border: "border" repeats the edge
# pixel (clamp, the pack's default), "zeros" reads 0 there (torch grid_sample's default
# padding_mode, which Argus's pers2equi_batch uses).
PADDINGS = ("border", "zeros")
# Keys' cubic convolution with a = -0.75, the value torch.nn.functional.grid_sample and
# OpenCV use (aten/src/ATen/native/UpSample.h: get_cubic_upsample_coefficients).
BICUBIC_A = -0.75
# Taps per output pixel of each mode (1, 2x2, 4x4 source pixels).
TAPS_PER_PIXEL = {"nearest": 1, "bilinear": 4, "bicubic": 16}
# Entries kept by the grid cache.  A videopanda8 rig at 512x512 needs ~2M taps x 4 (bilinear)
# = ~64 MB of indices + weights, so a handful of geometries is plenty.
GRID_CACHE_SIZE = 16
# ... and at most this many bytes in all; an entry larger than this is never kept.  A
# 1024x1024 view costs 32 MB of bilinear taps (4 int32 indices + 4 float32 weights per
# pixel), 128 MB bicubic; the lookbeyond_loop rig at 1024 px bilinear (12 views) is ~400 MB.
GRID_CACHE_BYTES = 1 << 30
# A batch with more distinct cameras than this (a camera path, a sweep) builds its taps
# without caching them, so it neither thrashes the cache nor evicts the rig grids.
MAX_CACHED_CAMERAS = 4
# Output pixels whose geometry (float64 rays, angles, taps) is built at once: memory for the
# geometry is proportional to this, not to the output (docs/projection.md "Memory").
# 65536 pixels cost ~20 MB bilinear / ~70 MB bicubic of temporaries (measured, benchmarks/
# projection_memory.py); larger chunks are no faster on this CPU.
CHUNK_PIXELS = 1 << 16
# Output rows per gather step inside a chunk: 16 rows x 512 px x 16 frames x 3 channels
# (~1.5 MB) stays in L2 while it is transposed into the output (measured best of 4/16/64).
ROWS_PER_CHUNK = 16

ProgressCallback = Callable[[int, int], None]
"""``callback(done, total)``, called after each chunk; it may raise to cancel (the pack's one
progress signature, docs/layout.md "Shared signatures")."""


class Progress:
    """Counts chunks of work and reports them to an optional :data:`ProgressCallback`."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback, self.total, self.done = callback, max(int(total), 1), 0

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.callback is not None:
            self.callback(self.done, self.total)


def rows_per_chunk(width: int) -> int:
    """Output rows of ``width`` pixels whose geometry is built at once (:data:`CHUNK_PIXELS`)."""
    return max(1, CHUNK_PIXELS // max(int(width), 1))


def num_chunks(height: int, width: int) -> int:
    return -(-int(height) // rows_per_chunk(width))


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


def check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding: unknown padding {padding!r}; choose one of {list(PADDINGS)}")
    return padding


def index_dtype(source_rows: int) -> torch.dtype:
    """int32 indices when the source allows it: with a flat index and ``offsets`` (one bag of
    ``K`` taps per output pixel) ``embedding_bag`` takes fbgemm's fused kernel, ~5x faster than
    the int64 ``(N, K)`` form on this CPU (measured, 1 thread)."""
    return torch.int32 if source_rows < 2**31 - 1 else torch.int64


@dataclass(frozen=True)
class Taps:
    """``index (N, K)`` into a flattened ``(rows)`` source table and ``weight (N, K)``."""

    index: Tensor
    weight: Tensor

    @staticmethod
    def make(index: Tensor, weight: Tensor, dtype: torch.dtype, source_rows: int | None = None) -> "Taps":
        if source_rows is None:
            source_rows = 0 if index.numel() == 0 else int(index.max()) + 1
        return Taps(index.to(index_dtype(source_rows)).contiguous(), weight.to(dtype).contiguous())

    @staticmethod
    def empty(n: int, k: int, source_rows: int, dtype: torch.dtype, device) -> "Taps":
        return Taps(torch.empty(n, k, dtype=index_dtype(source_rows), device=device),
                    torch.empty(n, k, dtype=dtype, device=device))

    @staticmethod
    def nbytes_for(n: int, k: int, source_rows: int, dtype: torch.dtype) -> int:
        return n * k * (index_dtype(source_rows).itemsize + dtype.itemsize)

    def slice(self, start: int, stop: int) -> "Taps":
        return Taps(self.index[start:stop], self.weight[start:stop])

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

    An entry larger than ``max_bytes`` is never kept (the caller gets it, the cache is left
    as it was), so the cache never holds more than its budget.  Values are never written in
    place by this package (tests check it), so callers may share them.  Thread-safe.
    """

    def __init__(self, maxsize: int = GRID_CACHE_SIZE, max_bytes: int = GRID_CACHE_BYTES):
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def accepts(self, nbytes: int) -> bool:
        """Whether an entry of ``nbytes`` would be kept."""
        return nbytes <= self.max_bytes

    def peek(self, key: Hashable):
        """The value for ``key`` (marked as recently used), or ``None``."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key][0]
        return None

    def put(self, key: Hashable, value) -> None:
        """Keep ``value`` unless it alone is over the byte budget; evict the oldest to fit."""
        size = _nbytes(value)
        if not self.accepts(size):
            return
        with self._lock:
            if key in self._data:
                self._bytes -= self._data[key][1]
            self._data[key] = (value, size)
            self._bytes += size
            self._data.move_to_end(key)
            while len(self._data) > 1 and (len(self._data) > self.maxsize or self._bytes > self.max_bytes):
                _, (_, old) = self._data.popitem(last=False)
                self._bytes -= old

    def get(self, key: Hashable, build: Callable[[], object], use: bool = True):
        """The value for ``key``, built (and kept if it fits) if absent; ``use=False`` just builds."""
        if not use:
            return build()
        value = self.peek(key)
        if value is None:
            value = build()
            self.put(key, value)
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


def erp_taps(x: Tensor, y: Tensor, erp_hw: tuple[int, int], mode: str, grid: str = "centres") -> Taps:
    """Taps sampling an equirect at pixel coordinates ``x, y`` (any shape, flattened).

    Columns wrap around the seam (period ``W``).  ``centres`` grid: rows past a pole continue
    on the other side of the pole (row ``-1 - r`` is row ``r`` shifted by half the width);
    ``corners`` grid (row 0 and row ``H - 1`` lie ON the poles): rows past a pole are clamped
    to the pole row (only bicubic taps reach past it).  Weights are float64, indices int64.
    """
    h, w = erp_hw
    ix, wx = _1d_taps(x.reshape(-1), mode)
    iy, wy = _1d_taps(y.reshape(-1), mode)
    cols, rows, weight = _combine(ix, wx, iy, wy)
    if grid == "centres":
        above, below = rows < 0, rows >= h
        rows = torch.where(above, -1 - rows, torch.where(below, 2 * h - 1 - rows, rows))
        cols = cols + (above | below).long() * (w // 2)
    # Rows can only leave the image by less than the kernel size; clamp for safety with
    # tiny images (H < 4 with bicubic), and at the poles of the corner grid.
    rows = rows.clamp(0, h - 1)
    cols = torch.remainder(cols, w)
    return Taps(rows * w + cols, weight)


def image_taps(x: Tensor, y: Tensor, hw: tuple[int, int], mode: str, padding: str = "border") -> Taps:
    """Taps sampling a plain image at ``x, y``.  ``border``: taps past the edge read the edge
    pixel (clamp); ``zeros``: they read 0 (their weight is 0, the weights of a pixel then sum
    to less than 1 within half a pixel of the border, as torch ``grid_sample`` with
    ``padding_mode="zeros"``)."""
    h, w = hw
    ix, wx = _1d_taps(x.reshape(-1), mode)
    iy, wy = _1d_taps(y.reshape(-1), mode)
    if padding == "zeros":
        wx = wx * ((ix >= 0) & (ix < w))
        wy = wy * ((iy >= 0) & (iy < h))
    cols, rows, weight = _combine(ix.clamp(0, w - 1), wx, iy.clamp(0, h - 1), wy)
    return Taps(rows * w + cols, weight)


# --------------------------------------------------------------------------- tables and layouts


def _offsets(n: int, k: int, like: Tensor) -> Tensor:
    return torch.arange(0, n * k, k, dtype=like.dtype, device=like.device)


def bag(table: Tensor, taps: Taps, start: int = 0, stop: int | None = None,
        extra_weight: Tensor | None = None) -> Tensor:
    """``out[n] = sum_k weight[n, k] * table[index[n, k]]`` for pixels ``start:stop``.

    table: ``(rows, D)``, rows contiguous.  Returns ``(stop - start, D)``.  ``extra_weight
    (N,)`` multiplies each pixel's weights.  Differentiable in ``table`` and the weights.
    """
    index, weight = taps.index[start:stop], taps.weight[start:stop]
    if extra_weight is not None:
        weight = weight * extra_weight[start:stop, None]
    n, k = index.shape
    return F.embedding_bag(index.reshape(-1), table, _offsets(n, k, index),
                           per_sample_weights=weight.reshape(-1).to(table.dtype), mode="sum")


def table_of(src: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> the ``(H*W, B*C)`` gather table (differentiable): each row holds one
    pixel's values for the whole batch, so a tap reads one contiguous run."""
    b, c, h, w = src.shape
    return src.permute(2, 3, 0, 1).reshape(h * w, b * c).contiguous()


def scratch_table_of(src: Tensor) -> Tensor:
    """:func:`table_of` for the no-grad fast paths, for any memory layout of ``src``: the view
    when ``src`` already holds ``(H, W, B, C)`` memory, else ONE copy into a huge-page buffer.

    A contiguous ``(B, C, H, W)`` tensor reshapes to a *view* of the table whose rows are
    strided (one element per ``H*W``); ``embedding_bag`` on such a view reads memory
    element by element and ran ~7x slower than on a channels-last input (issue 10).  Such a
    view is copied as one 2-D transpose (~0.03 s for 100 MB here), the fastest copy torch has.
    """
    b, c, h, w = src.shape
    return table_from(src.permute(2, 3, 0, 1), h * w, b * c)


def table_from(perm: Tensor, rows: int, cols: int, buffer: Tensor | None = None) -> Tensor:
    """``perm`` (dims already in table order: pixel dims, then batch dims) as a row-contiguous
    ``(rows, cols)`` table: a view when its memory already is, else one copy (into ``buffer``
    when given, a reusable ``(rows, cols)`` tensor)."""
    try:
        flat = perm.view(rows, cols)  # possible when the pixel dims and the batch dims each merge
    except RuntimeError:
        flat = None
    if flat is not None and flat.is_contiguous():
        return flat
    table = empty_like_huge(perm, rows, cols) if buffer is None else buffer
    if flat is not None:
        table.copy_(flat)  # a strided 2-D view (e.g. of a contiguous (B, C, H, W)): one transpose
    else:
        table.view(perm.shape).copy_(perm)  # e.g. channels-last with B > 1
    return table


def channels_last_like(x: Tensor) -> bool:
    """Whether ``x (B, C, H, W)`` keeps its channels innermost in memory (ComfyUI's IMAGE
    ``movedim(-1, 1)``): outputs then follow in channels-last memory, else contiguous."""
    return x.shape[1] > 1 and x.stride(1) == 1 and not x.is_contiguous()


def new_output(like: Tensor, b: int, c: int, h: int, w: int, channels_last: bool) -> Tensor:
    """A fresh ``(B, C, h, w)`` output (huge-page hint) in channels-last or contiguous memory."""
    if channels_last:
        return empty_like_huge(like, b, h, w, c).permute(0, 3, 1, 2)
    return empty_like_huge(like, b, c, h, w)


def write_rows(out: Tensor, r0: int, r1: int, vals: Tensor) -> None:
    """``vals (n, B*C)`` (rows ``r0:r1`` of the output, row-major) -> ``out (B, C, h, w)``,
    whatever ``out``'s memory layout (the small transpose stays in cache)."""
    b, c, _, w = out.shape
    out[:, :, r0:r1].copy_(vals.view(r1 - r0, w, b, c).permute(2, 3, 0, 1))


RowTaps = Callable[[int, int], Taps]
"""``rows(r0, r1) -> Taps`` of output rows ``r0:r1`` (row-major pixels)."""


def stored_rows(taps: Taps, width: int) -> RowTaps:
    return lambda r0, r1: taps.slice(r0 * width, r1 * width)


def gather_rows_into(table: Tensor, out: Tensor, rows: RowTaps, progress: Progress,
                     keep: Taps | None = None) -> Tensor:
    """Fill ``out (B, C, h, w)`` (any memory layout; a view into a larger output is fine)
    from ``table`` (:func:`scratch_table_of` the source) chunk by chunk: the taps of
    :func:`rows_per_chunk` rows at a time (built on demand, or slices of stored taps), so the
    geometry never exists for the whole output.  ``keep`` (preallocated, ``h*w`` pixels)
    receives the taps as they are built, to be cached.  One :meth:`Progress.advance` per chunk.
    Not for autograd."""
    h, w = out.shape[-2:]
    step = rows_per_chunk(w)
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        taps = rows(r0, r1)
        if keep is not None:
            keep.index[r0 * w : r1 * w].copy_(taps.index)
            keep.weight[r0 * w : r1 * w].copy_(taps.weight)
        for s0 in range(r0, r1, ROWS_PER_CHUNK):
            s1 = min(r1, s0 + ROWS_PER_CHUNK)
            write_rows(out, s0, s1, bag(table, taps, (s0 - r0) * w, (s1 - r0) * w))
        progress.advance()
    return out


def gather_rows(src: Tensor, hw: tuple[int, int], rows: RowTaps, progress: Progress,
                keep: Taps | None = None) -> Tensor:
    """Differentiable :func:`gather_rows_into`: ``src (B, C, H, W)`` -> ``(B, C, h, w)``
    (channels-last memory), built chunk by chunk."""
    b, c = src.shape[:2]
    h, w = hw
    table = table_of(src)
    parts = []
    for r0 in range(0, h, rows_per_chunk(w)):
        r1 = min(h, r0 + rows_per_chunk(w))
        taps = rows(r0, r1)
        if keep is not None:
            keep.index[r0 * w : r1 * w].copy_(taps.index)
            keep.weight[r0 * w : r1 * w].copy_(taps.weight)
        parts.append(bag(table, taps))
        progress.advance()
    return torch.cat(parts).view(h, w, b, c).permute(2, 3, 0, 1)


def gather(src: Tensor, taps: Taps) -> Tensor:
    """Apply ``taps`` to every image of ``src (B, C, H, W)``; returns ``(N, B, C)``.

    Differentiable in ``src`` and in ``taps.weight``.
    """
    b, c = src.shape[:2]
    return bag(table_of(src), taps).view(-1, b, c)
