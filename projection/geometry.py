"""Sphere geometry: cameras, rigs, rays and equirect pixel coordinates.

Convention (docs/conventions.md, the single source of truth): world axes x right, y up,
z forward (right-handed); a direction at longitude ``lon``, latitude ``lat`` is
``(cos lat sin lon, sin lat, cos lat cos lon)``.  Equirect ``H x W`` (``W == 2H``): column
``j`` is centred on ``lon = ((j + 0.5) / W - 0.5) * 2pi``, row ``i`` on
``lat = (0.5 - (i + 0.5) / H) * pi``; the seam (lon = +-pi) is the left/right border.
Cameras: ``+yaw`` turns right, ``+pitch`` looks up, ``+roll`` turns clockwise;
camera-to-world ``R = R_y(yaw) R_x(-pitch) R_z(-roll)``.  Pinhole views: ``fov`` is
horizontal and runs through the outer edges of the border pixels, pixels are square unless a
vertical FOV is given, pixel centres, row 0 at the top.

Grid conventions (:data:`GRIDS`, docs/conventions.md "Grids"): ``"centres"`` (the pack's) puts
pixel ``j`` of ``n`` at ``(j + 0.5) / n`` of the extent, so the extent runs through the outer
pixel edges; ``"corners"`` puts the CENTRES of the border pixels on the extent's ends
(``linspace(-tan, tan, n)``, torch's ``align_corners=True``), as py360convert's and Look Beyond's
views and Argus's and Look Beyond's equirect grids do.

Radians inside the library; :class:`View` and rig presets hold degrees (the node boundary).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "GRIDS",
    "MAX_SIDE",
    "MAX_RIG_VIEWS",
    "check_grid",
    "fov_corners_to_centres",
    "fov_centres_to_corners",
    "View",
    "Rig",
    "RIG_PRESETS",
    "rig_preset",
    "rig_from_json",
    "rotation_matrix",
    "angles_from_rotation",
    "OPENCV_FROM_PACK",
    "flip_camera_y",
    "check_fov",
    "check_erp_hw",
    "pinhole_rays",
    "erp_lon_lat",
    "erp_directions",
    "directions_to_erp_xy",
    "view_rays",
    "plucker_embedding",
]


# --------------------------------------------------------------------------- limits and checks

# Largest image side anywhere in the library (views, faces, equirect width): ComfyUI's own
# MAX_RESOLUTION (nodes.py, 16384 in 0.3.64 and 0.33.0), the largest width/height its nodes accept.
MAX_SIDE = 16384
# Most views in one rig: ComfyUI's largest batch (nodes.py EmptyLatentImage batch_size max 4096).
MAX_RIG_VIEWS = 4096
GRIDS = ("centres", "corners")


def check_grid(grid: str, name: str = "grid") -> str:
    """Raise unless ``grid`` is one of :data:`GRIDS`."""
    if grid not in GRIDS:
        raise ValueError(f"{name}: unknown grid convention {grid!r}; choose one of {list(GRIDS)}")
    return grid


def check_fov(fov_deg: float, name: str = "fov") -> float:
    """Raise unless ``0 < fov < 180`` degrees (a pinhole cannot see 180 deg)."""
    if isinstance(fov_deg, bool):
        raise ValueError(f"{name}: field of view must be in (0, 180) degrees, got {fov_deg!r}")
    fov = float(fov_deg)
    if not (0.0 < fov < 180.0) or not math.isfinite(fov):
        raise ValueError(f"{name}: field of view must be in (0, 180) degrees, got {fov_deg!r}")
    return fov


def check_erp_hw(hw: Sequence[int], name: str = "erp_hw") -> tuple[int, int]:
    """Raise unless ``hw`` is a 2:1 equirect size ``(H, 2H)`` with ``2 <= H`` and ``2H <= MAX_SIDE``."""
    if len(hw) != 2:
        raise ValueError(f"{name}: expected (height, width), got {hw!r}")
    h, w = int(hw[0]), int(hw[1])
    if w != 2 * h:
        raise ValueError(f"{name}: an equirect panorama must be 2:1 (width == 2 * height), got {w}x{h} (WxH)")
    if h < 2:
        raise ValueError(f"{name}: an equirect panorama needs a height of at least 2 pixels, got {w}x{h} (WxH)")
    if w > MAX_SIDE:
        raise ValueError(f"{name}: an equirect panorama may be at most {MAX_SIDE}x{MAX_SIDE // 2} (WxH), "
                         f"got {w}x{h}")
    return h, w


def _check_size(value, name: str) -> int:
    """A positive integer number of pixels, at most :data:`MAX_SIDE`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name}: expected a positive integer number of pixels, got {value!r}")
    if int(value) > MAX_SIDE:
        raise ValueError(f"{name}: at most {MAX_SIDE} pixels (ComfyUI's MAX_RESOLUTION), got {value!r}")
    return int(value)


