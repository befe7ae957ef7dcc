"""DiffPano's spherical epipolar-aware attention module (EAModule), and its training-free twin.

DiffPano (Ye et al., NeurIPS 2024; shared/specs/lookbeyond-videopanda-diffpano.md §3c)
adds to a panorama Stable Diffusion UNet one module after every attention block of the
mid block and the decoder (``CrossAttnUpBlock``: ResBlock -> AttnBlock -> EAModule).  A
target panorama pixel's ray is sampled at S distances, each point is projected into K
reference panoramas by the longitude/latitude mapping
(:mod:`pano360.projection.epipolar`), the references' features are bilinearly sampled
there, and the target's feature attends to those S x K samples.  No code or weights were
released; this is the module as the paper describes it, with the unknowns (S, K, the
depth range and the positional encoding) as configuration (docs/diffpano.md).

:class:`EpipolarAttention` (one EAModule), for a feature map ``x (B, C, h, w)``:

    n   = GroupNorm(x)                                  (as SD's attention blocks normalise)
    q   = to_q(n)                                        (B, N, C), N = h * w
    ref = sample(n of reference k, epipolar points)     (B, N, K * S, C)
    k   = to_k(ref + pos_embed(pe)),  v = to_v(ref + pos_embed(pe))
    out = x + to_out(softmax(q k^T / sqrt(d)) v)         heads of width ``head_dim``

``pe`` is a Fourier encoding of each sample's normalised inverse distance and its parallax
angle (:func:`positional_encoding`).  ``to_out`` starts at zero, so an untrained module
returns ``x`` exactly and leaves the base UNet unchanged.  A target without references
(or whose samples all fall on a reference centre) also gets ``x`` back.

:class:`EpipolarAttentionSet` holds one module per insertion point.  **State-dict
layout** (``models/diffpano_loader.py`` writes it as safetensors): the key of a parameter
is the diffusers path of the attention block the module follows, then the parameter::

    mid_block.attentions.0.{norm.weight, norm.bias, to_q.weight, to_k.weight, to_v.weight,
                            pos_embed.weight, pos_embed.bias, to_out.weight, to_out.bias}
    up_blocks.{i}.attentions.{j}.{...same...}

(``to_q/k/v`` are ``(C, C)`` without bias, ``pos_embed`` is ``(C, 2 (1 + 2 F))`` for F
Fourier frequencies, ``to_out`` is ``(C, C)`` with bias.)

:func:`epipolar_extended_attention` is the training-free variant: inside a base model's
own self-attention (same ``to_q/to_k/to_v``, no new parameters), each target token also
attends to the reference tokens at its epipolar samples, in one softmax with its own
tokens.

Batches: the views of one scene are ``V`` consecutive batch items; a batch may repeat
them in ``groups`` (ComfyUI's cond/uncond chunks, or several scenes in training), so the
batch is ``groups * V`` items and reference ``k`` of item ``g * V + v`` is item
``g * V + references[v, k]``.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..projection.epipolar import DEPTH_SPACINGS, depth_samples, equirect_epipolar_samples, relative_pose, sample_erp_points

log = logging.getLogger(__name__)

__all__ = [
    "EpipolarConfig",
    "EpipolarViews",
    "EpipolarPlan",
    "LayerGeometry",
    "layer_geometry",
    "EpipolarAttention",
    "EpipolarAttentionSet",
    "positional_encoding",
    "pe_dim",
    "nearest_references",
    "epipolar_extended_attention",
    "diffusers_attention_blocks",
]

# SD's attention blocks normalise with GroupNorm(32, C, eps=1e-6) (diffusers
# Transformer2DModel norm_num_groups=32, eps=1e-6; ldm SpatialTransformer Normalize).
SD_NORM_GROUPS = 32
SD_NORM_EPS = 1e-6
# SD 2.x attention head width (attention_head_dim=64 per head); SD 1.5 uses 8 heads of
# C/8 = 40..160.  A head width, not a count, keeps one setting valid at every resolution.
HEAD_DIM = 64
# Fourier frequencies of the sample encoding (NeRF-style, Mildenhall et al. 2020 §5.1,
# with fewer bands: the two encoded scalars vary smoothly along a ray).
PE_FREQUENCIES = 4
# Scalars per epipolar sample fed to the positional encoding: normalised inverse
# distance and parallax angle / pi.
PE_SCALARS = 2
# Reference choice rules for :func:`nearest_references`.
REFERENCE_RULES = ("nearest", "previous")
# Elements of the gathered reference features (tokens x K*S x channels x batch) per chunk
# of target tokens: 2^23 floats (32 MB in float32); a chunk holds about four such
# temporaries (samples, positional term, keys and values, products).
GATHER_CHUNK_ELEMENTS = 1 << 23
# Elements of the own-token logits (batch x heads x queries x keys) per chunk of queries,
# in the plain-torch attention used where no fused kernel returns the log-sum-exp.
LOGITS_CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class EpipolarConfig:
    """Settings of the epipolar modules.  Shape-defining: ``head_dim``, ``pe_frequencies``,
    ``norm_groups``; the others may change at inference (they are stored with trained
    weights as the values used in training).

    num_samples: S distances per target ray.  num_refs: K reference panoramas per target.
    near, far: distance range in the units of the camera positions (``far`` may be ``inf``
    with inverse spacing).  spacing: ``inverse`` | ``linear``
    (:data:`pano360.projection.epipolar.DEPTH_SPACINGS`).  DiffPano ablates S and K but
    does not publish its values (spec §3c); the defaults are the issue's benchmark setting
    (S = 8, K = 2) and an indoor range of 0.5 m to infinity.
    """

    num_samples: int = 8
    num_refs: int = 2
    near: float = 0.5
    far: float = math.inf
    spacing: Literal["inverse", "linear"] = "inverse"
    head_dim: int = HEAD_DIM
    pe_frequencies: int = PE_FREQUENCIES
    norm_groups: int = SD_NORM_GROUPS
    norm_eps: float = SD_NORM_EPS

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_refs", "head_dim", "norm_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if isinstance(self.pe_frequencies, bool) or int(self.pe_frequencies) != self.pe_frequencies \
                or self.pe_frequencies < 0:
            raise ValueError(f"pe_frequencies: expected an integer >= 0, got {self.pe_frequencies!r}")
        if self.spacing not in DEPTH_SPACINGS:
            raise ValueError(f"spacing: unknown depth spacing {self.spacing!r}; choose one of {list(DEPTH_SPACINGS)}")
        depth_samples(self.near, self.far, 1, self.spacing)  # validates the range

    def depths(self, device=None, dtype=torch.float64) -> Tensor:
        """The S distances, ``(S,)``."""
        return depth_samples(self.near, self.far, self.num_samples, self.spacing, device, dtype)

    def to_dict(self) -> dict:
        """JSON-safe dict (``inf`` as the string ``"inf"``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["far"] = "inf" if math.isinf(self.far) else self.far
        return out

    @staticmethod
    def from_dict(data: dict) -> "EpipolarConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in fields(EpipolarConfig)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"epipolar config: unknown keys {sorted(unknown)}; allowed {sorted(known)}")
        values = dict(data)
        if "far" in values:
            values["far"] = float(values["far"])
        return EpipolarConfig(**values)


def pe_dim(frequencies: int) -> int:
    """Width of :func:`positional_encoding`: each scalar, then a sin and cos per frequency."""
    return PE_SCALARS * (1 + 2 * frequencies)


def positional_encoding(inv_depth: Tensor, parallax: Tensor, frequencies: int) -> Tensor:
    """Fourier encoding of an epipolar sample.

    inv_depth: normalised inverse distance in [0, 1] (1 at ``near``, 0 at ``far``);
    parallax: angle in radians between the sample's direction and the target ray seen from
    the reference (0 at infinity).  Both ``(...)``.  Returns ``(..., pe_dim(frequencies))``:
    ``[v, sin(2^f pi v), cos(2^f pi v) for f < frequencies]`` for ``v`` in (inv_depth,
    parallax / pi).
    """
    v = torch.stack([inv_depth, parallax / math.pi], dim=-1)  # (..., 2)
    parts = [v]
    for f in range(frequencies):
        arg = v * (math.pi * 2.0**f)
        parts += [torch.sin(arg), torch.cos(arg)]
    return torch.cat(parts, dim=-1)


# --------------------------------------------------------------------------- views and geometry


def nearest_references(positions: Tensor, num_refs: int, rule: str = "nearest") -> Tensor:
    """Pick each view's references.

    positions: ``(V, 3)`` camera centres.  rule ``nearest``: the ``num_refs`` closest other
    views (ties to the lower index); ``previous``: the closest among the earlier views only
    (sequential generation).  Returns ``(V, num_refs)`` long, ``-1`` where fewer exist.
    """
    if rule not in REFERENCE_RULES:
        raise ValueError(f"rule: unknown reference rule {rule!r}; choose one of {list(REFERENCE_RULES)}")
    v = positions.shape[0]
    dist = torch.cdist(positions.to(torch.float64), positions.to(torch.float64))
    # stable tie-break by index
    dist = dist + torch.arange(v, dtype=torch.float64)[None, :] * 1e-12
    idx = torch.arange(v)
    banned = idx[None, :] == idx[:, None]
    if rule == "previous":
        banned = banned | (idx[None, :] > idx[:, None])
    dist = dist.masked_fill(banned, math.inf)
    k = min(num_refs, v)
    order = dist.argsort(dim=1)[:, :k]
    picked = torch.where(torch.isinf(dist.gather(1, order)), torch.full_like(order, -1), order)
    if k < num_refs:
        picked = torch.cat([picked, picked.new_full((v, num_refs - k), -1)], dim=1)
    return picked


@dataclass(frozen=True)
class EpipolarViews:
    """The cameras of one scene's ``V`` panoramas and each one's references.

    rotations: ``(V, 3, 3)`` camera-to-world (:func:`pano360.projection.rotation_matrix`).
    positions: ``(V, 3)`` camera centres.  references: ``(V, K)`` long view indices, ``-1``
    for none (e.g. :func:`nearest_references`).
    """

    rotations: Tensor
    positions: Tensor
    references: Tensor

    def __post_init__(self) -> None:
        v = self.rotations.shape[0]
        if self.rotations.shape != (v, 3, 3) or self.positions.shape != (v, 3):
            raise ValueError(f"views: expected rotations (V, 3, 3) and positions (V, 3), got "
                             f"{list(self.rotations.shape)} and {list(self.positions.shape)}")
        if self.references.ndim != 2 or self.references.shape[0] != v:
            raise ValueError(f"references: expected ({v}, K), got {list(self.references.shape)}")
        refs = self.references
        if bool(((refs < -1) | (refs >= v)).any()):
            raise ValueError(f"references: indices must be -1 or in [0, {v}), got {refs.tolist()}")
        if bool((refs == torch.arange(v)[:, None]).any()):
            raise ValueError("references: a view cannot be its own reference")

    @property
    def num_views(self) -> int:
        return self.rotations.shape[0]

    @property
    def num_refs(self) -> int:
        return self.references.shape[1]


@dataclass(frozen=True)
class LayerGeometry:
    """Epipolar samples of every view at one feature resolution ``(h, w)``.

    x, y: ``(V, K, N * S)`` pixel coordinates in the reference feature map; valid:
    ``(V, K, N, S)`` bool (False for a missing reference or a sample at its centre);
    pe: ``(V, K, N, S, P)`` positional encoding; references: ``(V, K)`` long (``-1`` none).
    """

    hw: tuple[int, int]
    x: Tensor
    y: Tensor
    valid: Tensor
    pe: Tensor
    references: Tensor

    @property
    def num_views(self) -> int:
        return self.references.shape[0]

    def source_index(self, groups: int) -> Tensor:
        """``(groups * V * K,)`` batch index of each (item, reference) pair (0 where none)."""
        v = self.num_views
        offset = (torch.arange(groups, device=self.references.device) * v)[:, None, None]
        idx = self.references.clamp_min(0)[None] + offset  # (G, V, K)
        return idx.reshape(-1)


def layer_geometry(views: EpipolarViews, hw: Sequence[int], config: EpipolarConfig,
                   device=None, dtype=torch.float32) -> LayerGeometry:
    """The :class:`LayerGeometry` of ``views`` at ``hw`` (an equirect feature map, W = 2H)."""
    h, w = int(hw[0]), int(hw[1])
    refs = views.references.to(device)
    ref_idx = refs.clamp_min(0)
    rot = views.rotations.to(device=device, dtype=torch.float64)
    pos = views.positions.to(device=device, dtype=torch.float64)
    R, t = relative_pose(rot[:, None], pos[:, None], rot[ref_idx], pos[ref_idx])  # (V, K, 3, 3), (V, K, 3)
    depths = config.depths(device)
    s = equirect_epipolar_samples((h, w), R, t, depths, dtype=torch.float64)
    inv = 1.0 / depths
    inv_far = 0.0 if math.isinf(config.far) else 1.0 / config.far
    inv_norm = ((inv - inv_far) / (1.0 / config.near - inv_far)).expand_as(s.x)
    pe = positional_encoding(inv_norm, s.parallax(), config.pe_frequencies)
    valid = s.valid & (refs >= 0)[:, :, None, None]
    v, k = refs.shape
    return LayerGeometry(
        hw=(h, w), x=s.x.reshape(v, k, -1).to(dtype), y=s.y.reshape(v, k, -1).to(dtype),
        valid=valid, pe=pe.to(dtype), references=refs,
    )


class EpipolarPlan:
    """Per-resolution :class:`LayerGeometry` of one set of views, built on first use.

    One plan serves one sampling or training call; its cache holds one entry per
    ``(h, w, device, dtype)`` met (a UNet has four resolutions).
    """

    def __init__(self, views: EpipolarViews, config: EpipolarConfig):
        self.views, self.config = views, config
        self._cache: dict[tuple, LayerGeometry] = {}

    def at(self, hw: Sequence[int], device, dtype) -> LayerGeometry:
        key = (int(hw[0]), int(hw[1]), str(device), dtype)
        if key not in self._cache:
            self._cache[key] = layer_geometry(self.views, hw, self.config, device, dtype)
        return self._cache[key]


def _groups_of(batch: int, views: int) -> int:
    if views < 1 or batch % views:
        raise ValueError(f"epipolar attention: batch of {batch} is not a whole number of {views}-view scenes")
    return batch // views


def _gather_refs(feat: Tensor, geom: LayerGeometry, groups: int, t0: int, t1: int) -> Tensor:
    """Reference features at the epipolar samples of target tokens ``t0:t1``.

    feat: ``(B, C, h, w)``.  Returns ``(B, t1 - t0, K*S, C)``.
    """
    b, c, h, w = feat.shape
    v, k = geom.references.shape
    n = h * w
    s = geom.x.shape[-1] // n

    def pick(coord: Tensor) -> Tensor:
        part = coord.view(v, k, n, s)[:, :, t0:t1].to(feat.dtype)
        return part.repeat(groups, 1, 1, 1).reshape(b * k, (t1 - t0) * s)

    out = sample_erp_points(feat, pick(geom.x), pick(geom.y), geom.source_index(groups).to(feat.device))
    return rearrange(out, "(b k) (n s) c -> b n (k s) c", b=b, k=k, s=s)


def _token_chunk(batch: int, samples: int, channels: int) -> int:
    return max(1, GATHER_CHUNK_ELEMENTS // max(1, batch * samples * channels))


def _masked_softmax_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """Per-token attention over its own keys.

    q: ``(B, N, C)``; k, v: ``(B, N, M, C)``; valid: ``(B, N, M)`` bool.  Returns the output
    ``(B, N, C)`` (zero where no key is valid) and ``any_valid (B, N, 1)``.
    """
    qh = rearrange(q, "b n (h d) -> b n h d", h=heads)
    kh = rearrange(k, "b n m (h d) -> b n m h d", h=heads)
    vh = rearrange(v, "b n m (h d) -> b n m h d", h=heads)
    logits = torch.einsum("bnhd,bnmhd->bnhm", qh, kh) * (qh.shape[-1] ** -0.5)
    mask = valid[:, :, None, :]
    any_valid = valid.any(dim=-1, keepdim=True)  # (B, N, 1)
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    attn = torch.softmax(logits.float(), dim=-1).to(vh.dtype)
    attn = attn * mask  # rows with no valid key: all zero
    out = torch.einsum("bnhm,bnmhd->bnhd", attn, vh)
    return rearrange(out, "b n h d -> b n (h d)"), any_valid


# --------------------------------------------------------------------------- the module


class EpipolarAttention(nn.Module):
    """One EAModule for ``channels``-wide feature maps (see the module docstring)."""

    def __init__(self, channels: int, config: EpipolarConfig = EpipolarConfig(), gradient_checkpointing: bool = False):
        super().__init__()
        if channels % config.head_dim and config.head_dim % channels:
            raise ValueError(f"channels {channels} and head_dim {config.head_dim}: one must divide the other")
        if channels % config.norm_groups:
            raise ValueError(f"channels {channels} must be divisible by norm_groups {config.norm_groups}")
        self.channels = channels
        self.heads = max(channels // config.head_dim, 1)
        self.config = config
        self.gradient_checkpointing = gradient_checkpointing
        self.norm = nn.GroupNorm(config.norm_groups, channels, eps=config.norm_eps, affine=True)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.pos_embed = nn.Linear(pe_dim(config.pe_frequencies), channels)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: Tensor, geom: LayerGeometry) -> Tensor:
        """x: ``(B, C, h, w)`` with ``B = groups * V``; geom at ``(h, w)``.  Returns ``(B, C, h, w)``."""
        if tuple(x.shape[-2:]) != geom.hw:
            raise ValueError(f"epipolar attention: features are {list(x.shape[-2:])} but the geometry is {list(geom.hw)}")
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._forward, x, geom, use_reentrant=False)
        return self._forward(x, geom)

    def _forward(self, x: Tensor, geom: LayerGeometry) -> Tensor:
        b, c, h, w = x.shape
        groups = _groups_of(b, geom.num_views)
        n_tok = h * w
        n = self.norm(x)
        q = self.to_q(rearrange(n, "b c h w -> b (h w) c"))  # (B, N, C)
        # Project the map before sampling: bilinear sampling (weights summing to 1) and a
        # bias-free linear map commute, and N projections are cheaper than N*K*S.
        kv = torch.cat([self.to_k.weight, self.to_v.weight], dim=0)  # (2C, C)
        proj = torch.einsum("bchw,oc->bohw", n, kv)
        # to_k(ref + pos_embed(pe)) = to_k(ref) + (to_k pos_embed)(pe)
        pe_w = kv @ self.pos_embed.weight  # (2C, P)
        pe_b = kv @ self.pos_embed.bias  # (2C,)
        valid_all = geom.valid.to(x.device)
        m = valid_all.shape[1] * valid_all.shape[-1]
        step = _token_chunk(b, m, 2 * c)
        outs = []
        for t0 in range(0, n_tok, step):  # chunks of target tokens bound the gathered tensor
            t1 = min(n_tok, t0 + step)
            ref = _gather_refs(proj, geom, groups, t0, t1)  # (B, n, K*S, 2C)
            pe = rearrange(geom.pe[:, :, t0:t1].to(x.dtype).repeat(groups, 1, 1, 1, 1), "b k n s p -> b n (k s) p")
            ref += F.linear(pe, pe_w, pe_b)
            k, v = ref.split(c, dim=-1)
            valid = rearrange(valid_all[:, :, t0:t1].repeat(groups, 1, 1, 1), "b k n s -> b n (k s)")
            out, any_valid = _masked_softmax_attention(q[:, t0:t1], k, v, valid, self.heads)
            outs.append(self.to_out(out) * any_valid.to(out.dtype))
        out = torch.cat(outs, dim=1)
        return x + rearrange(out, "b (h w) c -> b c h w", h=h, w=w)


def _child(parent: nn.Module, name: str) -> nn.Module:
    if name not in parent._modules:
        parent.add_module(name, nn.ModuleDict())
    return parent._modules[name]


class EpipolarAttentionSet(nn.Module):
    """One :class:`EpipolarAttention` per insertion point, keyed by the diffusers path of the
    attention block it follows (``mid_block.attentions.0``, ``up_blocks.1.attentions.2``).

    channels: ``{location: channels}``.  The state dict is the documented layout (module
    docstring).
    """

    def __init__(self, channels: dict[str, int], config: EpipolarConfig = EpipolarConfig(),
                 gradient_checkpointing: bool = False):
        super().__init__()
        if not channels:
            raise ValueError("channels: an epipolar attention set needs at least one location")
        self.config = config
        self._locations = tuple(channels)
        for loc, ch in channels.items():
            parts = loc.split(".")
            if len(parts) < 2 or not all(parts):
                raise ValueError(f"location {loc!r}: expected a dotted diffusers path such as 'up_blocks.1.attentions.0'")
            parent: nn.Module = self
            for name in parts[:-1]:
                parent = _child(parent, name)
            parent.add_module(parts[-1], EpipolarAttention(int(ch), config, gradient_checkpointing))

    @property
    def locations(self) -> tuple[str, ...]:
        return self._locations

    def module_at(self, location: str) -> EpipolarAttention:
        if location not in self._locations:
            raise KeyError(f"no epipolar module at {location!r}; have {list(self._locations)}")
        return self.get_submodule(location)

    def channels(self) -> dict[str, int]:
        return {loc: self.module_at(loc).channels for loc in self._locations}

    @staticmethod
    def for_diffusers_unet(unet: nn.Module, config: EpipolarConfig = EpipolarConfig(),
                           gradient_checkpointing: bool = False) -> "EpipolarAttentionSet":
        """A zero-initialised set for every mid/decoder attention block of a diffusers UNet."""
        blocks = diffusers_attention_blocks(unet)
        return EpipolarAttentionSet({loc: _in_channels(m) for loc, m in blocks.items()}, config, gradient_checkpointing)


def _in_channels(block: nn.Module) -> int:
    ch = getattr(block, "in_channels", None)
    if not isinstance(ch, int):
        raise ValueError(f"{type(block).__name__}: cannot read its in_channels")
    return ch


def diffusers_attention_blocks(unet: nn.Module) -> dict[str, nn.Module]:
    """``{location: Transformer2DModel}`` of a diffusers ``UNet2DConditionModel``'s mid block and
    decoder (``up_blocks.i.attentions.j``), in forward order (mid first)."""
    out: dict[str, nn.Module] = {}
    mid = getattr(unet, "mid_block", None)
    for j, attn in enumerate(getattr(mid, "attentions", None) or ()):
        out[f"mid_block.attentions.{j}"] = attn
    for i, up in enumerate(getattr(unet, "up_blocks", None) or ()):
        for j, attn in enumerate(getattr(up, "attentions", None) or ()):
            out[f"up_blocks.{i}.attentions.{j}"] = attn
    if not out:
        raise ValueError(f"{type(unet).__name__}: no mid-block or decoder attention blocks found")
    return out


# --------------------------------------------------------------------------- training-free


def _attention_lse(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Softmax attention and its log-sum-exp: q ``(B, H, N, d)``, k, v ``(B, H, M, d)`` ->
    ``(out (B, H, N, d), lse (B, H, N) float32)``.

    torch's fused CPU flash kernel and CUDA memory-efficient kernel return the log-sum-exp
    with the output; elsewhere (or when the kernel refuses the inputs) a plain-torch
    computation over chunks of queries gives the same numbers.
    """
    try:
        if q.device.type == "cpu":
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=scale)
            return out, lse.float()
        if q.device.type == "cuda":
            out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, scale=scale)[:2]
            return out, lse[..., : q.shape[-2]].float()  # the kernel pads the query axis
    except (RuntimeError, NotImplementedError) as e:
        log.info("epipolar attention: fused kernel unavailable for %s %s (%s); using plain torch",
                 q.device.type, q.dtype, e)
    b, h, n, _ = q.shape
    out = torch.empty_like(q)
    lse = q.new_empty(b, h, n, dtype=torch.float32)
    step = max(1, LOGITS_CHUNK_ELEMENTS // max(1, b * h * k.shape[-2]))
    for s0 in range(0, n, step):
        logits = torch.einsum("bhqd,bhkd->bhqk", q[:, :, s0:s0 + step].float(), k.float()) * scale
        lse[:, :, s0:s0 + step] = torch.logsumexp(logits, dim=-1)
        out[:, :, s0:s0 + step] = torch.einsum("bhqk,bhkd->bhqd", torch.softmax(logits, -1), v.float()).to(q.dtype)
    return out, lse


def epipolar_extended_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, geom: LayerGeometry | None,
                                ref_logit_bias: float = 0.0) -> Tensor:
    """Self-attention where each target token also attends to its epipolar reference tokens.

    q, k, v: ``(B, N, heads * d)`` the base attention's projections of all batch items
    (``B = groups * V``, tokens of an ``(h, w)`` equirect map in row-major order).  Each
    item attends to its own N tokens plus, per query, the K*S reference tokens bilinearly
    sampled (seam-wrapped) at its epipolar points, in one softmax.  ``ref_logit_bias`` is
    added to the reference logits (``log`` of how much more a reference token counts than
    an own token; 0 = equal footing).  Items without references, or every item when
    ``geom`` is None, get plain self-attention.  Returns ``(B, N, heads * d)``.

    The own-token part runs in a fused attention kernel that also returns its log-sum-exp
    (:func:`_attention_lse`); the reference part is merged into the same softmax by that
    log-sum-exp, chunk by chunk of tokens, so no ``N x N`` or ``N x K*S x C`` tensor is
    ever whole.
    """
    b, n, inner = q.shape
    d = inner // heads
    scale = d**-0.5
    split = lambda t: rearrange(t, "b n (h d) -> b h n d", h=heads)  # noqa: E731
    own, lse = _attention_lse(split(q), split(k), split(v), scale)  # (B, H, N, d), (B, H, N)
    if geom is None or not bool((geom.references >= 0).any()):
        return rearrange(own, "b h n d -> b n (h d)")
    h, w = geom.hw
    if n != h * w:
        raise ValueError(f"extended attention: {n} tokens do not form the geometry's {h}x{w} map")
    groups = _groups_of(b, geom.num_views)
    kv_map = rearrange(torch.cat([k, v], dim=-1), "b (h w) c -> b c h w", h=h, w=w)
    valid_all = geom.valid.to(q.device)
    m = valid_all.shape[1] * valid_all.shape[-1]
    out = torch.empty_like(own)
    step = _token_chunk(b, m, 2 * inner)
    for t0 in range(0, n, step):
        t1 = min(n, t0 + step)
        ref = _gather_refs(kv_map, geom, groups, t0, t1)  # (B, n, M, 2*inner)
        rk, rv = ref.split(inner, dim=-1)
        rk = rearrange(rk, "b n m (h d) -> b h n m d", h=heads).float()
        rv = rearrange(rv, "b n m (h d) -> b h n m d", h=heads).float()
        valid = rearrange(valid_all[:, :, t0:t1].repeat(groups, 1, 1, 1), "b k n s -> b n (k s)")[:, None]
        qc = split(q)[:, :, t0:t1].float()  # (B, H, n, d)
        epi = torch.einsum("bhnd,bhnmd->bhnm", qc, rk) * scale + ref_logit_bias
        epi = epi.masked_fill(~valid, -math.inf)
        lse_c = lse[:, :, t0:t1]
        top = torch.maximum(lse_c, epi.amax(dim=-1))  # finite: lse_c is
        w_own = torch.exp(lse_c - top)  # (B, H, n)
        w_epi = torch.exp(epi - top[..., None])  # masked -> 0
        num = w_own[..., None] * own[:, :, t0:t1].float() + torch.einsum("bhnm,bhnmd->bhnd", w_epi, rv)
        out[:, :, t0:t1] = (num / (w_own + w_epi.sum(-1))[..., None]).to(out.dtype)
    return rearrange(out, "b h n d -> b n (h d)")
