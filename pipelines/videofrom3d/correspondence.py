"""Correspondence maps in VideoFrom3D's 16-bit colour code, and forward flow from them.

Format (ant-arktis/VideoFrom3D ``assets/readme.md``, ``assets/mk_noise.py``,
``assets/exampleA/uvs/gen_uv.py``; spec argus-videofrom3d.md §2e): a map is rendered in the
*current* view; each pixel holds where its surface point lies in the *reference* view, as a
16-bit RGB colour

- ``R = round(x_ref / W * 65535)``, ``x_ref`` in pixel-edge coordinates (``[0, W)``, pixel
  ``j`` spans ``[j, j + 1)``), decoded as ``x = floor(R / 65536 * W)``;
- ``G = round((1 - y_ref / H) * 65535)`` (flipped, Blender's UV origin is bottom-left), decoded
  as ``y = floor((65535 - G) / 65536 * H)``;
- ``B = 65535`` where the point is seen in the reference view, ``R = G = B = 0`` where not; the
  official decoder counts a pixel valid when ``B >= 100``.

``W, H`` are the map's own size when decoding (the official code decodes at the map size and
rescales maps with ``cv2.resize`` before decoding at another size).  Arrays here are
``(H, W, 3)`` in R, G, B order (the official readers flip OpenCV's BGR).

Forward flow (``mk_noise.py`` ``correspondence2opticalflow``): the flow is defined on the
*reference* view's pixel grid: reference pixel ``(x1, y1)`` seen at current pixel ``(x2, y2)``
gets ``(x2 - x1, y2 - y1)``; where several current pixels map to one reference pixel the one
latest in row-major order wins (NumPy assignment order); reference pixels nobody maps to keep
:data:`NO_FLOW` (−10000), exactly as the official code leaves them.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CODE_MAX",
    "VALID_MIN",
    "NO_FLOW",
    "encode_correspondence",
    "decode_correspondence",
    "flow_from_correspondence",
    "read_correspondence_png",
    "write_correspondence_png",
]

CODE_MAX = 65535  # 16-bit colour code (gen_uv.py: bit = 16)
CODE_RANGE = CODE_MAX + 1  # mk_noise.py get_coord_mapper: r / (val_max + 1) * width
VALID_MIN = 100  # mk_noise.py get_coord_mapper: mask = b >= 100
NO_FLOW = -10000  # mk_noise.py correspondence2opticalflow: np.full(..., -10000)


def encode_correspondence(ref_xy: Tensor, valid: Tensor, ref_hw: tuple[int, int]) -> Tensor:
    """Colour-code continuous reference positions.

    ref_xy: (..., H, W, 2) positions in the reference view, pixel-edge coordinates (x right,
    y down, pixel ``j`` spans ``[j, j+1)``).  valid: (..., H, W) bool.  ref_hw: the reference
    view's ``(H_ref, W_ref)``.  Returns (..., H, W, 3) int32 codes in 0..65535, R, G, B order.
    """
    h_ref, w_ref = ref_hw
    x = ref_xy[..., 0].double().clamp(0, w_ref)
    y = ref_xy[..., 1].double().clamp(0, h_ref)
    r = torch.round(x / w_ref * CODE_MAX)
    g = torch.round((1.0 - y / h_ref) * CODE_MAX)
    b = torch.full_like(r, CODE_MAX)
    code = torch.stack([r, g, b], dim=-1).to(torch.int32)
    return torch.where(valid[..., None], code, torch.zeros_like(code))


def decode_correspondence(code: Tensor, ref_hw: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Integer reference pixel of every pixel of a map.

    code: (H, W, 3) integer codes, R, G, B order.  ref_hw: the reference size to decode to
    (default: the map's own size, as the official code does).  Returns ``(x_ref, y_ref, valid)``,
    each (H, W); ``x_ref, y_ref`` are int64 (meaningless where not valid).
    """
    h, w = code.shape[-3:-1]
    h_ref, w_ref = (h, w) if ref_hw is None else ref_hw
    code = code.to(torch.float64)
    valid = code[..., 2] >= VALID_MIN
    # The official decoder computes r / 65536 * W in float64 and truncates toward zero.
    x = torch.trunc(code[..., 0] / CODE_RANGE * w_ref).to(torch.int64)
    y = torch.trunc((CODE_MAX - code[..., 1]) / CODE_RANGE * h_ref).to(torch.int64)
    return x, y, valid


def flow_from_correspondence(code: Tensor) -> Tensor:
    """Forward flow from the reference view to the current view, on the reference grid.

    code: (H, W, 3) integer codes of the current view (reference = same size).  Returns (2, H, W)
    float32 ``(dx, dy)``; :data:`NO_FLOW` where no current pixel maps to a reference pixel.
    """
    h, w = code.shape[:2]
    x_ref, y_ref, valid = decode_correspondence(code)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    src = valid.flatten().nonzero().squeeze(1)  # current pixels, row-major
    tx, ty = x_ref.flatten()[src], y_ref.flatten()[src]
    dx = xs.flatten()[src] - tx
    dy = ys.flatten()[src] - ty
    target = ty * w + tx
    # Negative indices wrap in NumPy; the official code indexes dx[y_1, x_1] the same way.
    target = torch.remainder(target, h * w)
    # Last writer wins, deterministically: the largest source index per target.
    order = torch.arange(src.numel())
    winner = torch.full((h * w,), -1, dtype=torch.int64).scatter_reduce(0, target, order, "amax")
    hit = winner >= 0
    out = torch.full((2, h * w), float(NO_FLOW))
    out[0, hit] = dx[winner[hit]].float()
    out[1, hit] = dy[winner[hit]].float()
    return out.view(2, h, w)


def read_correspondence_png(path: str | os.PathLike) -> Tensor:
    """A 16-bit correspondence PNG -> (H, W, 3) int32 codes, R, G, B order.

    Raises ValueError for a file that is not a 16-bit 3- or 4-channel image.
    """
    import cv2  # OpenCV: the official reader (cv2.imread(..., IMREAD_UNCHANGED))

    arr = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"correspondence map {os.fspath(path)!r}: cannot be read as an image")
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(
            f"correspondence map {os.fspath(path)!r}: expected a 16-bit RGB PNG, got {arr.dtype} "
            f"with shape {arr.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(arr[..., 2::-1]).astype(np.int32))


def write_correspondence_png(path: str | os.PathLike, code: Tensor) -> None:
    """(H, W, 3) codes (R, G, B order, 0..65535) -> a 16-bit RGB PNG (the caller makes the write atomic)."""
    import cv2

    arr = code.detach().cpu().numpy()
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.min() < 0 or arr.max() > CODE_MAX:
        raise ValueError(f"correspondence code: expected (H, W, 3) values in 0..{CODE_MAX}, got shape {arr.shape}")
    if not cv2.imwrite(os.fspath(path), np.ascontiguousarray(arr[..., ::-1]).astype(np.uint16)):
        raise OSError(f"could not write {os.fspath(path)!r}")