def fov_corners_to_centres(fov_deg: float, n: int) -> float:
    """A FOV whose ends hold the CENTRES of the border pixels (``linspace(-tan, tan, n)``:
    py360convert, Look Beyond) -> the same rays' FOV through the outer pixel EDGES (the pack's),
    for ``n >= 2`` pixels along that axis: ``tan(fov / 2) = tan(fov_corners / 2) * n / (n - 1)``."""
    if n < 2:
        raise ValueError(f"n: a corner-aligned grid needs at least 2 pixels, got {n}")
    return math.degrees(2 * math.atan(math.tan(math.radians(fov_deg) / 2) * n / (n - 1)))


def fov_centres_to_corners(fov_deg: float, n: int) -> float:
    """Inverse of :func:`fov_corners_to_centres`."""
    if n < 2:
        raise ValueError(f"n: a corner-aligned grid needs at least 2 pixels, got {n}")
    return math.degrees(2 * math.atan(math.tan(math.radians(fov_deg) / 2) * (n - 1) / n))


# --------------------------------------------------------------------------- views and rigs


@dataclass(frozen=True)
class View:
    """One pinhole camera at the sphere centre.  Angles in DEGREES, sizes in pixels.

    yaw: + turns right; pitch: + looks up; roll: + clockwise; fov: horizontal, in (0, 180),
    through the outer edges of the border pixels.  fov_y: vertical FOV (same convention) for
    non-square pixels; ``None`` (default) means square pixels,
    ``tan(fov_y / 2) = tan(fov / 2) * height / width``.
    """

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    fov: float = 90.0
    width: int = 512
    height: int = 512
    fov_y: float | None = None

    def __post_init__(self):
        for name in ("yaw", "pitch", "roll"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise ValueError(f"{name}: expected a finite angle in degrees, got {value!r}")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "fov", check_fov(self.fov))
        if self.fov_y is not None:
            object.__setattr__(self, "fov_y", check_fov(self.fov_y, "fov_y"))
        object.__setattr__(self, "width", _check_size(self.width, "width"))
        object.__setattr__(self, "height", _check_size(self.height, "height"))

    def fov_y_radians(self, height: int | None = None, width: int | None = None) -> float:
        """The vertical FOV in radians at ``height x width`` (default: the view's size; square
        pixels when :attr:`fov_y` is ``None``)."""
        if self.fov_y is not None:
            return math.radians(self.fov_y)
        h, w = height or self.height, width or self.width
        return 2 * math.atan(math.tan(math.radians(self.fov) / 2) * h / w)


