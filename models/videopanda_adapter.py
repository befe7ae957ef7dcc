"""VideoPanda's new layers for a Wan 2.1 DiT, as one adapter state dict.

VideoPanda (Xie et al. 2025, §3.1) adds to a video diffusion model: multi-view attention
across the views of each frame (MVDream-style, initialised from the spatial self-attention
and added residually through zero-initialised layers), ray directions of every view
relative to view 0 at latent resolution, concatenated channel-wise and fed in at the first
layer through a zero-initialised convolution, a binary condition-mask channel, and the
noise-augmentation sigma of the conditioning frames.  Pano360 builds them for Wan 2.1
(``Wan-AI/Wan2.1-T2V-1.3B``), whose blocks hold one space-time self-attention over every
token of a video, so the adapter is:

* ``blocks.{i}.mv_attn``: :class:`MultiViewAttention`: the tokens of the ``V`` views of one
  latent frame attend jointly.  ``q, k, v, o, norm_q, norm_k`` start as copies of
  ``blocks.{i}.self_attn`` (VideoPanda §3.2, after MVDream), ``proj_out`` starts at zero.
  Its output is added to the block's self-attention output, inside the block's gate (the
  paper's "combined with the existing 2D self-attention layers in a residual manner").
* ``cond_embedding``: a zero-initialised ``Conv3d`` with the patch embedding's kernel over
  the ray channels and the mask channel; its tokens are added to the patch embedding's.
  A zero-initialised branch is exactly the base patch embedding widened by zero input
  channels (convolution is linear), i.e. the paper's channel-wise concatenation.
* ``sigma_embedding``: Wan's sinusoidal embedding of ``1000 * sigma`` -> ``Linear, SiLU,
  Linear`` (last layer zero), added to the tokens of the given cells (mask = 1).

Extra input channels (what a host concatenates after the latent channels, per batch item
``[B, C_cond, T, H, W]`` at latent resolution): ``rays`` (3 directions, or 6 Plücker
``(o x d, d)``), ``mask`` (1 = given cell), ``sigma`` (noise-augmentation sigma of the
cell, 0 for generated cells).  Mask and sigma are constant over each cell (one latent
frame of one view).

State-dict keys (``D`` = model width, ``R`` = ray channels, ``F`` = ``freq_dim``)::

    cond_embedding.weight                (D, R + 1, 1, 2, 2)   zero at init
    cond_embedding.bias                  (D,)                  zero at init
    sigma_embedding.0.weight / .bias     (D, F) / (D,)
    sigma_embedding.2.weight / .bias     (D, D) / (D,)         zero at init
    blocks.{i}.mv_attn.{q,k,v,o}.weight  (D, D)    copied from blocks.{i}.self_attn.*
    blocks.{i}.mv_attn.{q,k,v,o}.bias    (D,)      copied
    blocks.{i}.mv_attn.norm_{q,k}.weight (D,)      copied (RMSNorm over all heads)
    blocks.{i}.mv_attn.proj_out.weight   (D, D)    zero at init
    blocks.{i}.mv_attn.proj_out.bias     (D,)      zero at init

Base keys use Wan's official (= ComfyUI's) names; :func:`.videopanda_wan.official_to_diffusers_key`
names them for diffusers.  Files are safetensors with the configuration and the training
facts in the header (:func:`save_adapter`, :func:`load_adapter`).  Host-free: never imports
ComfyUI or diffusers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "WAN21_T2V_1_3B",
    "WAN_HEAD_DIM",
    "RAY_CHANNELS",
    "VideoPandaConfig",
    "TrainingFacts",
    "MultiViewAttention",
    "SigmaEmbedding",
    "VideoPandaAdapter",
    "sinusoidal_embedding",
    "embed_conditioning",
    "config_from_wan_state_dict",
    "save_adapter",
    "load_adapter",
    "LoadedAdapter",
    "read_adapter_header",
    "ADAPTER_FORMAT",
    "ADAPTER_FORMAT_VERSION",
    "RopeFn",
]

# Applies rotary position embedding to (B, L, heads, head_dim) queries or keys.
RopeFn = Callable[[Tensor], Tensor]

# Wan 2.1 attention heads are 128 wide (Wan2.1 configs: 1.3B dim 1536 / 12 heads, 14B 5120 / 40;
# ComfyUI comfy/model_detection.py derives num_heads = dim // 128 the same way).
WAN_HEAD_DIM = 128
# Wan's patch embedding: Conv3d kernel = stride = (1, 2, 2) (Wan2.1 wan/modules/model.py).
WAN_PATCH = (1, 2, 2)
# Wan's sinusoidal time embedding width and timestep scale: t = 1000 * sigma
# (freq_dim 256 in every Wan 2.1 config; ComfyUI ModelSamplingDiscreteFlow multiplier 1000).
WAN_FREQ_DIM = 256
WAN_TIMESTEP_SCALE = 1000.0
WAN_EPS = 1e-6  # RMSNorm / LayerNorm eps of every Wan 2.1 config
RAY_CHANNELS = {"directions": 3, "plucker": 6}
ADAPTER_FORMAT = "pano360.videopanda_adapter"
ADAPTER_FORMAT_VERSION = "1"


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoPandaConfig:
    """The adapter's shape.  Defaults are Wan 2.1 T2V 1.3B (its config.json: dim 1536,
    12 heads, 30 layers, 16 latent channels, patch (1, 2, 2), freq_dim 256)."""

    dim: int = 1536
    num_heads: int = 12
    num_layers: int = 30
    in_channels: int = 16
    patch_size: tuple[int, int, int] = WAN_PATCH
    freq_dim: int = WAN_FREQ_DIM
    eps: float = WAN_EPS
    ray_encoding: Literal["directions", "plucker"] = "directions"  # VideoPanda §3.1: ray directions
    mv_blocks: tuple[int, ...] | None = None  # blocks with multi-view attention; None = all

    def __post_init__(self):
        if self.ray_encoding not in RAY_CHANNELS:
            raise ValueError(f"ray_encoding must be one of {tuple(RAY_CHANNELS)}, got {self.ray_encoding!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
        if self.mv_blocks is not None:
            bad = [i for i in self.mv_blocks if not 0 <= i < self.num_layers]
            if bad or len(set(self.mv_blocks)) != len(self.mv_blocks):
                raise ValueError(f"mv_blocks must be distinct indices in 0..{self.num_layers - 1}, got {self.mv_blocks}")
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.mv_blocks is not None:
            object.__setattr__(self, "mv_blocks", tuple(sorted(int(i) for i in self.mv_blocks)))

    @property
    def ray_channels(self) -> int:
        return RAY_CHANNELS[self.ray_encoding]

    @property
    def cond_channels(self) -> int:
        """Extra input channels a host concatenates: rays, mask, sigma."""
        return self.ray_channels + 2

    @property
    def blocks_with_views(self) -> tuple[int, ...]:
        return tuple(range(self.num_layers)) if self.mv_blocks is None else self.mv_blocks

    def to_json(self) -> str:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        d["mv_blocks"] = None if self.mv_blocks is None else list(self.mv_blocks)
        return json.dumps(d, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "VideoPandaConfig":
        d = json.loads(text)
        known = {f.name for f in fields(VideoPandaConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VideoPanda adapter config fields {unknown}")
        if d.get("mv_blocks") is not None:
            d["mv_blocks"] = tuple(d["mv_blocks"])
        if "patch_size" in d:
            d["patch_size"] = tuple(d["patch_size"])
        return VideoPandaConfig(**d)


WAN21_T2V_1_3B = VideoPandaConfig()


@dataclass(frozen=True)
class TrainingFacts:
    """How an adapter was trained: what a sampler must reproduce (stored in the file header).

    prediction: ``"flow"`` = Wan's own rectified-flow velocity ``eps - x0`` (the RF form of
    v-prediction; see docs/videopanda.md).  shift: the time shift ``s`` of the training
    schedule (log-SNR shifted by ``-2 log s``) at ``shift_tokens`` tokens per sample; other
    sizes use ``s * sqrt(tokens / shift_tokens)`` (SD3 §5.3.2).  shift_low: the shift at the
    low-noise end for an interpolated schedule (None = plain shift).  noise_aug_sigma: the
    default noise-augmentation sigma of carried (autoregressive) cells at inference.
    """

    prediction: Literal["flow"] = "flow"
    shift: float = 8.0
    shift_tokens: int = 32760
    shift_low: float | None = None
    noise_aug_sigma: float = 0.0
    base: str = "wan2.1_t2v_1.3B"
    steps: int = 0
    matrices: tuple[tuple[int, int], ...] = ()
    base_training: str = "frozen"
    notes: str = ""

    def __post_init__(self):
        if self.prediction != "flow":
            raise ValueError(f"prediction must be 'flow', got {self.prediction!r}")
        if self.shift <= 0 or (self.shift_low is not None and self.shift_low <= 0):
            raise ValueError(f"shift and shift_low must be > 0, got {self.shift}, {self.shift_low}")
        object.__setattr__(self, "matrices", tuple(tuple(int(v) for v in m) for m in self.matrices))

    def to_json(self) -> str:
        d = asdict(self)
        d["matrices"] = [list(m) for m in self.matrices]
        return json.dumps(d, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "TrainingFacts":
        d = json.loads(text)
        known = {f.name for f in fields(TrainingFacts)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VideoPanda training fields {unknown}")
        if "matrices" in d:
            d["matrices"] = tuple(tuple(m) for m in d["matrices"])
        return TrainingFacts(**d)


def config_from_wan_state_dict(sd: Mapping[str, Tensor], **overrides) -> VideoPandaConfig:
    """The adapter config matching a Wan 2.1 T2V state dict (official/ComfyUI keys, an
    optional ``model.diffusion_model.`` prefix).  Dimensions come from tensor shapes; heads
    from :data:`WAN_HEAD_DIM`.  ValueError when the keys are not a Wan text-to-video model."""
    prefix = next((p for p in ("model.diffusion_model.", "diffusion_model.", "") if f"{p}patch_embedding.weight" in sd), None)
    if prefix is None or f"{prefix}head.modulation" not in sd:
        raise ValueError("not a Wan 2.1 state dict: 'patch_embedding.weight' / 'head.modulation' missing")
    if any(k.startswith(f"{prefix}img_emb.") for k in sd):
        raise ValueError("an image-to-video Wan model; the VideoPanda adapter is built for text-to-video Wan")
    pe = sd[f"{prefix}patch_embedding.weight"]
    dim, in_ch = int(pe.shape[0]), int(pe.shape[1])
    layers = 1 + max(int(k[len(prefix):].split(".")[1]) for k in sd if k.startswith(f"{prefix}blocks."))
    freq = int(sd[f"{prefix}time_embedding.0.weight"].shape[1])
    return VideoPandaConfig(dim=dim, num_heads=max(1, dim // WAN_HEAD_DIM), num_layers=layers, in_channels=in_ch,
                            patch_size=tuple(int(s) for s in pe.shape[2:]), freq_dim=freq, **overrides)


# ---------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------


def sinusoidal_embedding(dim: int, position: Tensor) -> Tensor:
    """Wan's timestep embedding ``[cos(p w_i), sin(p w_i)]``, ``w_i = 10000^(-i / (dim/2))``.

    position: ``(N,)``.  Returns ``(N, dim)`` float32 (Wan2.1 ``sinusoidal_embedding_1d``).
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    p = position.to(torch.float32)
    freqs = torch.pow(10000.0, -torch.arange(half, device=p.device, dtype=torch.float32) / half)
    angles = torch.outer(p, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class MultiViewAttention(nn.Module):
    """Self-attention across the views of each frame (VideoPanda §3.1; MVDream's 3-D attention).

    Tokens arrive in Wan's layout, a view-major batch ``(B*V, T*S, D)`` (``S`` = tokens of one
    latent frame); they are regrouped to ``(B*T, V*S, D)`` so every token attends to the
    tokens of all views at its frame.  Positions keep each view's own rotary embedding
    (applied before regrouping), so with ``V = 1`` this is the block's self-attention
    restricted to one frame; what tells views apart is the ray embedding.
    """

    def __init__(self, dim: int, num_heads: int, eps: float = WAN_EPS):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        self.proj_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def attention(self, x: Tensor, views: int, frames: int, rope: RopeFn | None = None) -> Tensor:
        """The joint attention before ``proj_out``.  x: ``(B*V, T*S, D)`` -> same shape."""
        n, length, dim = x.shape
        if n % views or length % frames:
            raise ValueError(f"tokens {list(x.shape)} do not split into {views} views x {frames} frames")
        h = self.num_heads
        q = self.norm_q(self.q(x)).unflatten(-1, (h, -1))  # (B*V, L, H, d)
        k = self.norm_k(self.k(x)).unflatten(-1, (h, -1))
        v = self.v(x).unflatten(-1, (h, -1))
        if rope is not None:
            q, k = rope(q), rope(k)
        group = "(b v) (t s) h d -> (b t) h (v s) d"
        q, k, v = (rearrange(a, group, v=views, t=frames) for a in (q, k, v))  # (B*T, H, V*S, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "(b t) h (v s) d -> (b v) (t s) (h d)", v=views, t=frames)
        return self.o(out)

    def forward(self, x: Tensor, views: int, frames: int, rope: RopeFn | None = None) -> Tensor:
        """x: ``(B*V, T*S, D)``, the block's modulated self-attention input.  Returns the
        residual to add to the block's self-attention output, same shape (zero at init)."""
        return self.proj_out(self.attention(x, views, frames, rope))

    @torch.no_grad()
    def copy_from(self, weights: Mapping[str, Tensor]) -> None:
        """Copy ``q, k, v, o, norm_q, norm_k`` from a Wan self-attention's state
        (``{"q.weight": ..., ...}``, official names)."""
        for name in ("q", "k", "v", "o"):
            getattr(self, name).weight.copy_(weights[f"{name}.weight"])
            getattr(self, name).bias.copy_(weights[f"{name}.bias"])
        self.norm_q.weight.copy_(weights["norm_q.weight"])
        self.norm_k.weight.copy_(weights["norm_k.weight"])


class SigmaEmbedding(nn.Sequential):
    """``1000 * sigma`` -> sinusoidal (freq_dim) -> Linear -> SiLU -> Linear (zero init)."""

    def __init__(self, freq_dim: int, dim: int):
        super().__init__(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.freq_dim = freq_dim
        nn.init.zeros_(self[2].weight)
        nn.init.zeros_(self[2].bias)

    def forward(self, sigma: Tensor) -> Tensor:  # (N,) -> (N, D)
        return super().forward(sinusoidal_embedding(self.freq_dim, sigma * WAN_TIMESTEP_SCALE).to(self[0].weight.dtype))


class _Block(nn.Module):
    def __init__(self, config: VideoPandaConfig):
        super().__init__()
        self.mv_attn = MultiViewAttention(config.dim, config.num_heads, config.eps)


class VideoPandaAdapter(nn.Module):
    """All of VideoPanda's new layers for one Wan model (see the module docstring for keys)."""

    def __init__(self, config: VideoPandaConfig = WAN21_T2V_1_3B):
        super().__init__()
        self.config = config
        self.cond_embedding = nn.Conv3d(config.ray_channels + 1, config.dim, kernel_size=config.patch_size,
                                        stride=config.patch_size)
        nn.init.zeros_(self.cond_embedding.weight)
        nn.init.zeros_(self.cond_embedding.bias)
        self.sigma_embedding = SigmaEmbedding(config.freq_dim, config.dim)
        self.blocks = nn.ModuleDict({str(i): _Block(config) for i in config.blocks_with_views})

    def mv_attn(self, block: int) -> MultiViewAttention | None:
        """Block ``block``'s multi-view attention, or None when the block has none."""
        entry = self.blocks[str(block)] if str(block) in self.blocks else None
        return None if entry is None else entry.mv_attn

    @torch.no_grad()
    def init_from_base(self, base_sd: Mapping[str, Tensor]) -> "VideoPandaAdapter":
        """Copy every block's self-attention into its multi-view attention (VideoPanda §3.2).

        base_sd: a Wan state dict with official/ComfyUI keys (``blocks.{i}.self_attn.q.weight``
        ...), optionally prefixed ``model.diffusion_model.`` / ``diffusion_model.``.
        """
        prefix = next((p for p in ("model.diffusion_model.", "diffusion_model.", "")
                       if f"{p}blocks.0.self_attn.q.weight" in base_sd), None)
        if prefix is None:
            raise ValueError("base state dict has no 'blocks.0.self_attn.q.weight' (official Wan keys expected)")
        for i in self.config.blocks_with_views:
            head = f"{prefix}blocks.{i}.self_attn."
            sub = {k[len(head):]: v for k, v in base_sd.items() if k.startswith(head)}
            if not sub:
                raise ValueError(f"base state dict has no block {i} (the adapter expects {self.config.num_layers})")
            self.mv_attn(i).copy_from(sub)
        return self

    def cond_tokens(self, cond: Tensor, out_dtype: torch.dtype | None = None) -> Tensor:
        """Tokens to add to the patch embedding's output (:func:`embed_conditioning`)."""
        return embed_conditioning(self.cond_embedding, self.sigma_embedding, self.config, cond, out_dtype)


def embed_conditioning(cond_embedding: nn.Conv3d, sigma_embedding: SigmaEmbedding, config: VideoPandaConfig,
                       cond: Tensor, out_dtype: torch.dtype | None = None) -> Tensor:
    """Tokens to add to the patch embedding's output, in its layout ``(B, D, T', h', w')``.

    cond: ``(B, R + 2, T, H, W)`` (rays, mask, sigma) at latent resolution, padded like the
    latents.  Mask and sigma are read per cell (their mean over H, W).
    """
    r = config.ray_channels
    if cond.ndim != 5 or cond.shape[1] != r + 2:
        raise ValueError(f"cond must be (B, {r + 2}, T, H, W) (rays, mask, sigma), got {list(cond.shape)}")
    w = cond_embedding.weight
    tokens = cond_embedding(cond[:, : r + 1].to(w.dtype))  # (B, D, T', h', w')
    b, _, t = tokens.shape[:3]
    pt = config.patch_size[0]
    mask = cond[:, r].mean(dim=(-2, -1))[:, ::pt][:, :t]  # (B, T')
    sigma = cond[:, r + 1].mean(dim=(-2, -1))[:, ::pt][:, :t]
    emb = sigma_embedding(sigma.reshape(-1)).reshape(b, t, -1)  # (B, T', D)
    emb = emb * mask.unsqueeze(-1).to(emb.dtype)
    tokens = tokens + rearrange(emb, "b t d -> b d t 1 1").to(tokens.dtype)
    return tokens if out_dtype is None else tokens.to(out_dtype)


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def save_adapter(path: str, adapter: VideoPandaAdapter, training: TrainingFacts,
                 extra: Mapping[str, Tensor] | None = None) -> None:
    """Write ``adapter`` (and ``extra`` tensors: ``base.*`` replaced base weights,
    ``base_lora.*`` base LoRA factors) as safetensors with the config and training facts
    in the header.  The caller makes the write atomic (media.atomic)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter.state_dict().items()}
    for k, v in (extra or {}).items():
        if not (k.startswith("base.") or k.startswith("base_lora.")):
            raise ValueError(f"extra adapter tensors must be 'base.*' or 'base_lora.*', got {k!r}")
        tensors[k] = v.detach().to("cpu").contiguous()
    meta = {
        "format": ADAPTER_FORMAT,
        "format_version": ADAPTER_FORMAT_VERSION,
        "config": adapter.config.to_json(),
        "training": training.to_json(),
    }
    save_file(tensors, path, metadata=meta)


def read_adapter_header(path: str) -> tuple[VideoPandaConfig, TrainingFacts]:
    """Config and training facts of an adapter file, without reading its tensors."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path}: not a Pano360 VideoPanda adapter (header 'format' is {meta.get('format')!r}, "
                         f"expected {ADAPTER_FORMAT!r})")
    if meta.get("format_version") != ADAPTER_FORMAT_VERSION:
        raise ValueError(f"{path}: adapter format version {meta.get('format_version')!r} is not supported "
                         f"(this Pano360 reads {ADAPTER_FORMAT_VERSION!r})")
    return VideoPandaConfig.from_json(meta["config"]), TrainingFacts.from_json(meta["training"])


@dataclass
class LoadedAdapter:
    """An adapter file: the module, how it was trained, and the base-weight extras."""

    adapter: VideoPandaAdapter
    training: TrainingFacts
    base_weights: dict[str, Tensor] = field(default_factory=dict)  # official key -> tensor
    base_lora: dict[str, Tensor] = field(default_factory=dict)  # "<official module>.lora_down.weight" ...


def load_adapter(path: str, device: torch.device | str = "cpu") -> LoadedAdapter:
    """Read an adapter file strictly: missing or unexpected adapter keys raise ValueError
    naming the file and the keys."""
    from safetensors.torch import load_file

    config, training = read_adapter_header(path)
    tensors = load_file(path, device=str(device))
    base = {k[len("base."):]: v for k, v in tensors.items() if k.startswith("base.")}
    lora = {k[len("base_lora."):]: v for k, v in tensors.items() if k.startswith("base_lora.")}
    own = {k: v for k, v in tensors.items() if not (k.startswith("base.") or k.startswith("base_lora."))}
    adapter = VideoPandaAdapter(config)
    expected = set(adapter.state_dict())
    missing, unexpected = sorted(expected - set(own)), sorted(set(own) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: adapter keys do not match its config: missing {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
    adapter.load_state_dict(own, strict=True)
    return LoadedAdapter(adapter.to(device), training, base, lora)

