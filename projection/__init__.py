"""Pano360 projection: sphere geometry, equirect <-> perspective / cube map, rigs, stitching.

Pure torch, host-free (never imports ComfyUI).  Convention: docs/conventions.md, summarised
in :mod:`.geometry`.  Radians inside the library; :class:`View` and rig presets in degrees.
"""

from .coordinates import erp_to_perspective_coords, perspective_to_erp_coords
from .cubemap import LAYOUTS, cubemap_to_erp, erp_to_cubemap
from .geometry import (
    GRIDS,
    MAX_RIG_VIEWS,
    MAX_SIDE,
    RIG_PRESETS,
    Rig,
    View,
    plucker_embedding,
    rig_from_json,
    rig_preset,
    rotation_matrix,
    view_rays,
)
from .perspective import erp_to_perspective, erp_to_rig
from .pinhole import camera_rays, erp_rays, project_points, world_to_camera
from .placement import WEIGHTINGS, perspective_to_erp, stitch_rig
from .rotate import roll_erp, rotate_erp
from ._sampling import GRID_CACHE, MODES, PADDINGS, ProgressCallback

__all__ = [
    "View",
    "Rig",
    "RIG_PRESETS",
    "rig_preset",
    "rig_from_json",
    "rotation_matrix",
    "erp_to_perspective",
    "perspective_to_erp",
    "erp_to_rig",
    "stitch_rig",
    "erp_to_cubemap",
    "cubemap_to_erp",
    "rotate_erp",
    "roll_erp",
    "view_rays",
    "plucker_embedding",
    "erp_to_perspective_coords",
    "perspective_to_erp_coords",
    "world_to_camera",
    "project_points",
    "camera_rays",
    "erp_rays",
    "GRID_CACHE",
    "MODES",
    "PADDINGS",
    "GRIDS",
    "MAX_SIDE",
    "MAX_RIG_VIEWS",
    "ProgressCallback",
    "WEIGHTINGS",
    "LAYOUTS",
]
