"""PanoDiT: Look Beyond's stage-1 panorama transformer (DiT with text cross-attention).

Architecture and checkpoint layout follow ``YiGuYT/LookBeyond:PanoDiT/models/DiT_with_text.py``
(itself adapted from ``chuanyangjin/fast-DiT:models.py``, Peebles & Xie 2023).  Attribute names *are* the
official state-dict keys, so official training checkpoints load strictly:

    x_embedder.proj.{weight,bias}             patch embedding (Conv2d, kernel = stride = patch)
    x_pos_embed                               (1, T, D) frozen 2-D sin-cos table (DiT's pos_embed)
    t_embedder.mlp.{0,2}.*                    256 -> D -> D  (sinusoidal timestep embedding)
    text_embedder.mlp.{0,2}.*                 1024 -> D -> D (OpenCLIP text feature)
    blocks.{i}.attn.{qkv,proj}.*              self-attention (timm ``Attention`` layout)
    blocks.{i}.cross_atten.to_{q,k,v}.weight  cross-attention, no bias
    blocks.{i}.cross_atten.to_out.0.*         cross-attention output projection
    blocks.{i}.mlp.{fc1,fc2}.*                MLP, hidden 4 D, tanh-GELU
    blocks.{i}.adaLN_modulation.1.*           D -> 9 D (shift/scale/gate for attn, cross-attn, mlp)
    final_layer.linear.*                      D -> p*p*out_channels
    final_layer.adaLN_modulation.1.*          D -> 2 D

The conditioning vector ``c`` is the timestep embedding only; the text reaches the
network solely through the per-block cross-attention (context = LayerNorm of the embedded
text tokens).  With a single text token, softmax over one key is 1 and cross-attention
reduces to ``to_out(to_v(LN(text)))``; ``CrossAttention`` uses that shortcut at inference.

Shapes: ``x (N, C, H, W)`` latent canvas (``H == W == input_size``), ``t (N,)`` timesteps
0..999 (may be fractional), ``text (N, L, text_dim)`` or ``(N, text_dim)``.  Output
``(N, out_channels, H, W)``: channels 0..C-1 are epsilon, C..2C-1 the learned-range
variance interpolation value in [-1, 1] (when ``learn_sigma``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "PanoDiTConfig",
    "PanoDiT",
    "VARIANTS",
    "sincos_pos_embed_2d",
    "timestep_embedding",
]

LAYER_NORM_EPS = 1e-6  # fast-DiT models.py: all LayerNorms eps=1e-6, no affine
TIMESTEP_MAX_PERIOD = 10000  # GLIDE nn.py timestep_embedding, used unchanged by DiT
POS_EMBED_BASE = 10000.0  # MAE util/pos_embed.py sin-cos base


@dataclass(frozen=True)
class PanoDiTConfig:
    """Hyper-parameters of a PanoDiT.  Defaults are DiT-XL/2 as Look Beyond trains it."""

    input_size: int = 64  # latent canvas side: 512 px / 8 (sample_with_text.py --image-size 512)
    patch_size: int = 2  # DiT-XL/2 (Peebles & Xie 2023, Table 1)
    in_channels: int = 4  # SD VAE latent channels
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    learn_sigma: bool = True  # create_diffusion(learn_sigma=True): out = 2 * in channels
    text_dim: int = 1024  # OpenCLIP ViT-H-14 encode_text width (extract_text_features.py)
    frequency_embedding_size: int = 256  # TimestepEmbedder default
    cross_attn_dropout: float = 0.2  # DiT_with_text.py CrossAttention(dropout=0.2); train mode only

    def __post_init__(self) -> None:
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size {self.input_size} must be a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by 4 (2-D sin-cos embedding)")

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


# Model sizes of fast-DiT's DiT_models table (depth, hidden, heads) with Look Beyond's
# 64x64 canvas, plus a tiny configuration for tests and random-weight workflows.
VARIANTS: dict[str, PanoDiTConfig] = {
    "DiT-XL/2": PanoDiTConfig(depth=28, hidden_size=1152, patch_size=2, num_heads=16),
    "DiT-XL/4": PanoDiTConfig(depth=28, hidden_size=1152, patch_size=4, num_heads=16),
    "DiT-XL/8": PanoDiTConfig(depth=28, hidden_size=1152, patch_size=8, num_heads=16),
    "DiT-L/2": PanoDiTConfig(depth=24, hidden_size=1024, patch_size=2, num_heads=16),
    "DiT-L/4": PanoDiTConfig(depth=24, hidden_size=1024, patch_size=4, num_heads=16),
    "DiT-L/8": PanoDiTConfig(depth=24, hidden_size=1024, patch_size=8, num_heads=16),
    "DiT-B/2": PanoDiTConfig(depth=12, hidden_size=768, patch_size=2, num_heads=12),
    "DiT-B/4": PanoDiTConfig(depth=12, hidden_size=768, patch_size=4, num_heads=12),
    "DiT-B/8": PanoDiTConfig(depth=12, hidden_size=768, patch_size=8, num_heads=12),
    "DiT-S/2": PanoDiTConfig(depth=12, hidden_size=384, patch_size=2, num_heads=6),
    "DiT-S/4": PanoDiTConfig(depth=12, hidden_size=384, patch_size=4, num_heads=6),
    "DiT-S/8": PanoDiTConfig(depth=12, hidden_size=384, patch_size=8, num_heads=6),
    "tiny": PanoDiTConfig(depth=2, hidden_size=32, patch_size=8, num_heads=2),
}


# --------------------------------------------------------------------------------------
# Embedding helpers
# --------------------------------------------------------------------------------------


def timestep_embedding(t: Tensor, dim: int, max_period: int = TIMESTEP_MAX_PERIOD) -> Tensor:
    """Sinusoidal embedding ``[cos(t w_i), sin(t w_i)]`` with ``w_i = max_period^(-i/half)``.

    t: (N,) possibly fractional timesteps.  Returns (N, dim) float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def sincos_pos_embed_2d(dim: int, grid_size: int) -> Tensor:
    """Fixed 2-D sin-cos table, (grid_size**2, dim) float32, tokens in row-major order.

    For token ``(row, col)`` the first ``dim/2`` channels encode ``col`` and the last
    ``dim/2`` encode ``row``; each half is ``[sin(p w_k), cos(p w_k)]`` with
    ``w_k = 10000^(-k / (dim/4))`` (MAE ``get_2d_sincos_pos_embed``, computed in float64).
    """
    quarter = dim // 4
    omega = 1.0 / POS_EMBED_BASE ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(p: Tensor) -> Tensor:
        angle = p.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x: (N, T, D); shift, scale: (N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# --------------------------------------------------------------------------------------
# Building blocks (names = checkpoint keys)
# --------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, T, D) by a strided convolution (timm ``PatchEmbed`` keys)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)


class MLPEmbedder(nn.Module):
    """``mlp = Sequential(Linear(in, D), SiLU, Linear(D, D))``: keys ``mlp.0``, ``mlp.2``."""

    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class TimestepEmbedder(MLPEmbedder):
    """(N,) timesteps -> (N, D)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int):
        super().__init__(frequency_embedding_size, hidden_size)
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t: Tensor) -> Tensor:
        freq = timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm ``Attention`` keys)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, T, d_head)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class CrossAttention(nn.Module):
    """Queries from the image tokens, keys/values from the text tokens; no q/k/v bias."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x: (N, T, D); context: (N, L, D).  Returns (N, T, D).

        With one context token (Look Beyond's single text feature) the softmax over one key
        is exactly 1, so every query gets ``to_out(to_v(context))``; outside training (where
        to_out's dropout acts per token) that shortcut skips the query projection and the
        attention over T tokens.
        """
        if context.shape[1] == 1 and not (self.training and self.to_out[1].p > 0):
            return self.to_out(self.to_v(context)).expand(x.shape[0], x.shape[1], -1)
        return self.attend(x, context)

    def attend(self, x: Tensor, context: Tensor) -> Tensor:
        """The general multi-head attention path (any number of context tokens)."""
        n, t, d = x.shape
        h = self.num_heads

        def heads(y: Tensor) -> Tensor:
            return y.reshape(n, y.shape[1], h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.to_q(x)), heads(self.to_k(context)), heads(self.to_v(context)))
        return self.to_out(out.transpose(1, 2).reshape(n, t, d))


class MLP(nn.Module):
    """fc1 -> tanh-GELU -> fc2 (timm ``Mlp`` keys)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class PanoDiTBlock(nn.Module):
    """adaLN-Zero block: self-attention, text cross-attention, MLP, each gated by ``c``.

    norm1 feeds self-attention, norm3 cross-attention queries, norm4 the text context,
    norm2 the MLP (the official numbering).  None has parameters.
    """

    NUM_MODULATIONS = 9  # shift/scale/gate x (self-attn, cross-attn, mlp)

    def __init__(self, cfg: PanoDiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.attn = SelfAttention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.norm4 = nn.LayerNorm(d, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.mlp = MLP(d, int(d * cfg.mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, self.NUM_MODULATIONS * d))
        self.cross_atten = CrossAttention(d, cfg.num_heads, cfg.cross_attn_dropout)

    def forward(self, x: Tensor, c: Tensor, text: Tensor) -> Tensor:
        """x: (N, T, D); c: (N, D); text: (N, L, D) embedded text.  Returns (N, T, D)."""
        (shift_sa, scale_sa, gate_sa, shift_ca, scale_ca, gate_ca, shift_mlp, scale_mlp, gate_mlp) = (
            self.adaLN_modulation(c).chunk(self.NUM_MODULATIONS, dim=1)
        )
        x = x + gate_sa.unsqueeze(1) * self.attn(_modulate(self.norm1(x), shift_sa, scale_sa))
        x = x + gate_ca.unsqueeze(1) * self.cross_atten(_modulate(self.norm3(x), shift_ca, scale_ca), self.norm4(text))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map to patch pixels."""

    def __init__(self, cfg: PanoDiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.linear = nn.Linear(d, cfg.patch_size**2 * cfg.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))  # (N, T, p*p*C_out)


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


class PanoDiT(nn.Module):
    """DiT with text cross-attention over a square latent canvas.

    ``gradient_checkpointing`` (off by default) recomputes each block in the backward
    pass; it only matters for training.
    """

    def __init__(self, config: PanoDiTConfig = PanoDiTConfig(), *, gradient_checkpointing: bool = False):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = gradient_checkpointing
        d = config.hidden_size
        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, d)
        self.t_embedder = TimestepEmbedder(d, config.frequency_embedding_size)
        self.text_embedder = MLPEmbedder(config.text_dim, d)
        # Frozen, but saved in the state dict (nn.Parameter with requires_grad=False upstream).
        self.x_pos_embed = nn.Parameter(torch.zeros(1, config.num_patches, d), requires_grad=False)
        self.blocks = nn.ModuleList(PanoDiTBlock(config) for _ in range(config.depth))
        self.final_layer = FinalLayer(config)
        self.initialize_weights()

    @classmethod
    def from_variant(cls, name: str, **overrides) -> "PanoDiT":
        """Build a named variant (``VARIANTS``), optionally overriding config fields."""
        if name not in VARIANTS:
            raise ValueError(f"unknown PanoDiT variant {name!r}; choose one of {sorted(VARIANTS)}")
        return cls(replace(VARIANTS[name], **overrides))

    def initialize_weights(self) -> None:
        """DiT initialisation: Xavier linears, sin-cos positions, N(0, 0.02) timestep MLP,
        and adaLN-Zero (modulation and output layers zero, so every block starts as identity)."""
        if self.x_pos_embed.is_meta:
            return  # shapes only: nothing to initialise
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.x_pos_embed.data.copy_(sincos_pos_embed_2d(self.config.hidden_size, self.config.grid_size)[None])
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: Tensor) -> Tensor:
        """(N, T, p*p*C) -> (N, C, H, W), patch pixels in (row, col, channel) order."""
        p, c, g = self.config.patch_size, self.config.out_channels, self.config.grid_size
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, g * p, g * p)

    def embed_text(self, text: Tensor) -> Tensor:
        """(N, text_dim) or (N, L, text_dim) -> (N, L, D)."""
        if text.ndim == 2:
            text = text[:, None]
        if text.ndim != 3 or text.shape[-1] != self.config.text_dim:
            raise ValueError(f"text must be (N, L, {self.config.text_dim}) or (N, {self.config.text_dim}), got {tuple(text.shape)}")
        return self.text_embedder(text)

    def forward(self, x: Tensor, t: Tensor, text: Tensor) -> Tensor:
        """x: (N, C, S, S) with S = input_size; t: (N,); text: (N, [L,] text_dim).

        Returns (N, out_channels, S, S): eps, then (learn_sigma) the variance value.
        """
        s = self.config.input_size
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[2:] != (s, s):
            raise ValueError(f"x must be (N, {self.config.in_channels}, {s}, {s}), got {tuple(x.shape)}")
        h = self.x_embedder(x) + self.x_pos_embed  # (N, T, D)
        c = self.t_embedder(t)  # (N, D)
        context = self.embed_text(text.to(h.dtype))  # (N, L, D)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, c, context, use_reentrant=False)
            else:
                h = block(h, c, context)  # (N, T, D)
        h = self.final_layer(h, c)  # (N, T, p*p*C_out)
        return self.unpatchify(h)  # (N, C_out, S, S)
