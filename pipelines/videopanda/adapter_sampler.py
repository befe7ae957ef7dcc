"""Host-free sampling of a view×frame grid with a VideoPanda adapter (training previews, tests).

The same rules ComfyUI applies when the Multi-View Sampler runs an adapter, in one loop:
Euler over a flow schedule (Karras et al. 2022, Algorithm 2 without churn; for a flow
model ``d = (x - x0) / sigma`` is the velocity), CFG between the conditional pass (mask,
given cells) and the unconditional one (:mod:`.adapter`), given cells held as
``comfy/samplers.py KSamplerX0Inpaint`` holds them (input noised to the step's sigma, x0
replaced by the given latents) and put back exactly at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .adapter import AdapterCall, with_given

# (latents with conditioning channels (B, C + R + 2, T, h, w), timestep (B,), text (B, L, D)) -> velocity (B, C, T, h, w)
VelocityModel = Callable[[Tensor, Tensor, Tensor], Tensor]
# (step, steps, x0)
StepCallback = Callable[[int, int, Tensor], None]

__all__ = ["VelocityModel", "sample_grid_with_adapter"]

TIMESTEP_SCALE = 1000.0  # Wan: t = 1000 * sigma (ComfyUI ModelSamplingDiscreteFlow multiplier)


def sample_grid_with_adapter(model: VelocityModel, call: AdapterCall, noise: Tensor, sigmas: Tensor, *,
                             text: Tensor, null_text: Tensor | None = None, cfg: float = 1.0,
                             callback: StepCallback | None = None) -> Tensor:
    """Sample the grid of ``call`` from ``noise`` ``(V, C, T, h, w)`` over ``sigmas`` (descending,
    starting at 1, ending at 0).  text / null_text: ``(1, L, D)`` embeddings of the prompt and
    of the empty prompt (needed when ``cfg != 1``).  Returns ``(V, C, T, h, w)``, given cells
    equal to ``call.given``."""
    if float(sigmas[0]) != 1.0 or float(sigmas[-1]) != 0.0:
        raise ValueError(f"sigmas must run from 1 to 0 (a flow schedule), got {float(sigmas[0])} .. {float(sigmas[-1])}")
    if cfg != 1.0 and null_text is None:
        raise ValueError("cfg != 1 needs null_text (the empty prompt's embedding)")
    v = call.views
    given = call.given
    keep = call.keep.to(noise) if given is not None else None
    x = noise.clone()
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma, nxt = float(sigmas[i]), float(sigmas[i + 1])
        if given is not None:  # KSamplerX0Inpaint: given cells at this sigma, from the sampler's noise
            x = torch.lerp(x, (1 - sigma) * given + sigma * noise, keep)
        cond_x = x if given is None else with_given(x, given, call.keep, call.sigma, call.noise)
        inputs = [torch.cat([cond_x, call.cond.to(x)], 1)]
        texts = [text.expand(v, *text.shape[1:])]
        if cfg != 1.0:
            inputs.append(torch.cat([x, call.null_cond.to(x)], 1))
            texts.append(null_text.expand(v, *null_text.shape[1:]))
        t = torch.full((v * len(inputs),), sigma * TIMESTEP_SCALE, device=x.device)
        vel = model(torch.cat(inputs), t, torch.cat(texts)).to(x)
        if cfg != 1.0:
            vc, vu = vel.chunk(2)
            vel = vu + cfg * (vc - vu)
        x0 = x - sigma * vel
        if given is not None:
            x0 = torch.lerp(x0, given, keep)
        x = x + (x - x0) / sigma * (nxt - sigma)
        if callback is not None:
            callback(i, steps, x0)
    if given is not None:
        x = torch.lerp(x, given, keep)
    return x