@dataclass(frozen=True)
class Rig:
    """A named tuple of :class:`View` s; view 0 is the reference for relative rays."""

    name: str
    views: tuple[View, ...]

    def __post_init__(self):
        views = tuple(self.views)
        if not views:
            raise ValueError(f"views: a rig needs at least one view, got an empty rig {self.name!r}")
        if len(views) > MAX_RIG_VIEWS:
            raise ValueError(f"views: a rig may have at most {MAX_RIG_VIEWS} views, got {len(views)}")
        for i, v in enumerate(views):
            if not isinstance(v, View):
                raise ValueError(f"views[{i}]: expected a View, got {type(v).__name__}")
        object.__setattr__(self, "views", views)

    @property
    def num_views(self) -> int:
        return len(self.views)

    def sizes(self, out_hw: Sequence[int] | None = None) -> tuple[int, int]:
        """The common ``(h, w)`` of every view (``out_hw`` overrides); raises if they differ."""
        if out_hw is not None:
            return _check_size(out_hw[0], "out_hw[0]"), _check_size(out_hw[1], "out_hw[1]")
        sizes = {(v.height, v.width) for v in self.views}
        if len(sizes) != 1:
            raise ValueError(f"rig {self.name!r}: views have different sizes {sorted(sizes)}; pass out_hw")
        return sizes.pop()

    def angles(self, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(yaw, pitch, roll, fov)`` as ``(V,)`` RADIAN tensors."""
        cols = [[math.radians(getattr(v, k)) for v in self.views] for k in ("yaw", "pitch", "roll", "fov")]
        return tuple(torch.tensor(c, device=device, dtype=dtype) for c in cols)  # type: ignore[return-value]

    def key(self) -> tuple:
        """Hashable description (for grid caches)."""
        return tuple((v.yaw, v.pitch, v.roll, v.fov, v.width, v.height, v.fov_y) for v in self.views)

    def to_json(self) -> str:
        """``[{yaw, pitch, roll, fov, width, height}, ...]`` (degrees, pixels; ``fov_y`` only
        where a view has non-square pixels)."""
        return json.dumps([{k: v for k, v in asdict(view).items() if not (k == "fov_y" and v is None)}
                           for view in self.views])


# Rig facts: VideoPanda (arXiv 2504.11389, Sec. 4 / shared/specs/lookbeyond-videopanda-diffpano.md):
# six 90-degree views at 60-degree yaw steps plus up/down views; 100 degrees is the smallest
# up/down FOV that leaves no hole (shared/specs/projection-performance.md).
VIDEOPANDA_SIDE_FOV = 90.0
VIDEOPANDA_POLE_FOV = 100.0
VIDEOPANDA_SIZE = 512
# Look Beyond (Pano2Perspect/panorama2cube.py): 12 yaws linspace(180, -180, 12), FOV 90 (its
# convention: border pixel centres on the frustum edges), pitch 0, 1024x1024 frames.
LOOKBEYOND_NUM = 12
LOOKBEYOND_FOV = 90.0
LOOKBEYOND_SIZE = 1024
# Cube faces in py360convert's order F R B L U D: (yaw, pitch).
CUBE_FACES = ((0.0, 0.0), (90.0, 0.0), (180.0, 0.0), (-90.0, 0.0), (0.0, 90.0), (0.0, -90.0))
CUBE_FACE_NAMES = ("F", "R", "B", "L", "U", "D")


def _videopanda8(size: int = VIDEOPANDA_SIZE, side_fov: float = VIDEOPANDA_SIDE_FOV,
                 pole_fov: float = VIDEOPANDA_POLE_FOV) -> Rig:
    views = [View(60.0 * k, 0.0, 0.0, side_fov, size, size) for k in range(6)]
    views += [View(0.0, 90.0, 0.0, pole_fov, size, size), View(0.0, -90.0, 0.0, pole_fov, size, size)]
    return Rig("videopanda8", tuple(views))


def _cube6(size: int = 512) -> Rig:
    return Rig("cube6", tuple(View(y, p, 0.0, 90.0, size, size) for y, p in CUBE_FACES))


def _lookbeyond_loop(size: int = LOOKBEYOND_SIZE, n: int = LOOKBEYOND_NUM, fov: float = LOOKBEYOND_FOV) -> Rig:
    """Look Beyond's loop; ``fov`` in ITS convention (Equirec2Perspec.py puts the border pixel
    centres on the frustum edges, ``linspace(-tan, tan, size)``), mapped to the pack's FOV
    through the pixel edges so the views have exactly its rays (90 -> 90.056 deg at 1024 px)."""
    n = _check_size(n, "n")
    size = _check_size(size, "size")
    yaws = [180.0] if n == 1 else [180.0 - 360.0 * k / (n - 1) for k in range(n)]
    fov = fov_corners_to_centres(check_fov(fov), size)
    return Rig("lookbeyond_loop", tuple(View(y, 0.0, 0.0, fov, size, size) for y in yaws))


def _horizontal_n(n: int = 8, fov: float = 90.0, size: int = 512, pitch: float = 0.0) -> Rig:
    n = _check_size(n, "n")
    return Rig(f"horizontal_{n}", tuple(View(360.0 * k / n, pitch, 0.0, fov, size, size) for k in range(n)))


RIG_PRESETS = {
    "videopanda8": _videopanda8,
    "cube6": _cube6,
    "lookbeyond_loop": _lookbeyond_loop,
    "horizontal_n": _horizontal_n,
}


def rig_preset(name: str, **kw) -> Rig:
    """A preset rig by name (see :data:`RIG_PRESETS`); ``kw`` e.g. ``size``, ``n``, ``fov``."""
    if name not in RIG_PRESETS:
        raise ValueError(f"name: unknown rig preset {name!r}; choose one of {sorted(RIG_PRESETS)}")
    try:
        return RIG_PRESETS[name](**kw)
    except TypeError as e:
        raise ValueError(f"rig_preset({name!r}): bad keyword arguments {sorted(kw)}: {e}") from None


def rig_from_json(text_or_list) -> Rig:
    """A custom rig from JSON text or a list of dicts ``{yaw, pitch, roll, fov, width, height}``
    (optionally ``fov_y``, the vertical FOV for non-square pixels).

    Missing keys take :class:`View` defaults; unknown keys raise; every size is at most
    :data:`MAX_SIDE` and a rig has at most :data:`MAX_RIG_VIEWS` views.
    """
    data = text_or_list
    if isinstance(text_or_list, str):
        try:
            data = json.loads(text_or_list)
        except json.JSONDecodeError as e:
            raise ValueError(f"rig_json: not valid JSON ({e}): {text_or_list[:80]!r}") from None
        except RecursionError:   # json.loads recurses once per nesting level ("[" * 5000)
            raise ValueError(f"rig_json: JSON nested too deeply: {text_or_list[:80]!r}") from None
    if isinstance(data, dict) and "views" in data:
        data = data["views"]
    if not isinstance(data, list):
        raise ValueError(f"rig_json: expected a list of views, got {type(data).__name__}")
    if len(data) > MAX_RIG_VIEWS:
        raise ValueError(f"rig_json: a rig may have at most {MAX_RIG_VIEWS} views, got {len(data)}")
    fields = set(View.__dataclass_fields__)
    views = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"rig_json[{i}]: expected an object with {sorted(fields)}, got {item!r}")
        unknown = set(item) - fields
        if unknown:
            raise ValueError(f"rig_json[{i}]: unknown keys {sorted(unknown)}; allowed {sorted(fields)}")
        try:
            views.append(View(**item))
        except ValueError as e:
            raise ValueError(f"rig_json[{i}].{e}") from None
    return Rig("custom", tuple(views))


# --------------------------------------------------------------------------- rotations and rays


def _as_tensor(x, like: Tensor | None = None, device=None, dtype=None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if like is not None:
        device, dtype = like.device, like.dtype
    return torch.as_tensor(x, device=device, dtype=dtype if dtype is not None else torch.float32)


def rotation_matrix(yaw, pitch, roll) -> Tensor:
    """Camera-to-world rotation ``R_y(yaw) R_x(-pitch) R_z(-roll)``.

    yaw, pitch, roll: broadcastable RADIAN tensors (or floats), module convention.
    Returns ``(..., 3, 3)``; columns are the camera's right, up and forward axes.
    """
    yaw = _as_tensor(yaw)
    pitch, roll = _as_tensor(pitch, yaw), _as_tensor(roll, yaw)
    yaw, pitch, roll = torch.broadcast_tensors(yaw, pitch, roll)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)

    def mat(*rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    ry = mat((cy, zero, sy), (zero, one, zero), (-sy, zero, cy))
    rx = mat((one, zero, zero), (zero, cp, sp), (zero, -sp, cp))  # R_x(-pitch)
    rz = mat((cr, sr, zero), (-sr, cr, zero), (zero, zero, one))  # R_z(-roll)
    return ry @ rx @ rz


def angles_from_rotation(rot) -> Tensor:
    """The inverse of :func:`rotation_matrix`: ``(..., 3, 3)`` -> ``(..., 3)`` yaw, pitch, roll.

    Radians, module convention.  The forward column gives yaw and pitch, the up row gives
    roll; pitch lies in ``[-pi/2, pi/2]``.  At pitch = +-90 degrees (gimbal lock) yaw and
    roll turn about the same axis: yaw is set to 0 and the combined angle goes into roll,
    so ``rotation_matrix(*angles_from_rotation(R).unbind(-1))`` rebuilds ``R`` there too.
    Accepts tensors or arrays; returns a tensor (float64 for arrays).
    """
    r = rot if isinstance(rot, Tensor) else torch.as_tensor(rot, dtype=torch.float64)
    # atan2 rather than asin(R[1, 2]): asin loses the angle near +-90 degrees.
    pitch = torch.atan2(r[..., 1, 2], torch.hypot(r[..., 0, 2], r[..., 2, 2]))
    yaw = torch.atan2(r[..., 0, 2], r[..., 2, 2])
    roll = torch.atan2(-r[..., 1, 0], r[..., 1, 1])
    # Gimbal lock: the forward axis is vertical and yaw and roll turn about the same axis.
    # With yaw = 0, R = R_x(-pitch) R_z(-roll), whose first row is (cos roll, sin roll, 0).
    locked = torch.hypot(r[..., 0, 2], r[..., 2, 2]) < GIMBAL_LOCK_EPS * torch.finfo(r.dtype).eps
    if bool(locked.any()):
        yaw = torch.where(locked, torch.zeros_like(yaw), yaw)
        roll = torch.where(locked, torch.atan2(r[..., 0, 1], r[..., 0, 0]), roll)
    return torch.stack([yaw, pitch, roll], -1)


# At |pitch| this close to 90 degrees (cos pitch below this many machine epsilons) yaw is
# unreadable (both entries it comes from are rounding noise) and is folded into roll.
GIMBAL_LOCK_EPS = 16.0

# OpenCV camera axes (x right, y down, z forward) vs the pack's (x right, y up, z forward).
OPENCV_FROM_PACK = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


def flip_camera_y(rot: Tensor) -> Tensor:
    """``F R F`` with ``F = diag(1, -1, 1)`` (:data:`OPENCV_FROM_PACK`): a camera-to-world
    rotation in pack axes becomes the same rotation in OpenCV axes (y down in both the camera
    and the world frame), and back; the map is its own inverse.  ``(..., 3, 3)``."""
    f = torch.tensor(OPENCV_FROM_PACK, device=rot.device, dtype=rot.dtype)
    return f @ rot @ f


def _axis(n: int, half_extent, grid: str, rows: tuple[int, int] | None, flip: bool) -> Tensor:
    """Image-plane coordinates of pixels ``rows[0]:rows[1]`` of ``n`` along one axis, in units
    of the axis' half extent ``half_extent`` (a tensor, broadcast in front): ``centres`` puts
    pixel ``j`` at ``(j + 0.5) * 2 / n - 1``, ``corners`` at ``j * 2 / (n - 1) - 1``
    (``linspace(-1, 1, n)``).  ``flip`` reverses the direction (rows grow downwards)."""
    r0, r1 = rows if rows is not None else (0, n)
    j = torch.arange(r0, r1, device=half_extent.device, dtype=half_extent.dtype)
    if grid == "centres":
        t = (j + 0.5) * (2.0 / n)
    else:
        if n < 2:
            raise ValueError(f"grid: 'corners' needs at least 2 pixels along each axis, got {n}")
        t = j * (2.0 / (n - 1))
    t = 1.0 - t if flip else t - 1.0
    return t * half_extent[..., None]


def pinhole_rays(fov_x, out_hw: Sequence[int], device=None, dtype=torch.float32, *, fov_y=None,
                 grid: str = "centres", rows: tuple[int, int] | None = None) -> Tensor:
    """Camera-frame rays (not normalised, ``z == 1``) through the view's pixel centres.

    fov_x: ``(B,)`` radians (or float), horizontal.  fov_y: vertical, same form; ``None``:
    square pixels.  grid: ``centres`` (the FOVs run through the outer pixel edges) or
    ``corners`` (the FOVs end on the border pixels' centres, ``linspace(-tan, tan, n)``).
    rows: only output rows ``rows[0]:rows[1]``.  Returns ``(B, h', w, 3)`` (``(h', w, 3)`` for
    a float).
    """
    check_grid(grid)
    h, w = int(out_hw[0]), int(out_hw[1])
    fov = _as_tensor(fov_x, device=device, dtype=dtype)
    tx = torch.tan(fov / 2)
    if fov_y is not None:
        ty = torch.tan(_as_tensor(fov_y, fov) / 2)
    elif grid == "centres":
        ty = tx * (h / w)
    else:  # square pixels on a corner grid: equal pixel pitch 2 tx / (w - 1) = 2 ty / (h - 1)
        ty = tx * ((h - 1) / (w - 1)) if w > 1 else tx
    x = _axis(w, tx, grid, None, flip=False)[..., None, :]
    y = _axis(h, ty, grid, rows, flip=True)[..., :, None]
    x, y = torch.broadcast_tensors(x, y)
    return torch.stack([x, y, torch.ones_like(x)], -1)


def erp_lon_lat(erp_hw: Sequence[int], device=None, dtype=torch.float32, *, grid: str = "centres",
                rows: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Longitudes ``(W,)`` and latitudes ``(H',)`` (radians) of the equirect grid's pixels.

    ``centres``: column ``j`` at ``((j + 0.5) / W - 0.5) 2pi``, row ``i`` at
    ``(0.5 - (i + 0.5) / H) pi``; ``corners``: column 0 at -pi, the last at +pi
    (``linspace(-pi, pi, W)``, Argus, Look Beyond), row 0 at +pi/2, the last at -pi/2.
    """
    check_grid(grid, "erp_grid")
    h, w = check_erp_hw(erp_hw)
    r0, r1 = rows if rows is not None else (0, h)
    j = torch.arange(w, device=device, dtype=dtype)
    i = torch.arange(r0, r1, device=device, dtype=dtype)
    if grid == "centres":
        return ((j + 0.5) / w - 0.5) * (2 * math.pi), (0.5 - (i + 0.5) / h) * math.pi
    return j * (2 * math.pi / (w - 1)) - math.pi, math.pi / 2 - i * (math.pi / (h - 1))


