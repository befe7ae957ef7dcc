"""Attach a :class:`.videopanda_adapter.VideoPandaAdapter` to a Wan 2.1 DiT without forking it.

Two hosts run the same adapter:

* **diffusers' ``WanTransformer3DModel``** (training): :class:`DiffusersAttachment` sets an
  attention processor on ``blocks[i].attn1`` that adds the multi-view attention to the
  stock processor's output, and patches ``patch_embedding``'s ``forward`` so that the
  conditioning channels concatenated after the latents go through the adapter's
  zero-initialised embeddings.  Views and frames of the batch are given per call with
  ``with attachment.views(V, T): transformer(...)``.
* **ComfyUI's ``comfy.ldm.wan.model.WanModel``** (sampling): :func:`comfy_forward_patches`
  returns callables for ``ModelPatcher.add_object_patch`` on the ``forward`` attributes of
  ``diffusion_model.patch_embedding`` and ``diffusion_model.blocks.{i}.self_attn`` (so no
  module is renamed and LoRAs on the base still find their keys).  The conditioning
  channels arrive as ComfyUI's ``c_concat``; views and frames in
  ``transformer_options[CONTEXT_KEY]``.  Both ComfyUI 0.3.64 and 0.33 call
  ``self_attn(x, freqs, transformer_options=...)`` and ``patch_embedding(x.float())``.

In both, a block's self-attention input ``x`` (already normalised and modulated) feeds the
multi-view attention, and its output is added to the self-attention's output before the
block's gate.  Rotary embeddings come from the host (their formats differ:
:func:`comfy_rope`, :func:`diffusers_rope`); Pano360 does not change Wan's RoPE here.

Key names: :func:`official_to_diffusers_key` / :func:`diffusers_to_official_key` map Wan's
official (= ComfyUI) state-dict keys to diffusers' and back (checked against diffusers'
``convert_wan_transformer_to_diffusers`` in the tests).  Host-free: never imports ComfyUI;
diffusers is imported only by the caller that owns the transformer.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor

from .videopanda_adapter import MultiViewAttention, RopeFn, VideoPandaAdapter, VideoPandaConfig, embed_conditioning

__all__ = [
    "CONTEXT_KEY",
    "ViewsContext",
    "comfy_rope",
    "diffusers_rope",
    "DiffusersAttachment",
    "comfy_forward_patches",
    "official_to_diffusers_key",
    "diffusers_to_official_key",
    "wan_diffusers_config",
]

# transformer_options entry the ComfyUI patches read (set by the sampler's model wrapper).
CONTEXT_KEY = "pano360_videopanda"


@dataclass(frozen=True)
class ViewsContext:
    """Grouping of the tokens of one model call: ``views`` consecutive batch items are one
    view×frame matrix, each holding ``frames`` latent frames (after patching)."""

    views: int
    frames: int

    def __post_init__(self):
        if self.views < 1 or self.frames < 1:
            raise ValueError(f"views and frames must be >= 1, got views={self.views}, frames={self.frames}")


# ---------------------------------------------------------------------------------------
# Rotary embeddings in the hosts' formats
# ---------------------------------------------------------------------------------------


def comfy_rope(freqs: Tensor) -> RopeFn:
    """RoPE from ComfyUI's Wan ``freqs`` ``(1, L, 1, d/2, 2, 2)`` (rotation matrices over
    interleaved pairs, ``comfy/ldm/flux/math.py``), for ``(B, L, H, d)`` tensors; computed
    in the freqs' dtype, returned in the input's."""

    def apply(x: Tensor) -> Tensor:
        pairs = x.to(freqs.dtype).reshape(*x.shape[:-1], -1, 1, 2)  # (B, L, H, d/2, 1, 2)
        out = freqs[..., 0] * pairs[..., 0] + freqs[..., 1] * pairs[..., 1]
        return out.reshape(x.shape).type_as(x)

    return apply


def diffusers_rope(rotary_emb: tuple[Tensor, Tensor]) -> RopeFn:
    """RoPE from diffusers' Wan ``(cos, sin)``, each ``(1, L, 1, d)`` repeated per
    interleaved pair (``WanRotaryPosEmbed``), for ``(B, L, H, d)`` tensors."""
    cos, sin = rotary_emb

    def apply(x: Tensor) -> Tensor:
        x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
        c, s = cos[..., 0::2], sin[..., 1::2]
        out = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
        return out.type_as(x)

    return apply


# ---------------------------------------------------------------------------------------
# diffusers
# ---------------------------------------------------------------------------------------


class _ViewsState:
    """The grouping of the current call (set only inside ``DiffusersAttachment.views``)."""

    def __init__(self):
        self.context: ViewsContext | None = None

    def current(self) -> ViewsContext:
        if self.context is None:
            raise RuntimeError("VideoPanda adapter: call the transformer inside 'with attachment.views(V, T):'")
        return self.context


class _MultiViewProcessor:
    """diffusers attention processor: the stock one plus the block's multi-view attention."""

    def __init__(self, base, mv: MultiViewAttention, state: _ViewsState):
        self.base, self.mv, self.state = base, mv, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None,
                 **kwargs):
        out = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **kwargs)
        ctx = self.state.current()
        rope = diffusers_rope(rotary_emb) if rotary_emb is not None else None
        return out + self.mv(hidden_states, ctx.views, ctx.frames, rope).to(out.dtype)


