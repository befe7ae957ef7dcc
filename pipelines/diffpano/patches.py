"""DiffPano inside ComfyUI's SD UNet: the host-free halves of the model patches.

Two patches, both installed on a clone of a MODEL by ``nodes/diffpano.py``:

* :class:`EpipolarUNetWrapper` — trained EAModules after the attention blocks.  A
  ``DIFFUSION_MODEL`` wrapper (``comfy.patcher_extension.WrappersMP``, present in ComfyUI
  0.3.64 and 0.33) that, for the duration of one UNet call, puts forward hooks on the
  ``SpatialTransformer`` of the middle block and of every output block that has one, so
  each runs ResBlock -> Attn -> EAModule as in diffusers' ``CrossAttnUpBlock2D``.  (0.33's
  ``forward_timestep_embed_patch`` could wrap a ``SpatialTransformer``, but 0.3.64 applies
  that patch to other layer types only; a wrapper serves both and leaves the weights, LoRA
  patches and other packs' attention patches untouched.)
* :func:`extended_attention_patch` — the training-free epipolar attention, an
  ``attn1_replace`` patch: the block's own ``to_q/to_k/to_v`` outputs go through
  :func:`..models.diffpano_epipolar.epipolar_extended_attention`.

A ComfyUI batch is the scene's views repeated per cond/uncond chunk
(``transformer_options["cond_or_uncond"]``), which is exactly the modules' ``groups``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ...models.diffpano_epipolar import EpipolarAttentionSet, EpipolarConfig, EpipolarPlan, EpipolarViews, epipolar_extended_attention
from ...projection.geometry import rotation_matrix
from ...sampling.hooks import ROLL_OPTION

__all__ = ["AttentionBlock", "comfy_attention_blocks", "rolled_views", "EpipolarUNetWrapper", "extended_attention_patch",
           "WRAPPER_KEY"]

# Key of the wrapper in the MODEL's wrapper table (one per patch kind, so re-applying replaces).
WRAPPER_KEY = "pano360_diffpano_epipolar"
# Feature maps with fewer rows are no equirect to sample (an 8x16 latent's middle block is
# 1x2): the patches leave them as the base model computes them.
MIN_ROWS = 2


def _is_spatial_transformer(layer: nn.Module) -> bool:
    # ComfyUI's SpatialTransformer (comfy/ldm/modules/attention.py) by its parts, so this
    # module needs no ComfyUI import.
    return hasattr(layer, "transformer_blocks") and hasattr(layer, "proj_in") and hasattr(layer, "proj_out")


@dataclass(frozen=True)
class AttentionBlock:
    """One attention block of a ComfyUI UNet: its ``transformer_options["block"]`` id
    (``("middle", 0)`` or ``("output", n)``), its downsampling factor against the latent and
    the ``SpatialTransformer`` module."""

    block: tuple[str, int]
    factor: int
    module: nn.Module


def comfy_attention_blocks(diffusion_model: nn.Module) -> dict[str, AttentionBlock]:
    """``{diffusers location: AttentionBlock}`` of a ComfyUI ``UNetModel``'s middle block and
    decoder.  ``output_blocks`` run the levels from the deepest up, ``num_res_blocks[level] + 1``
    blocks each, which diffusers calls ``up_blocks.{i}.attentions.{j}`` (i from the deepest).
    ValueError for a model without that structure (a DiT such as Flux)."""
    if not all(hasattr(diffusion_model, a) for a in ("output_blocks", "num_res_blocks", "channel_mult")):
        raise ValueError(f"{type(diffusion_model).__name__} is not an SD-style UNet (no output_blocks)")
    out: dict[str, AttentionBlock] = {}
    levels = len(diffusion_model.channel_mult)
    mid = getattr(diffusion_model, "middle_block", None)
    if mid is not None:
        attn = [layer for layer in mid if _is_spatial_transformer(layer)]
        for j, layer in enumerate(attn):
            out[f"mid_block.attentions.{j}"] = AttentionBlock(("middle", 0), 2 ** (levels - 1), layer)
    number = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(diffusion_model.num_res_blocks[level] + 1):
            block = diffusion_model.output_blocks[number]
            attn = [layer for layer in block if _is_spatial_transformer(layer)]
            if len(attn) > 1:
                raise ValueError(f"output block {number}: more than one attention block")
            if attn:
                out[f"up_blocks.{i}.attentions.{j}"] = AttentionBlock(("output", number), 2 ** level, attn[0])
            number += 1
    return out


def rolled_views(views: EpipolarViews, shift: int, width: int) -> EpipolarViews:
    """The cameras as the model sees them when the latent is rolled right by ``shift`` of
    ``width`` columns: each camera turned by ``-2 pi shift / width`` in yaw, so a rolled
    pixel keeps its world direction (``R' = R R_y(-delta)``)."""
    if not shift:
        return views
    delta = 2.0 * math.pi * shift / width
    turn = rotation_matrix(torch.tensor(-delta, dtype=torch.float64), 0.0, 0.0)
    rot = views.rotations.to(torch.float64) @ turn
    return EpipolarViews(rot, views.positions, views.references)


class _Plans:
    """One :class:`EpipolarPlan` per seam-roll shift met (a schedule has a few)."""

    def __init__(self, views: EpipolarViews, config: EpipolarConfig):
        self.views, self.config = views, config
        self._plans: dict[tuple[int, int], EpipolarPlan] = {}

    def for_options(self, transformer_options: dict) -> EpipolarPlan:
        shift, width = transformer_options.get(ROLL_OPTION, (0, 1))
        key = (int(shift) % int(width), int(width)) if shift else (0, 1)
        if key not in self._plans:
            self._plans[key] = EpipolarPlan(rolled_views(self.views, *key), self.config)
        return self._plans[key]


class EpipolarUNetWrapper:
    """A ``DIFFUSION_MODEL`` wrapper applying trained EAModules (see the module docstring).

    modules: the loaded set (kept where it is; a copy per device/dtype is made on first
    use).  views: the scene's cameras and references, in batch order.  The wrapper object
    is the only state, and it lives on the MODEL clone it was added to.
    """

    def __init__(self, modules: EpipolarAttentionSet, views: EpipolarViews, config: EpipolarConfig | None = None):
        self.modules = modules
        self.views = views
        self.config = config or modules.config
        self._plans = _Plans(views, self.config)
        self._placed: tuple | None = None  # (device, dtype, modules on that device/dtype)

    def _on(self, device, dtype) -> EpipolarAttentionSet:
        # A copy: the loaded set may be shared by several MODEL clones on other devices.
        if self._placed is None or self._placed[:2] != (device, dtype):
            placed = copy.deepcopy(self.modules).eval().requires_grad_(False).to(device=device, dtype=dtype)
            self._placed = (device, dtype, placed)
        return self._placed[2]

    def __call__(self, executor, *args, **kwargs):
        # UNetModel._forward(x, timesteps, context, y, control, transformer_options, **kwargs)
        x = args[0] if args else kwargs["x"]
        options = args[5] if len(args) > 5 else kwargs.get("transformer_options", {})
        blocks = comfy_attention_blocks(executor.class_obj)
        missing = [loc for loc in self.modules.locations if loc not in blocks]
        if missing:
            raise ValueError(f"DiffPano epipolar modules {missing} have no attention block in this model "
                             f"(it has {list(blocks)}); the modules were trained for another UNet")
        v = self.views.num_views
        if x.shape[0] % v:
            raise ValueError(f"DiffPano modules: the latent batch ({x.shape[0]}) must hold the camera path's {v} "
                             "panoramas, in path order (one Empty Latent Image of batch size len(camera path))")
        modules = self._on(x.device, x.dtype)
        plan = self._plans.for_options(options or {})
        handles = []

        def make_hook(ea):
            def hook(_module, _args, output: Tensor) -> Tensor:
                if output.shape[-2] < MIN_ROWS:
                    return output
                geom = plan.at(output.shape[-2:], output.device, output.dtype)
                return ea(output, geom)

            return hook

        try:
            for loc in self.modules.locations:
                handles.append(blocks[loc].module.register_forward_hook(make_hook(modules.module_at(loc))))
            return executor(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()


def extended_attention_patch(views: EpipolarViews, config: EpipolarConfig,
                             ref_logit_bias: float = 0.0) -> Callable[[Tensor, Tensor, Tensor, dict], Tensor]:
    """An ``attn1_replace`` function ``(q, k, v, extra_options) -> out`` for the blocks chosen
    with ``ModelPatcher.set_model_attn1_replace``.  Reads ``n_heads``, ``activations_shape``
    (the block input ``(B, C, h, w)``) and the seam roll (:data:`ROLL_OPTION`) from
    ``extra_options``."""
    plans = _Plans(views, config)

    def attn1_replace(q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> Tensor:
        h, w = (int(s) for s in extra_options["activations_shape"][-2:])
        geom = plans.for_options(extra_options).at((h, w), q.device, torch.float32) if h >= MIN_ROWS else None
        return epipolar_extended_attention(q, k, v, int(extra_options["n_heads"]), geom, ref_logit_bias)

    return attn1_replace
