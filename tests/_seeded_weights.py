"""Deterministic weights for golden tests, regenerated instead of shipped.

A golden data file records only a model's ``{key: shape}`` table and a checksum; the script
that wrote it and the tests that read it both rebuild the weights here, so a tiny UNet's
5 MB of random numbers need not live in the repository.  The values come from one
``torch.Generator`` walked over the keys in sorted order (float64), scaled like a trained
network so activations neither vanish nor explode:

* matrices / conv kernels (ndim >= 2): ``N(0, 1) / sqrt(fan_in)``;
* 1-D weights of norms and scalars (``*.weight`` with ndim 1, ``mix_factor``): ``1 + 0.1 N(0, 1)``;
* biases: ``0.1 N(0, 1)``;
* ``gains``: extra factors for keys ending in a given suffix (sharper attention maps).

:func:`checksum` (sum and sum of squares over all tensors) lets a test say clearly that the
regenerated weights differ from those the golden file was made with (a different torch
random generator), instead of failing with a numeric mismatch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

BIAS_STD = 0.1
NORM_STD = 0.1


def seeded_state_dict(shapes: Mapping[str, Sequence[int]], seed: int,
                      gains: Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """``{key: float64 tensor}`` for every key of ``shapes`` (see the module docstring)."""
    gains = dict(gains or {})
    g = torch.Generator().manual_seed(int(seed))
    out = {}
    for key in sorted(shapes):
        shape = tuple(int(s) for s in shapes[key])
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        if len(shape) >= 2:
            x = x / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".bias"):
            x = x * BIAS_STD
        else:
            x = 1.0 + NORM_STD * x
        for suffix, gain in gains.items():
            if key.endswith(suffix):
                x = x * gain
        out[key] = x
    return out


def shapes_of(state_dict: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    """``{key: shape}`` of a state dict (JSON-friendly)."""
    return {k: list(v.shape) for k, v in state_dict.items()}


def checksum(state_dict: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[sum, sum of squares]`` over every tensor, float64, for spotting regenerated weights
    that differ from the golden file's."""
    total = torch.zeros(2, dtype=torch.float64)
    for key in sorted(state_dict):
        v = state_dict[key].to(torch.float64)
        total += torch.stack([v.sum(), (v * v).sum()])
    return total