class DiffusersAttachment:
    """The adapter attached to a diffusers ``WanTransformer3DModel`` (training and tests).

    The transformer's input becomes ``cat([latents, cond], dim=1)`` with ``cond`` the
    ``(B, R + 2, T, H, W)`` rays, mask and sigma (:meth:`VideoPandaAdapter.cond_tokens`).
    The adapter's parameters stay in the adapter module (the transformer's state dict is
    unchanged); :meth:`detach` restores the transformer.
    """

    def __init__(self, transformer, adapter: VideoPandaAdapter):
        cfg = adapter.config
        tcfg = transformer.config
        inner = tcfg.num_attention_heads * tcfg.attention_head_dim
        if (inner, len(transformer.blocks), tcfg.in_channels) != (cfg.dim, cfg.num_layers, cfg.in_channels):
            raise ValueError(
                f"adapter is for dim {cfg.dim}, {cfg.num_layers} layers, {cfg.in_channels} channels; the transformer "
                f"has dim {inner}, {len(transformer.blocks)} layers, {tcfg.in_channels} channels")
        self.transformer, self.adapter = transformer, adapter
        self.state = _ViewsState()
        self._processors = {}
        for i in cfg.blocks_with_views:
            attn = transformer.blocks[i].attn1
            self._processors[i] = attn.processor
            attn.set_processor(_MultiViewProcessor(attn.processor, adapter.mv_attn(i), self.state))
        embed = transformer.patch_embedding
        self._embed_forward = embed.__dict__.get("forward")
        base_forward = embed.forward
        channels, extra = cfg.in_channels, cfg.cond_channels

        def forward(x: Tensor) -> Tensor:
            if x.shape[1] != channels + extra:
                raise ValueError(f"VideoPanda adapter: transformer input must have {channels} latent + {extra} "
                                 f"conditioning channels, got {x.shape[1]}")
            tokens = base_forward(x[:, :channels].contiguous())
            return tokens + adapter.cond_tokens(x[:, channels:], tokens.dtype)

        embed.forward = forward

    @contextlib.contextmanager
    def views(self, views: int, frames: int) -> Iterator[None]:
        """Calls inside group ``views`` consecutive batch items (of ``frames`` latent frames)."""
        previous = self.state.context
        self.state.context = ViewsContext(views, frames)
        try:
            yield
        finally:
            self.state.context = previous

    def checkpoint_function(self):
        """A ``gradient_checkpointing_func`` for ``transformer.enable_gradient_checkpointing``:
        ``torch.utils.checkpoint`` (non-reentrant) that recomputes a block under the views
        context of its forward (the backward pass runs after ``views()`` has exited)."""
        state = self.state

        def checkpointed(block, *args):
            ctx = state.context

            @contextlib.contextmanager
            def recompute():
                previous = state.context
                state.context = ctx
                try:
                    yield
                finally:
                    state.context = previous

            return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False,
                                                     context_fn=lambda: (contextlib.nullcontext(), recompute()))

        return checkpointed

    def detach(self) -> None:
        for i, proc in self._processors.items():
            self.transformer.blocks[i].attn1.set_processor(proc)
        embed = self.transformer.patch_embedding
        if self._embed_forward is None:
            embed.__dict__.pop("forward", None)
        else:
            embed.forward = self._embed_forward
        self._processors = {}