def erp_directions(erp_hw: Sequence[int], device=None, dtype=torch.float32, *, grid: str = "centres",
                   rows: tuple[int, int] | None = None) -> Tensor:
    """Unit directions of the equirect grid's pixels (``rows`` only), ``(H', W, 3)``."""
    lon, lat = erp_lon_lat(erp_hw, device, dtype, grid=grid, rows=rows)
    cl = torch.cos(lat)[:, None]
    return torch.stack(torch.broadcast_tensors(cl * torch.sin(lon), torch.sin(lat)[:, None], cl * torch.cos(lon)), -1)


def directions_to_erp_xy(d: Tensor, erp_hw: Sequence[int], grid: str = "centres") -> tuple[Tensor, Tensor]:
    """Continuous equirect pixel coordinates ``(x, y)`` (pixel ``j`` at ``x = j``) of
    directions ``d (..., 3)`` (any length).  ``centres``: ``x`` in ``[-0.5, W - 0.5)``, ``y`` in
    ``[-0.5, H - 0.5]``; ``corners``: ``x`` in ``[0, W - 1]``, ``y`` in ``[0, H - 1]``."""
    h, w = int(erp_hw[0]), int(erp_hw[1])
    lon = torch.atan2(d[..., 0], d[..., 2])
    lat = torch.atan2(d[..., 1], torch.hypot(d[..., 0], d[..., 2]))
    if grid == "corners":
        return (lon + math.pi) * ((w - 1) / (2 * math.pi)), (math.pi / 2 - lat) * ((h - 1) / math.pi)
    check_grid(grid, "erp_grid")
    x = (lon / (2 * math.pi) + 0.5) * w - 0.5
    y = (0.5 - lat / math.pi) * h - 0.5
    return x, y


