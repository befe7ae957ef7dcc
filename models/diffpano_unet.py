"""Run a diffusers UNet with DiffPano epipolar modules after its attention blocks.

For training (diffusers ``UNet2DConditionModel``): inside :func:`epipolar_hooks`, each
mid/decoder ``Transformer2DModel`` listed by the module set has a forward hook that
passes its output through the matching :class:`.diffpano_epipolar.EpipolarAttention`,
so every ``CrossAttnUpBlock2D`` runs ResBlock -> Attn -> EAModule (and the mid block
ResBlock -> Attn -> EAModule -> ResBlock).  The hooks exist only inside the ``with``
block; the UNet's own modules and state dict are never changed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

from .diffpano_epipolar import EpipolarAttentionSet, EpipolarPlan, diffusers_attention_blocks

__all__ = ["epipolar_hooks"]


@contextmanager
def epipolar_hooks(unet: nn.Module, modules: EpipolarAttentionSet, plan: EpipolarPlan) -> Iterator[None]:
    """Insert ``modules`` after ``unet``'s attention blocks for the duration of the block.

    plan: the views of the batch (the batch must be whole groups of ``plan.views``).
    ValueError when a module's location is not an attention block of ``unet`` or the
    channels differ.
    """
    blocks = diffusers_attention_blocks(unet)
    for loc in modules.locations:
        if loc not in blocks:
            raise ValueError(f"epipolar module {loc!r} has no attention block in this UNet (has {list(blocks)})")
        have, want = getattr(blocks[loc], "in_channels", None), modules.module_at(loc).channels
        if have != want:
            raise ValueError(f"epipolar module {loc!r} is {want} channels wide but the UNet block has {have}")
    handles = []

    def make_hook(ea):
        def hook(_module, _args, output):
            if isinstance(output, tuple):
                sample = output[0]
                geom = plan.at(sample.shape[-2:], sample.device, sample.dtype)
                return (ea(sample, geom), *output[1:])
            sample = output.sample
            geom = plan.at(sample.shape[-2:], sample.device, sample.dtype)
            return type(output)(sample=ea(sample, geom))

        return hook

    try:
        for loc in modules.locations:
            handles.append(blocks[loc].register_forward_hook(make_hook(modules.module_at(loc))))
        yield
    finally:
        for h in handles:
            h.remove()
