"""Where a model call sits in the sampler's schedule: sigma -> step.

ComfyUI's samplers put the whole schedule in ``transformer_options["sample_sigmas"]``
(``CFGGuider.inner_sample``, 0.3.64 and 0.33); hooks that change with the step (seam rolls,
view-fusion strength, held cells) find their step from the sigma of the call.  Second-order
samplers evaluate the model between or at the next schedule entry; the two lookups here say
what they return then.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SIGMA_RTOL", "step_fraction", "step_from_sigma"]

# Relative tolerance when matching a sigma against the schedule: ComfyUI's own
# context windows use rtol=1e-4 for the same lookup (comfy/context_windows.py).
SIGMA_RTOL = 1e-4


def step_fraction(sigma: float, sigmas: Tensor | list[float]) -> float:
    """Fraction of the schedule done when the model is evaluated at ``sigma``.

    sigmas: the sampler's descending schedule of ``steps + 1`` values ending at 0.  A sigma
    equal to ``sigmas[i]`` gives ``i / steps``; a sigma between two entries (second-order
    samplers) interpolates linearly in the step index.
    """
    s = [float(v) for v in (sigmas.tolist() if isinstance(sigmas, Tensor) else sigmas)]
    steps = len(s) - 1
    if steps < 1:
        raise ValueError(f"sigmas must hold at least 2 values, got {len(s)}")
    if sigma >= s[0]:
        return 0.0
    for i in range(steps):
        hi, lo = s[i], s[i + 1]
        if lo <= sigma <= hi:
            frac = 0.0 if hi == lo else (hi - sigma) / (hi - lo)
            return (i + frac) / steps
    return 1.0


def step_from_sigma(sigma: float, sample_sigmas: Tensor) -> int:
    """Index of the sampling step a model call at ``sigma`` belongs to.

    sample_sigmas: the whole schedule ``(N + 1,)``, descending, ending at 0 (what
    ComfyUI stores in ``transformer_options["sample_sigmas"]``).  A call at
    ``sigma_i`` is step ``i``; a call between ``sigma_i`` and ``sigma_{i+1}`` (the
    midpoint of DPM-2, for example) also belongs to step ``i``.  Clamped to
    ``[0, N - 1]``.
    """
    s = sample_sigmas.detach().to("cpu", torch.float64).flatten()
    if s.numel() < 2:
        raise ValueError(f"sample_sigmas must hold at least 2 values, got {s.numel()}")
    n_steps = s.numel() - 1
    at_or_above = int((s >= float(sigma) * (1.0 - SIGMA_RTOL)).sum())
    return min(max(at_or_above - 1, 0), n_steps - 1)