def view_rays(rig: Rig, out_hw: Sequence[int] | None = None, relative_to_first: bool = True,
              device=None, dtype=torch.float32) -> Tensor:
    """Unit ray directions of every view's pixel centres, ``(V, h, w, 3)``.

    World frame of the module convention, or (``relative_to_first``) the frame of view 0:
    ``R_0^T R_v c``.  ``out_hw`` overrides every view's size (e.g. latent resolution; the
    FOV is kept, and a view with square pixels keeps them).
    """
    h, w = rig.sizes(out_hw)
    yaw, pitch, roll, fov = rig.angles(device, dtype)
    rot = rotation_matrix(yaw, pitch, roll)  # (V, 3, 3)
    if relative_to_first:
        rot = rot[0].transpose(-1, -2) @ rot
    fov_y = None
    if any(v.fov_y is not None for v in rig.views):
        fov_y = torch.tensor([v.fov_y_radians(h, w) for v in rig.views], device=device, dtype=dtype)
    rays = pinhole_rays(fov, (h, w), device, dtype, fov_y=fov_y)  # (V, h, w, 3)
    rays = torch.einsum("vij,vhwj->vhwi", rot, rays)
    return rays / rays.norm(dim=-1, keepdim=True)


def plucker_embedding(rig: Rig, out_hw: Sequence[int] | None = None, relative_to_first: bool = True,
                      device=None, dtype=torch.float32) -> Tensor:
    """Plucker ray embedding ``(o x d, d)`` per pixel, ``(V, 6, h, w)``.

    Order as CameraCtrl (moment first, then direction).  Rig cameras share the sphere centre
    ``o = 0``, so the moment channels are zero and the directions carry the rotation.
    """
    d = view_rays(rig, out_hw, relative_to_first, device, dtype)  # (V, h, w, 3)
    origin = torch.zeros_like(d)
    return torch.cat([torch.cross(origin, d, dim=-1), d], -1).permute(0, 3, 1, 2).contiguous()
