"""The host-free halves of the ComfyUI hooks the pack installs on a MODEL.

ComfyUI's model patches (``ModelPatcher.set_model_sampler_post_cfg_function``,
``set_model_denoise_mask_function``, ``set_model_unet_function_wrapper``) take plain
callables over documented dicts; the callables live here, where tests drive them without
ComfyUI, and ``nodes/`` only installs them.  What each reads is named in its docstring.

- :func:`post_cfg_hook`: a per-step correction of x0 after CFG (view fusion on the sphere).
- :func:`denoise_mask_hook`: hold ComfyUI's noise mask for the first part of the schedule.
- :class:`UnetRollWrapper`: turn the model's view of the sphere every step (seam rolls).
- :class:`HookedAttention`: an attention module (installed as an object patch) whose calls a
  hook passed in ``transformer_options`` may take over (keyframe attention control).
- :func:`k_diffusion_euler`: the pack's Euler loop (with noise re-injection) in k-diffusion's
  sampler signature, for ``comfy.samplers.KSAMPLER``.
- :class:`SphereUnetWrapper`: run the model on views filled from a lattice latent and fuse
  its predictions back onto the lattice (the ``uniform_sphere`` space of the fusion).

Hooks hold no device state (ComfyUI 0.33 may call one wrapper once per device clone).
Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..metrics import lattice_disagreement
from .euler import NoiseReinjection, sample_euler
from .fusion import LatticeLayout, SphereFusion
from .seam import SPATIAL_COND_KEYS, RollSchedule, roll_conditioning, roll_width
from .sigmas import SIGMA_RTOL, step_fraction, step_from_sigma
from .types import Fuse

log = logging.getLogger("pano360")

__all__ = ["post_cfg_hook", "denoise_mask_hook", "UnetRollWrapper", "ROLL_OPTION", "HookedAttention",
           "seeded_noise_sampler", "k_diffusion_euler", "SphereUnetWrapper"]

# ComfyUI's cond_or_uncond label of a batch chunk when a caller gives none: a conditional chunk.
COND_LABEL = 0

# transformer_options key where :class:`UnetRollWrapper` says how the model sees the latent in
# this call: ``(shift, width)``, the latent rolled right by ``shift`` of its ``width`` columns
# (a turn of ``-2 pi shift / width`` in yaw).  Patches that depend on absolute longitude
# (DiffPano's epipolar attention, pipelines/diffpano/patches.py) read it.
ROLL_OPTION = "pano360_roll"


def post_cfg_hook(fusion: Fuse) -> Callable[[dict], Tensor]:
    """A function for ``ModelPatcher.set_model_sampler_post_cfg_function``.

    Reads ``args["denoised"]`` (x0 after CFG, the whole batch), ``args["sigma"]`` and the
    schedule ``args["model_options"]["transformer_options"]["sample_sigmas"]`` (set by
    ``CFGGuider.inner_sample``), and returns the fused x0.
    """

    def hook(args: dict) -> Tensor:
        sigmas = args["model_options"].get("transformer_options", {}).get("sample_sigmas")
        if sigmas is None:
            raise RuntimeError("Pano360 multi-view fusion: the sampler did not provide sample_sigmas")
        return fusion(args["denoised"], step_fraction(float(args["sigma"].max()), sigmas))

    return hook


def denoise_mask_hook(until: float) -> Callable[..., Tensor]:
    """A function for ``ModelPatcher.set_model_denoise_mask_function``: keep the noise mask
    while the step fraction is below ``until``, then release every cell (noise
    augmentation of the given cells: they are refined from their noised values)."""

    def hook(sigma: Tensor, denoise_mask: Tensor, extra_options: dict) -> Tensor:
        if step_fraction(float(sigma.max()), extra_options["sigmas"]) < until:
            return denoise_mask
        return torch.ones_like(denoise_mask)

    return hook


class UnetRollWrapper:
    """A ComfyUI-style UNet function wrapper that turns the model's view of the sphere.

    ComfyUI calls ``wrapper(apply_model, {"input", "timestep", "c", "cond_or_uncond"})``
    once per model evaluation (``model_options["model_function_wrapper"]``,
    comfy/samplers.py 0.3.64); ``timestep`` is the sigma of each batch item and
    ``c`` the keyword arguments of ``apply_model`` (``c_concat``, ``c_crossattn``,
    ``control``, ``transformer_options``…).  This wrapper rolls ``input`` and the
    spatial entries of ``c`` by the step's offset, calls ``apply_model`` (or the
    wrapper that was installed before it, so patches stack), and rolls the
    prediction back: the sampler's state stays in the canonical frame (see the module
    docstring for why this equals Argus's rotating latent).

    The step comes from the sigma's place in ``c["transformer_options"]
    ["sample_sigmas"]``, which ComfyUI 0.3.64 sets for every sampler
    (``CFGGuider.inner_sample``).  When a caller does not provide it, the wrapper
    falls back to counting: each new, lower sigma is the next step and a higher sigma
    starts a new run at step 0.  That counter is the only state; it counts model
    evaluations at distinct sigmas, so for second-order samplers it turns twice per
    step, which changes the schedule but not the correctness (every call un-rolls its
    own prediction).  The fallback is logged once per wrapper when it is used.

    Second-order samplers (heun, dpm_2…) evaluate the model a second time at the next
    schedule entry; that correction call belongs to step ``i + 1`` by its sigma and so
    sees the next turn, where Argus's loop (which turns *after* a whole step) would still
    show step ``i``'s turn.  Every call un-rolls its own prediction, so the sample stays
    correct; it is not bit-identical to Argus's loop for those samplers (the difference
    on a seam-sensitive test model is about 2e-3, tests/sampling/test_seam.py).  For
    first-order samplers (euler, dpmpp_2m, lms, ddim…) it is exact.
    """

    def __init__(self, schedule: RollSchedule, previous: Callable | None = None):
        self.schedule = schedule
        self.previous = previous
        self._last_sigma: float | None = None
        self._counted_step = 0
        self._warned = False

    def step_for(self, sigma: float, transformer_options: Mapping[str, Any]) -> int:
        sample_sigmas = transformer_options.get("sample_sigmas")
        if sample_sigmas is not None:
            return step_from_sigma(sigma, sample_sigmas)
        if not self._warned:
            log.warning("Pano360 seam roll: the sampler gives no sample_sigmas; counting steps by sigma "
                        "instead (second-order samplers then turn twice per step)")
            self._warned = True
        last = self._last_sigma
        if last is None or sigma > last * (1.0 + SIGMA_RTOL):
            self._counted_step = 0
        elif sigma < last * (1.0 - SIGMA_RTOL):
            self._counted_step += 1
        self._last_sigma = sigma
        return self._counted_step

    def __call__(self, apply_model: Callable[..., Tensor], args: Mapping[str, Any]) -> Tensor:
        x, timestep, c = args["input"], args["timestep"], args["c"]
        sigma = float(timestep.detach().flatten().max())
        width = x.shape[-1]
        options = c.get("transformer_options") or {}
        shift = self.schedule.offset(self.step_for(sigma, options), width)
        if shift:
            x = roll_width(x, shift)
            c = roll_conditioning(c, shift, width)
        c = {**c, "transformer_options": {**options, ROLL_OPTION: (int(shift), int(width))}}
        if self.previous is not None:
            out = self.previous(apply_model, {**args, "input": x, "c": c})
        else:
            out = apply_model(x, timestep, **c)
        return roll_width(out, -shift) if shift else out


class HookedAttention(nn.Module):
    """Stands in for a UNet's self-attention module (a ComfyUI ``add_object_patch``).

    It shares the wrapped module's ``to_q``, ``to_k``, ``to_v`` and ``to_out`` (same attribute
    names, so weight keys and weight patches are unchanged) and behaves exactly like it unless
    ``transformer_options[key]`` holds a hook.  Then the call is the hook's:
    ``hook(self, layer, x, labels, alternate) -> (N, T, C)`` with ``labels`` ComfyUI's
    ``transformer_options["cond_or_uncond"]`` (one entry per batch chunk) and ``alternate``
    extra weights of this layer (non-persistent buffers: they follow the model's device but stay
    out of its state dict), e.g. another checkpoint's projections for one of several passes.
    ComfyUI calls self-attention as ``attn1(x, context=, value=, transformer_options=)`` in both
    supported versions (``BasicTransformerBlock``).
    """

    def __init__(self, inner: nn.Module, layer: str, key: str, alternate: Mapping[str, Tensor] | None = None):
        super().__init__()
        self.to_q, self.to_k, self.to_v, self.to_out = inner.to_q, inner.to_k, inner.to_v, inner.to_out
        self.heads = inner.heads
        self.layer = layer
        self.key = key
        self._inner_forward = inner.forward  # a bound method: the wrapped module itself stays unregistered
        names = []
        for name, value in (alternate or {}).items():
            buffer = "alternate_" + name.replace(".", "_")
            self.register_buffer(buffer, value.detach().clone(), persistent=False)
            names.append((name, buffer))
        self._alternate_names: tuple[tuple[str, str], ...] = tuple(names)

    def alternate(self) -> dict[str, Tensor] | None:
        """The alternate weights under their original names (``to_v.weight`` …), or None."""
        if not self._alternate_names:
            return None
        return {name: getattr(self, buffer) for name, buffer in self._alternate_names}

    def forward(self, x: Tensor, context: Tensor | None = None, value: Tensor | None = None, mask: Tensor | None = None,
                transformer_options: Mapping | None = None) -> Tensor:
        options = {} if transformer_options is None else transformer_options
        hook = options.get(self.key)
        if hook is None:
            return self._inner_forward(x, context=context, value=value, mask=mask, transformer_options=options)
        if context is not None or value is not None or mask is not None:
            raise RuntimeError(f"{self.layer}: the {self.key} hook handles plain self-attention only")
        return hook(self, self.layer, x, options.get("cond_or_uncond") or (COND_LABEL,), self.alternate())


def seeded_noise_sampler(like: Tensor, seed: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Standard normal noise shaped like ``like`` from a CPU generator seeded with ``seed`` (the
    same numbers on every device), as ``(sigma_next, sigma) -> noise``."""
    generator = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)

    def sample(sigma_next: Tensor, sigma: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=generator, dtype=torch.float32).to(device=like.device, dtype=like.dtype)

    return sample


