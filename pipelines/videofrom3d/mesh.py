"""Coarse triangle meshes: loading (OBJ, GLB/glTF, PLY, STL, OFF through ``trimesh``) and the
axis conversion into the pack's world frame (x right, y up, z forward; docs/conventions.md).

Axis presets (where a file's axes point, physically):

- ``"y_up"``: glTF 2.0 (spec §3.4: +Y up, +Z the asset's front, i.e. towards a viewer in front of
  it) and Blender's default OBJ/PLY export (Y up, −Z forward): pack = ``(X, Y, −Z)``;
- ``"z_up"``: Blender's own frame (Z up, −Y towards the front view's camera, +Y away from it,
  X right), common for PLY/STL from CAD and scanners: pack = ``(X, Z, Y)``;
- ``"pack"``: already x right, y up, z forward.

Both presets map a right-handed file frame onto the pack's frame, which mirrors winding order;
nothing here relies on winding (normals are oriented towards the viewer when rendering).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Mesh", "AXES", "load_mesh", "merge_meshes", "box_mesh", "quad_mesh"]

AXES = {
    "y_up": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "z_up": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "pack": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
}
MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".stl", ".off")


@dataclass(frozen=True)
class Mesh:
    """vertices: (V, 3) float64 world positions.  faces: (F, 3) int64 vertex indices."""

    vertices: Tensor
    faces: Tensor

    def __post_init__(self) -> None:
        v, f = self.vertices, self.faces
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"Mesh: expected vertices (V, 3) and faces (F, 3), got {tuple(v.shape)}, {tuple(f.shape)}")
        if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[0]):
            raise ValueError(f"Mesh: face indices must lie in [0, {v.shape[0]}), got {int(f.min())}..{int(f.max())}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError("Mesh: vertices must be finite")

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def triangles(self) -> Tensor:
        """(F, 3, 3) world positions of every face's corners."""
        return self.vertices[self.faces]

    def transformed(self, scale: float = 1.0, offset=(0.0, 0.0, 0.0)) -> "Mesh":
        return Mesh(self.vertices * scale + torch.as_tensor(offset, dtype=self.vertices.dtype), self.faces)

    def bounds(self) -> tuple[Tensor, Tensor]:
        return self.vertices.min(0).values, self.vertices.max(0).values


def merge_meshes(*meshes: Mesh) -> Mesh:
    """One mesh holding all faces (indices shifted)."""
    verts, faces, offset = [], [], 0
    for m in meshes:
        verts.append(m.vertices)
        faces.append(m.faces + offset)
        offset += m.vertices.shape[0]
    return Mesh(torch.cat(verts), torch.cat(faces))


def load_mesh(path: str | os.PathLike, axes: str = "y_up") -> Mesh:
    """Read a mesh file (a scene's meshes are merged with their node transforms applied).

    Raises ValueError naming the file for an unknown suffix, an unknown ``axes`` preset, or a file
    without triangles.
    """
    import trimesh

    path = os.fspath(path)
    if axes not in AXES:
        raise ValueError(f"mesh axes: expected one of {sorted(AXES)}, got {axes!r}")
    if not path.lower().endswith(MESH_SUFFIXES):
        raise ValueError(f"mesh {path!r}: expected a file ending in {', '.join(MESH_SUFFIXES)}")
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as error:  # trimesh raises many types for malformed files
        raise ValueError(f"mesh {path!r}: cannot be read ({error})") from error
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ValueError(f"mesh {path!r}: contains no triangles")
    v = torch.as_tensor(loaded.vertices, dtype=torch.float64)
    f = torch.as_tensor(loaded.faces, dtype=torch.int64)
    basis = torch.tensor(AXES[axes], dtype=torch.float64)  # rows: where pack x, y, z come from
    return Mesh(v @ basis.T, f)


def quad_mesh(corners) -> Mesh:
    """A planar quad from 4 corners (4, 3) in order around it: 2 triangles."""
    v = torch.as_tensor(corners, dtype=torch.float64).reshape(4, 3)
    return Mesh(v, torch.tensor([[0, 1, 2], [0, 2, 3]]))


def box_mesh(lo, hi) -> Mesh:
    """An axis-aligned box between corners ``lo`` and ``hi`` (3,): 12 triangles."""
    lo = torch.as_tensor(lo, dtype=torch.float64)
    hi = torch.as_tensor(hi, dtype=torch.float64)
    idx = torch.tensor([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=torch.float64)
    v = lo + idx * (hi - lo)
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    f = [[a, b, c] for a, b, c, d in quads] + [[a, c, d] for a, b, c, d in quads]
    return Mesh(v, torch.tensor(f))
