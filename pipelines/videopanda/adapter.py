"""Running a VideoPanda adapter: conditioning channels, given cells, the sampler's model hook.

A view×frame grid ``(V, C, T, h, w)`` (Wan's 5-D latents, views on the batch axis) is
denoised jointly by a Wan model carrying a :class:`...models.videopanda_adapter.VideoPandaAdapter`.
Per model call the network receives, after the latents, the conditioning channels of every
view (:func:`conditioning`): its rays relative to view 0 of the rig, the view mask (1 =
given cell) and the noise-augmentation sigma of given cells.

Given cells (VideoPanda §3.1, after CAT3D): the network sees them clean, or noised to
``sigma`` (:func:`with_given`).  Which cells are noised follows the paper's training:
the input video (a view given at every frame, §4.5 "do not apply any noise on it") stays
clean, every other given cell (the row carried between autoregressive windows, §3.3/§4.6)
gets the noise-augmentation sigma (:func:`cell_sigmas`).  The unconditional pass of CFG
sees no mask and the sampler's own noisy values at given cells (§4.2: "the unconditional
score prediction does not take text nor video as input"; training drops the conditioning
with probability 0.1, §3.1).

:func:`unet_wrapper` is the host-free half of ComfyUI's ``model_function_wrapper``: it reads
only the documented keys of the dict ComfyUI passes (``input``, ``timestep``, ``c``,
``cond_or_uncond``) and adds ``c_concat`` and ``transformer_options[CONTEXT_KEY]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ...models.videopanda_adapter import RAY_CHANNELS
from ...models.videopanda_wan import CONTEXT_KEY, ViewsContext
from ...projection import Rig, plucker_embedding, view_rays

__all__ = [
    "UNCONDITIONAL",
    "rig_rays",
    "cell_sigmas",
    "conditioning",
    "with_given",
    "AdapterCall",
    "adapter_call",
    "unet_wrapper",
]

# comfy/samplers.py: cond_or_uncond entries, 0 = conditional pass, 1 = unconditional (COND, UNCOND).
UNCONDITIONAL = 1


def rig_rays(rig: Rig, latent_hw: tuple[int, int], encoding: str, device=None, dtype=torch.float32) -> Tensor:
    """Every view's rays relative to view 0 at latent resolution, ``(V, R, h, w)``.

    encoding: ``"directions"`` (R = 3, unit directions, VideoPanda §3.1) or ``"plucker"``
    (R = 6, ``(o x d, d)``; the moment is zero for a rig that shares the sphere centre).
    """
    if encoding not in RAY_CHANNELS:
        raise ValueError(f"ray encoding must be one of {tuple(RAY_CHANNELS)}, got {encoding!r}")
    if encoding == "plucker":
        return plucker_embedding(rig, latent_hw, relative_to_first=True, device=device, dtype=dtype)
    return view_rays(rig, latent_hw, relative_to_first=True, device=device, dtype=dtype).permute(0, 3, 1, 2).contiguous()


def cell_sigmas(mask: Tensor, noise_aug_sigma: float) -> Tensor:
    """Noise-augmentation sigma per cell ``(V, T)``: 0 for generated cells and for views given
    at every frame (the input video), ``noise_aug_sigma`` for the other given cells."""
    if not 0.0 <= noise_aug_sigma < 1.0:
        raise ValueError(f"noise_aug_sigma must be in [0, 1), got {noise_aug_sigma}")
    given = mask > 0.5
    column = given.all(dim=1, keepdim=True).expand_as(given)
    return torch.where(given & ~column, torch.full_like(mask, noise_aug_sigma, dtype=torch.float32),
                       torch.zeros_like(mask, dtype=torch.float32))


def conditioning(rays: Tensor, mask: Tensor, sigmas: Tensor) -> Tensor:
    """The adapter's input channels ``(V, R + 2, T, h, w)``: rays (same at every frame), the
    mask and the sigma of every cell.  rays ``(V, R, h, w)``, mask and sigmas ``(V, T)``."""
    v, r, h, w = rays.shape
    if mask.shape != sigmas.shape or mask.shape[0] != v:
        raise ValueError(f"mask {list(mask.shape)} and sigmas {list(sigmas.shape)} must both be [{v}, T]")
    t = mask.shape[1]
    cells = torch.stack([mask, sigmas], dim=1).to(rays)  # (V, 2, T)
    return torch.cat([rays[:, :, None].expand(v, r, t, h, w),
                      cells[..., None, None].expand(v, 2, t, h, w)], dim=1).contiguous()


def with_given(x: Tensor, given: Tensor, keep: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """``x`` with given cells replaced by ``(1 - sigma) given + sigma noise``.

    x, given, noise: ``(V, C, T, h, w)``; keep, sigma: ``(V, 1, T, 1, 1)`` (1 = given).
    """
    sigma = sigma.to(x)
    return torch.lerp(x, (1 - sigma) * given.to(x) + sigma * noise.to(x), keep.to(x))


@dataclass(frozen=True)
class AdapterCall:
    """What the model hook adds to every call on one grid of ``views`` views.

    cond / null_cond: ``(V, R + 2, T, h, w)`` channels of the conditional pass (the mask)
    and of the unconditional one (rays only).  given: ``(V, C, T, h, w)`` given latents in
    the sampler's latent space, or None.  keep, sigma: ``(V, 1, T, 1, 1)``.  noise: the
    noise-augmentation noise, like ``given``.  patch_t: Wan's temporal patch size.
    """

    views: int
    cond: Tensor
    null_cond: Tensor
    given: Tensor | None
    keep: Tensor
    sigma: Tensor
    noise: Tensor | None
    patch_t: int = 1


def adapter_call(rig: Rig, mask: Tensor, latent_shape: tuple[int, ...], encoding: str, *,
                 given: Tensor | None = None, noise_aug_sigma: float = 0.0, seed: int = 0, patch_t: int = 1) -> AdapterCall:
    """The :class:`AdapterCall` of a ``(V, C, T, h, w)`` grid.  mask: ``[V, T]`` (1 = given),
    given: latents in the sampler's space (needed when the mask gives cells).  The
    noise-augmentation noise is drawn from ``seed`` on the CPU (the same on every device)."""
    v, c, t, h, w = latent_shape
    if tuple(mask.shape) != (v, t):
        raise ValueError(f"view mask must be [{v}, {t}] for latents {list(latent_shape)}, got {list(mask.shape)}")
    mask = (mask > 0.5).to(torch.float32)
    held = bool(mask.any())
    if held and given is None:
        raise ValueError("the view mask gives cells but no given latents were passed")
    rays = rig_rays(rig, (h, w), encoding)
    sig = cell_sigmas(mask, noise_aug_sigma)
    noise = None
    if held:
        g = torch.Generator().manual_seed(int(seed) % (2**63))
        noise = torch.randn(tuple(latent_shape), generator=g)
    return AdapterCall(
        views=v,
        cond=conditioning(rays, mask, sig),
        null_cond=conditioning(rays, torch.zeros_like(mask), torch.zeros_like(sig)),
        given=given if held else None,
        keep=mask.reshape(v, 1, t, 1, 1),
        sigma=sig.reshape(v, 1, t, 1, 1),
        noise=noise,
        patch_t=patch_t,
    )


ApplyModel = Callable[..., Tensor]


def unet_wrapper(call: AdapterCall) -> Callable[[ApplyModel, dict], Tensor]:
    """A function for ``ModelPatcher.set_model_unet_function_wrapper``.

    Every chunk of ``args["input"]`` (one per entry of ``cond_or_uncond``, each the whole
    grid of ``call.views`` views) gets its conditioning channels as ``c_concat``; the
    conditional chunks get the given cells (:func:`with_given`).  ValueError when the batch
    is not whole grids or the model already has concat channels (an image-to-video Wan).
    """

    def wrapper(apply_model: ApplyModel, args: dict) -> Tensor:
        x, chunks = args["input"], args["cond_or_uncond"]
        v = call.views
        if x.ndim != 5 or x.shape[0] != v * len(chunks):
            raise ValueError(f"VideoPanda adapter: model input {list(x.shape)} is not {len(chunks)} grids of {v} views")
        c = dict(args["c"])
        if c.get("c_concat") is not None:
            raise ValueError("VideoPanda adapter: the model already takes concat channels (image-to-video Wan?); "
                             "the adapter is for text-to-video Wan")
        parts, conds = [], []
        for k, kind in enumerate(chunks):
            xk = x[k * v : (k + 1) * v]
            if kind != UNCONDITIONAL and call.given is not None:
                xk = with_given(xk, call.given.to(xk.device), call.keep.to(xk.device), call.sigma.to(xk.device),
                                call.noise.to(xk.device))
            parts.append(xk)
            conds.append((call.null_cond if kind == UNCONDITIONAL else call.cond).to(device=x.device, dtype=x.dtype))
        c["c_concat"] = torch.cat(conds)
        options = dict(c.get("transformer_options", {}))
        options[CONTEXT_KEY] = ViewsContext(v, x.shape[2] // call.patch_t)
        c["transformer_options"] = options
        return apply_model(torch.cat(parts), args["timestep"], **c)

    return wrapper