def k_diffusion_euler(reinject_repeats: int = 0, reinject_ratio: float = 0.5) -> Callable[..., Tensor]:
    """:func:`.euler.sample_euler` (optionally with :class:`.euler.NoiseReinjection`) as a sampler
    function of k-diffusion's signature ``(model, x, sigmas, extra_args, callback, disable,
    noise_sampler)``, for ``comfy.samplers.KSAMPLER``.

    ``model(x, sigma (B,), **extra_args) -> x0`` is ComfyUI's guider; the re-injection noise
    comes from ``noise_sampler`` or from ``extra_args["seed"]`` (ComfyUI passes the seed);
    ``callback`` gets k-diffusion's ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` per step.
    """

    def sample(model, x: Tensor, sigmas: Tensor, extra_args: dict | None = None, callback=None, disable=None,
               noise_sampler=None) -> Tensor:
        extra = {} if extra_args is None else extra_args
        s_in = x.new_ones([x.shape[0]])
        reinject = None
        if reinject_repeats > 0:
            if noise_sampler is None:
                if extra.get("seed") is None:
                    raise ValueError("noise re-injection needs a seed or a noise_sampler")
                noise_sampler = seeded_noise_sampler(x, extra["seed"])
            reinject = NoiseReinjection(reinject_repeats, reinject_ratio, noise_sampler)

        def on_step(i: int, x_i: Tensor, x0: Tensor) -> None:
            if callback is not None:
                callback({"x": x_i, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

        with torch.no_grad():
            return sample_euler(lambda x_in, sigma: model(x_in, sigma * s_in, **extra), x, sigmas,
                                reinject=reinject, on_step=on_step)

    return sample


class SphereUnetWrapper:
    """A ComfyUI-style UNet function wrapper for samplers whose latent is a lattice.

    ComfyUI calls ``wrapper(apply_model, {"input", "timestep", "c", "cond_or_uncond"})``
    with ``input`` a batch of lattice latents (one per cond/uncond chunk, each in
    ``layout``: ``[T, C, 1, N]`` items or ``[1, C, T, 1, N]``).  For each chunk the views of
    this step are filled from the lattice (:meth:`SphereFusion.fill`), every tensor of ``c``
    (and ``transformer_options["sigmas"]``) whose batch is the input's is repeated for the
    views in the same order, ``apply_model`` (which returns x0) runs once on all views of all
    chunks, and each chunk's views are fused back (:meth:`SphereFusion.fuse`).  Chunks stay
    in order and keep equal sizes, so ``cond_or_uncond`` stays valid.

    The step comes from the sigma's place in ``c["transformer_options"]["sample_sigmas"]``
    (ComfyUI sets it for every sampler); without it the call raises.  Conditioning laid out
    like the latent (``c_concat``, inpaint masks, ControlNet, ...) cannot follow a point list
    and raises ValueError naming the key.  ``previous``: a wrapper installed before this one
    (it sees the views).  No state besides :attr:`SphereFusion.last_disagreement`.
    """

    def __init__(self, fusion: SphereFusion, layout: LatticeLayout, previous: Callable | None = None):
        self.fusion, self.layout, self.previous = fusion, layout, previous

    def _expand(self, value: Any, index: Tensor, batch: int) -> Any:
        if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == batch:
            return value.index_select(0, index.to(value.device))
        return value

    def __call__(self, apply_model: Callable[..., Tensor], args: Mapping[str, Any]) -> Tensor:
        x, timestep, c = args["input"], args["timestep"], args["c"]
        layout = self.layout
        batch = x.shape[0]
        if tuple(x.shape[1:]) != layout.shape[1:] or batch % layout.items:
            raise ValueError(f"Pano360 sphere fusion: the sampler's latent {list(x.shape)} is not a batch of "
                             f"lattice latents {list(layout.shape)}")
        for key in (*SPATIAL_COND_KEYS, "control"):
            if c.get(key) is not None:
                raise ValueError(f"Pano360 sphere fusion: conditioning '{key}' is laid out like the latent and cannot "
                                 f"follow the lattice; use the equirect canvas space with it")
        options = dict(c.get("transformer_options") or {})
        sample_sigmas = options.get("sample_sigmas")
        if sample_sigmas is None:
            raise RuntimeError("Pano360 sphere fusion: the sampler did not provide sample_sigmas")
        sigma = float(timestep.detach().flatten().max())
        step = step_from_sigma(sigma, sample_sigmas)
        fraction = step_fraction(sigma, sample_sigmas)
        views = self.fusion.views(step)
        chunks = batch // layout.items
        filled = [self.fusion.fill(layout.values(x[i * layout.items:(i + 1) * layout.items]), views, layout)
                  for i in range(chunks)]
        per_chunk = filled[0].shape[0]  # model batch items of one chunk's views
        # view-batch item j of chunk i came from lattice item i*items + (j mod items) for
        # 4-D (view-major: b = v*T + t) and from item i for 5-D
        local = torch.arange(per_chunk) % layout.items
        index = (torch.arange(chunks)[:, None] * layout.items + local[None, :]).reshape(-1)
        x_views = torch.cat(filled)
        c_views = {k: self._expand(v, index, batch) for k, v in c.items() if k != "transformer_options"}
        if "sigmas" in options:
            options["sigmas"] = self._expand(options["sigmas"], index, batch)
        c_views["transformer_options"] = options
        t_views = self._expand(timestep, index, batch)
        if self.previous is not None:
            out = self.previous(apply_model, {**args, "input": x_views, "timestep": t_views, "c": c_views})
        else:
            out = apply_model(x_views, t_views, **c_views)
        if step == len(sample_sigmas) - 2:  # the last step: keep the views' spread for the metrics
            kinds = list(args.get("cond_or_uncond") or [])
            cond = kinds.index(0) if 0 in kinds else 0  # the positive prompt's chunk
            grid = layout.views_layout(views.num_views, self.fusion.view_hw).to_grid(
                out[cond * per_chunk:(cond + 1) * per_chunk])
            self.fusion.last_disagreement = float(lattice_disagreement(grid.detach().float(), views).nanmean())
        fused = [layout.latent(self.fusion.fuse(out[i * per_chunk:(i + 1) * per_chunk], views, layout, fraction))
                 for i in range(chunks)]
        return torch.cat(fused).to(x.dtype)