def wan_diffusers_config(config: VideoPandaConfig, ffn_dim: int, text_dim: int = 4096, **extra) -> dict:
    """``WanTransformer3DModel`` keyword arguments for a text-to-video Wan of ``config``'s shape."""
    return dict(patch_size=config.patch_size, num_attention_heads=config.num_heads,
                attention_head_dim=config.dim // config.num_heads, in_channels=config.in_channels,
                out_channels=config.in_channels, text_dim=text_dim, freq_dim=config.freq_dim, ffn_dim=ffn_dim,
                num_layers=config.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                eps=config.eps, **extra)


# ---------------------------------------------------------------------------------------
# ComfyUI (host-free: callables for ModelPatcher.add_object_patch)
# ---------------------------------------------------------------------------------------


class _OnDevice:
    """Casted copies of adapter sub-modules, one per (module, device, dtype); the loaded
    adapter itself stays where ComfyUI's loader put it (CPU)."""

    def __init__(self):
        self._copies: dict[tuple, torch.nn.Module] = {}

    def get(self, module: torch.nn.Module, like: Tensor, dtype: torch.dtype | None = None) -> torch.nn.Module:
        key = (id(module), like.device, dtype or like.dtype)
        found = self._copies.get(key)
        if found is None:
            found = copy.deepcopy(module).to(device=like.device, dtype=dtype or like.dtype).requires_grad_(False)
            self._copies[key] = found
        return found


def _context(transformer_options: Mapping) -> ViewsContext:
    ctx = transformer_options.get(CONTEXT_KEY)
    if not isinstance(ctx, ViewsContext):
        raise RuntimeError(f"VideoPanda adapter: transformer_options[{CONTEXT_KEY!r}] is not set; the patched model "
                           "must be sampled through Pano360's sampler")
    return ctx


def comfy_forward_patches(diffusion_model, adapter: VideoPandaAdapter, prefix: str = "diffusion_model.") -> dict:
    """``{attribute path: callable}`` for ``ModelPatcher.add_object_patch``.

    diffusion_model: ComfyUI's ``WanModel`` (its current ``forward`` attributes are wrapped).
    The patch embedding expects ``c_concat`` = the ``(B, R + 2, T, H, W)`` conditioning
    channels; every patched self-attention reads :class:`ViewsContext` from
    ``transformer_options[CONTEXT_KEY]`` and adds its block's multi-view attention.
    """
    cfg = adapter.config
    dim = int(diffusion_model.patch_embedding.weight.shape[0])
    if (dim, len(diffusion_model.blocks)) != (cfg.dim, cfg.num_layers):
        raise ValueError(f"adapter is for dim {cfg.dim} with {cfg.num_layers} blocks; the Wan model has dim {dim} "
                         f"with {len(diffusion_model.blocks)} blocks")
    cache = _OnDevice()
    patches = {}
    # The modules' own forwards, not the attributes: a model ComfyUI keeps loaded between runs
    # still carries the previous run's object patches, and wrapping those would stack adapters.
    embed_forward = _unpatched_forward(diffusion_model.patch_embedding)
    channels, extra = cfg.in_channels, cfg.cond_channels

    def patch_embedding(x: Tensor) -> Tensor:
        if x.shape[1] != channels + extra:
            raise RuntimeError(f"VideoPanda adapter: the Wan model got {x.shape[1]} input channels, expected "
                               f"{channels} latent + {extra} conditioning (c_concat)")
        tokens = embed_forward(x[:, :channels].contiguous())
        cond = embed_conditioning(cache.get(adapter.cond_embedding, tokens), cache.get(adapter.sigma_embedding, tokens),
                                  cfg, x[:, channels:], tokens.dtype)
        return tokens + cond

    patches[f"{prefix}patch_embedding.forward"] = patch_embedding
    for i in cfg.blocks_with_views:
        attn = diffusion_model.blocks[i].self_attn
        patches[f"{prefix}blocks.{i}.self_attn.forward"] = _self_attn_patch(_unpatched_forward(attn), adapter.mv_attn(i),
                                                                            cache)
    return patches


