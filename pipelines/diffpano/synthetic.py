"""Procedural posed panoramas: textured box rooms with balls, ray-cast in closed form.

A setup check for DiffPano training (a tiny run must lower its loss on data whose
geometry is exact) and a world for the sequence tests: every panorama comes with its exact
distance map and camera, in the pack's conventions (docs/conventions.md: x right, y up,
z forward; distances along the rays).  Host-free, pure torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...projection.geometry import erp_directions, rotation_matrix

__all__ = ["Ball", "BoxRoom", "random_room", "render_room", "random_walk"]

# Texture frequencies (radians per world unit): low enough that a 64-row panorama resolves
# the texture on the far walls of a 8 m room.
TEXTURE_FREQ_RANGE = (0.6, 2.0)
# A camera keeps this distance from walls and balls (world units).
CLEARANCE = 0.3


@dataclass(frozen=True)
class Ball:
    centre: tuple[float, float, float]
    radius: float


@dataclass(frozen=True)
class BoxRoom:
    """An axis-aligned room ``|x| <= half[0]``, ``|y| <= half[1]``, ``|z| <= half[2]`` with
    opaque balls inside, and a smooth colour texture ``0.5 + 0.4 sin(f . p + phase)`` per
    channel (``freqs`` ``(3, 3)``, ``phases`` ``(3,)``) of the world point ``p``."""

    half: tuple[float, float, float]
    balls: tuple[Ball, ...]
    freqs: tuple[tuple[float, float, float], ...]
    phases: tuple[float, float, float]

    def colour(self, p: Tensor) -> Tensor:
        """``(..., 3)`` world points -> ``(..., 3)`` colours in [0.1, 0.9]."""
        f = torch.tensor(self.freqs, dtype=p.dtype, device=p.device)
        ph = torch.tensor(self.phases, dtype=p.dtype, device=p.device)
        return 0.5 + 0.4 * torch.sin(p @ f.T + ph)

    def ray_distance(self, origin: Tensor, d: Tensor) -> Tensor:
        """Distance from ``origin (3,)`` along unit rays ``d (..., 3)`` to the first surface."""
        half = torch.tensor(self.half, dtype=d.dtype, device=d.device)
        safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        best = ((torch.sign(safe) * half - origin) / safe).amin(-1)
        for ball in self.balls:
            oc = origin - torch.tensor(ball.centre, dtype=d.dtype, device=d.device)
            b = (d * oc).sum(-1)
            disc = b * b - (oc @ oc - ball.radius**2)
            hit = -b - torch.sqrt(disc.clamp_min(0))
            best = torch.where((disc > 0) & (hit > 0) & (hit < best), hit, best)
        return best

    def free(self, p: Tensor, clearance: float = CLEARANCE) -> bool:
        """Whether the point ``p (3,)`` is inside the room, clear of walls and balls."""
        if bool((p.abs() > torch.tensor(self.half, dtype=p.dtype) - clearance).any()):
            return False
        return all(float((p - torch.tensor(b.centre, dtype=p.dtype)).norm()) > b.radius + clearance for b in self.balls)


def random_room(generator: torch.Generator, balls: int = 2) -> BoxRoom:
    """A room 4-8 m wide and deep, 2.4-3.2 m high, with ``balls`` balls of 0.3-0.7 m radius."""
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand(1, generator=generator, dtype=torch.float64))  # noqa: E731
    half = (u(2.0, 4.0), u(1.2, 1.6), u(2.0, 4.0))
    out = []
    for _ in range(balls):
        r = u(0.3, 0.7)
        out.append(Ball((u(-half[0] + r, half[0] - r), u(-half[1] + r, 0.0), u(-half[2] + r, half[2] - r)), r))
    lo, hi = TEXTURE_FREQ_RANGE
    freqs = tuple(tuple(u(-hi, hi) if k else u(lo, hi) for k in range(3)) for _ in range(3))
    return BoxRoom(half, tuple(out), freqs, (u(0, 2 * math.pi), u(0, 2 * math.pi), u(0, 2 * math.pi)))


def render_room(room: BoxRoom, rotation: Tensor, position: Tensor, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Equirect ``(3, H, W)`` colour and ``(1, H, W)`` distance of ``room`` seen from a camera
    (camera-to-world ``rotation (3, 3)``, ``position (3,)``)."""
    d = erp_directions(hw, device=position.device, dtype=torch.float64) @ rotation.to(torch.float64).T
    origin = position.to(torch.float64)
    dist = room.ray_distance(origin, d)
    colour = room.colour(origin + dist[..., None] * d)
    return colour.permute(2, 0, 1).to(torch.float32), dist[None].to(torch.float32)


def random_walk(room: BoxRoom, num: int, step: float, generator: torch.Generator,
                max_tries: int = 200) -> tuple[Tensor, Tensor]:
    """``num`` cameras walking through ``room`` in steps of ``step`` (world units), turning
    freely in yaw and a little in pitch.  Returns rotations ``(num, 3, 3)`` and positions
    ``(num, 3)`` (float64).  ValueError when the room leaves no room to walk."""
    rand = lambda: float(torch.rand(1, generator=generator, dtype=torch.float64))  # noqa: E731
    pos = torch.zeros(3, dtype=torch.float64)
    for _ in range(max_tries):
        if room.free(pos):
            break
        pos = torch.tensor([(2 * rand() - 1) * room.half[0], 0.0, (2 * rand() - 1) * room.half[2]], dtype=torch.float64)
    else:
        raise ValueError("random_walk: no free starting point in the room")
    positions, rotations = [pos], []
    heading = 2 * math.pi * rand()
    for _ in range(num - 1):
        for _ in range(max_tries):
            heading += (rand() - 0.5) * 1.5
            direction = torch.tensor([math.sin(heading), (rand() - 0.5) * 0.2, math.cos(heading)], dtype=torch.float64)
            nxt = positions[-1] + step * direction / direction.norm()
            if room.free(nxt):
                positions.append(nxt)
                break
        else:
            raise ValueError("random_walk: boxed in; use a smaller step or a bigger room")
    for _ in range(num):
        rotations.append(rotation_matrix(torch.tensor(2 * math.pi * rand(), dtype=torch.float64),
                                         torch.tensor((rand() - 0.5) * 0.3, dtype=torch.float64), 0.0))
    return torch.stack(rotations), torch.stack(positions)