def _unpatched_forward(module):
    """``module``'s class ``forward`` bound to it, whatever object patch its instance
    attribute holds now."""
    return type(module).forward.__get__(module)


def _self_attn_patch(base_forward, mv: MultiViewAttention, cache: _OnDevice):
    def forward(x: Tensor, freqs: Tensor, transformer_options: Mapping = {}) -> Tensor:  # noqa: B006 (ComfyUI's signature)
        out = base_forward(x, freqs, transformer_options=transformer_options)
        ctx = _context(transformer_options)
        local = cache.get(mv, x)
        return out + local(x, ctx.views, ctx.frames, comfy_rope(freqs)).to(out.dtype)

    return forward


# ---------------------------------------------------------------------------------------
# Key names
# ---------------------------------------------------------------------------------------

# official (ComfyUI) -> diffusers, applied to the part after "blocks.{i}." or to top-level keys.
_BLOCK_RENAMES = (
    (r"^self_attn\.o\.", "attn1.to_out.0."),
    (r"^self_attn\.([qkv])\.", r"attn1.to_\1."),
    (r"^self_attn\.(norm_[qk])\.", r"attn1.\1."),
    (r"^cross_attn\.o\.", "attn2.to_out.0."),
    (r"^cross_attn\.([qkv])\.", r"attn2.to_\1."),
    (r"^cross_attn\.(norm_[qk])\.", r"attn2.\1."),
    (r"^norm3\.", "norm2."),  # the cross-attention LayerNorm (affine)
    (r"^ffn\.0\.", "ffn.net.0.proj."),
    (r"^ffn\.2\.", "ffn.net.2."),
    (r"^modulation$", "scale_shift_table"),
)
_TOP_RENAMES = (
    (r"^time_embedding\.0\.", "condition_embedder.time_embedder.linear_1."),
    (r"^time_embedding\.2\.", "condition_embedder.time_embedder.linear_2."),
    (r"^text_embedding\.0\.", "condition_embedder.text_embedder.linear_1."),
    (r"^text_embedding\.2\.", "condition_embedder.text_embedder.linear_2."),
    (r"^time_projection\.1\.", "condition_embedder.time_proj."),
    (r"^head\.head\.", "proj_out."),
    (r"^head\.modulation$", "scale_shift_table"),
    (r"^patch_embedding\.", "patch_embedding."),
)
_INVERSE_BLOCK = (
    (r"^attn1\.to_out\.0\.", "self_attn.o."),
    (r"^attn1\.to_([qkv])\.", r"self_attn.\1."),
    (r"^attn1\.(norm_[qk])\.", r"self_attn.\1."),
    (r"^attn2\.to_out\.0\.", "cross_attn.o."),
    (r"^attn2\.to_([qkv])\.", r"cross_attn.\1."),
    (r"^attn2\.(norm_[qk])\.", r"cross_attn.\1."),
    (r"^norm2\.", "norm3."),
    (r"^ffn\.net\.0\.proj\.", "ffn.0."),
    (r"^ffn\.net\.2\.", "ffn.2."),
    (r"^scale_shift_table$", "modulation"),
)
_INVERSE_TOP = (
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^proj_out\.", "head.head."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^patch_embedding\.", "patch_embedding."),
)
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.*)$")


def _rename(key: str, block_rules, top_rules) -> str:
    m = _BLOCK.match(key)
    rules, rest, head = (block_rules, m.group(2), f"blocks.{m.group(1)}.") if m else (top_rules, key, "")
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, rest)
        if n:
            return head + new
    raise KeyError(f"no Wan 2.1 text-to-video key mapping for {key!r}")


def official_to_diffusers_key(key: str) -> str:
    """Wan official / ComfyUI key (no prefix) -> diffusers ``WanTransformer3DModel`` key."""
    return _rename(key, _BLOCK_RENAMES, _TOP_RENAMES)


def diffusers_to_official_key(key: str) -> str:
    """diffusers ``WanTransformer3DModel`` key -> Wan official / ComfyUI key."""
    return _rename(key, _INVERSE_BLOCK, _INVERSE_TOP)
