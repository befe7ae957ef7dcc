"""Flux (Black Forest Labs) and the XLabs Flux ControlNet as trainable ``nn.Module``s.

For training VideoFrom3D's distribution-alignment LoRAs outside ComfyUI
(``python -m pano360 train-videofrom3d-lora``).  Module names are the checkpoint keys of
``flux1-dev.safetensors`` (BFL layout, which ComfyUI's Flux also uses) and of XLabs'
``flux-hed-controlnet-v3.safetensors``, so both files load strictly.  The forward passes follow
x-flux (``src/flux/model.py``, ``controlnet.py``, ``modules/layers.py``, ``math.py`` as vendored
by VideoFrom3D): sequences in, the image tokens' velocity out; the ControlNet returns one residual
per ControlNet block, added to Flux's double block ``i`` as residual ``i % len(residuals)``.

Shapes: ``img (B, L, 64)`` patchified latents (2×2 patches of 16 channels), ``img_ids (B, L, 3)``,
``txt (B, S, 4096)`` T5 tokens, ``txt_ids (B, S, 3)``, ``timesteps (B,)`` in [0, 1] (1 = noise),
``y (B, 768)`` CLIP pooled, ``guidance (B,)``, ``control (B, 3, 8h, 8w)`` in [-1, 1].

Gradient checkpointing is a flag (off by default); the frozen/trainable split is the trainer's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "FluxParams",
    "FLUX_DEV",
    "XLABS_CONTROLNET_DEPTH",
    "Flux",
    "XLabsControlNet",
    "flux_params_from_state_dict",
    "controlnet_depth_from_state_dict",
    "strip_prefix",
    "patchify",
    "unpatchify",
    "image_ids",
]


@dataclass(frozen=True)
class FluxParams:
    """x-flux ``FluxParams``.  axes_dim: rotary dims of the (index, row, column) position axes,
    summing to the head dim."""

    in_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: tuple[int, ...] = (16, 56, 56)
    theta: int = 10_000
    qkv_bias: bool = True
    guidance_embed: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"FluxParams: hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if sum(self.axes_dim) != self.hidden_size // self.num_heads:
            raise ValueError(f"FluxParams: axes_dim {self.axes_dim} must sum to the head dim "
                             f"{self.hidden_size // self.num_heads}")

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


FLUX_DEV = FluxParams()  # x-flux src/flux/util.py configs["flux-dev"]
XLABS_CONTROLNET_DEPTH = 2  # x-flux util.load_controlnet: ControlNetFlux(params, controlnet_depth=2)
# Flux's head dim (3072 / 24); the rotary axes split it 16 / 56 / 56.
FLUX_HEAD_DIM = 128
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


def strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Flux state dict without the ``model.diffusion_model.`` / ``diffusion_model.`` prefix that
    full ComfyUI checkpoints carry (keys without it are returned as they are)."""
    for p in _PREFIXES:
        if any(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    return sd


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd for m in [rx.match(k)] if m}
    return max(found) + 1 if found else 0


def flux_params_from_state_dict(sd: dict[str, Tensor], axes_dim: tuple[int, ...] | None = None) -> FluxParams:
    """The sizes of a BFL-layout Flux state dict (from tensor shapes).  The head dim is the
    length of the q-norm gain; ``axes_dim`` defaults to Flux's 16/56/56 split (head dim 128, as
    ComfyUI's detection assumes too)."""
    try:
        hidden, in_channels = sd["img_in.weight"].shape
        head_dim = sd["double_blocks.0.img_attn.norm.query_norm.scale"].shape[0]
        mlp_hidden = sd["double_blocks.0.img_mlp.0.weight"].shape[0]
        vec_in = sd["vector_in.in_layer.weight"].shape[1]
        context_in = sd["txt_in.weight"].shape[1]
    except KeyError as err:
        raise ValueError(f"not a Flux (BFL layout) state dict: no {err.args[0]!r}") from None
    if axes_dim is None:
        if head_dim != FLUX_HEAD_DIM:
            raise ValueError(f"head dim {head_dim}: Flux's rotary split {FLUX_DEV.axes_dim} needs {FLUX_HEAD_DIM}; "
                             "give axes_dim for other sizes")
        axes_dim = FLUX_DEV.axes_dim
    return FluxParams(
        in_channels=int(in_channels), vec_in_dim=int(vec_in), context_in_dim=int(context_in), hidden_size=int(hidden),
        mlp_ratio=mlp_hidden / hidden, num_heads=int(hidden // head_dim), depth=_count(sd, r"^double_blocks\.(\d+)\."),
        depth_single_blocks=_count(sd, r"^single_blocks\.(\d+)\."), axes_dim=tuple(axes_dim),
        qkv_bias="double_blocks.0.img_attn.qkv.bias" in sd, guidance_embed="guidance_in.in_layer.weight" in sd,
    )


def controlnet_depth_from_state_dict(sd: dict[str, Tensor]) -> int:
    depth = _count(sd, r"^controlnet_blocks\.(\d+)\.")
    if depth == 0 or "input_hint_block.0.weight" not in sd:
        raise ValueError("not an XLabs Flux ControlNet state dict (no input_hint_block / controlnet_blocks)")
    return depth


# ------------------------------------------------------------------------- tokens and positions


def patchify(latent: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, H/2 · W/2, 4C)``: x-flux's ``b c (h ph) (w pw) -> b (h w) (c ph pw)``."""
    b, c, h, w = latent.shape
    x = latent.reshape(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpatchify(tokens: Tensor, h: int, w: int) -> Tensor:
    """Inverse of :func:`patchify` for an ``h × w`` latent."""
    b, _, d = tokens.shape
    c = d // 4
    x = tokens.reshape(b, h // 2, w // 2, c, 2, 2)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def image_ids(batch: int, h: int, w: int, device=None, dtype=torch.float32) -> Tensor:
    """x-flux ``prepare``'s positions of an ``h × w`` latent: ``(B, h/2 · w/2, 3)`` = (0, row, column)."""
    ids = torch.zeros(h // 2, w // 2, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(h // 2, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w // 2, device=device, dtype=dtype)[None, :]
    return ids.reshape(1, -1, 3).expand(batch, -1, -1)


def _rope(pos: Tensor, dim: int, theta: int) -> Tensor:
    """``(..., n) -> (..., n, dim/2, 2, 2)`` rotation matrices (x-flux ``math.rope``, float64 angles)."""
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / (theta ** scale)
    out = torch.einsum("...n,d->...nd", pos.to(torch.float64), omega)
    out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
    return out.reshape(*out.shape[:-1], 2, 2).float()


def _apply_rope(x: Tensor, pe: Tensor) -> Tensor:
    x_ = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = pe[..., 0] * x_[..., 0] + pe[..., 1] * x_[..., 1]
    return out.reshape(*x.shape).type_as(x)


def _attention(q: Tensor, k: Tensor, v: Tensor, pe: Tensor) -> Tensor:
    """``(B, H, L, D)`` each -> ``(B, L, H·D)`` with rotary positions."""
    q, k = _apply_rope(q, pe), _apply_rope(k, pe)
    x = nn.functional.scaled_dot_product_attention(q, k, v)
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0, time_factor: float = 1000.0) -> Tensor:
    """x-flux ``timestep_embedding``: cos/sin of ``1000 t`` at geometric frequencies."""
    t = time_factor * t
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return emb.to(t) if torch.is_floating_point(t) else emb


# ---------------------------------------------------------------------------------- layers


class EmbedND(nn.Module):
    def __init__(self, theta: int, axes_dim: tuple[int, ...]):
        super().__init__()
        self.theta, self.axes_dim = theta, tuple(axes_dim)

    def forward(self, ids: Tensor) -> Tensor:
        """``(B, L, n_axes) -> (B, 1, L, head_dim/2, 2, 2)``."""
        emb = torch.cat([_rope(ids[..., i], d, self.theta) for i, d in enumerate(self.axes_dim)], dim=-3)
        return emb.unsqueeze(1)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim, bias=True)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden_dim, hidden_dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(self.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        rrms = torch.rsqrt(torch.mean(x.float() ** 2, dim=-1, keepdim=True) + 1e-6)
        return (x.float() * rrms).to(x.dtype) * self.scale


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class SelfAttention(nn.Module):
    """Holds the weights (``qkv``, ``norm``, ``proj``); the blocks run the attention."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)


class Modulation(nn.Module):
    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim, bias=True)

    def forward(self, vec: Tensor) -> list[Tensor]:
        """shift, scale, gate (, shift2, scale2, gate2), each ``(B, 1, dim)``."""
        return list(self.lin(nn.functional.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1))


def _heads(qkv: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(B, L, 3·H·D) -> 3 × (B, H, L, D)`` (x-flux ``B L (K H D) -> K B H L D``)."""
    b, n, _ = qkv.shape
    x = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return x[0], x[1], x[2]


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.num_heads = num_heads
        self.img_mod = Modulation(hidden_size, double=True)
        self.img_norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.img_attn = SelfAttention(hidden_size, num_heads, qkv_bias)
        self.img_norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.img_mlp = nn.Sequential(nn.Linear(hidden_size, mlp_hidden, bias=True), nn.GELU(approximate="tanh"),
                                     nn.Linear(mlp_hidden, hidden_size, bias=True))
        self.txt_mod = Modulation(hidden_size, double=True)
        self.txt_norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_attn = SelfAttention(hidden_size, num_heads, qkv_bias)
        self.txt_norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = nn.Sequential(nn.Linear(hidden_size, mlp_hidden, bias=True), nn.GELU(approximate="tanh"),
                                     nn.Linear(mlp_hidden, hidden_size, bias=True))

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor, pe: Tensor) -> tuple[Tensor, Tensor]:
        i_shift, i_scale, i_gate, i_shift2, i_scale2, i_gate2 = self.img_mod(vec)
        t_shift, t_scale, t_gate, t_shift2, t_scale2, t_gate2 = self.txt_mod(vec)
        img_q, img_k, img_v = _heads(self.img_attn.qkv((1 + i_scale) * self.img_norm1(img) + i_shift), self.num_heads)
        img_q, img_k = self.img_attn.norm(img_q, img_k, img_v)
        txt_q, txt_k, txt_v = _heads(self.txt_attn.qkv((1 + t_scale) * self.txt_norm1(txt) + t_shift), self.num_heads)
        txt_q, txt_k = self.txt_attn.norm(txt_q, txt_k, txt_v)
        attn = _attention(torch.cat((txt_q, img_q), 2), torch.cat((txt_k, img_k), 2), torch.cat((txt_v, img_v), 2), pe)
        txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1]:]
        img = img + i_gate * self.img_attn.proj(img_attn)
        img = img + i_gate2 * self.img_mlp((1 + i_scale2) * self.img_norm2(img) + i_shift2)
        txt = txt + t_gate * self.txt_attn.proj(txt_attn)
        txt = txt + t_gate2 * self.txt_mlp((1 + t_scale2) * self.txt_norm2(txt) + t_shift2)
        return img, txt


class SingleStreamBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.mlp_hidden = int(hidden_size * mlp_ratio)
        self.linear1 = nn.Linear(hidden_size, hidden_size * 3 + self.mlp_hidden)
        self.linear2 = nn.Linear(hidden_size + self.mlp_hidden, hidden_size)
        self.norm = QKNorm(hidden_size // num_heads)
        self.pre_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden_size, double=False)

    def forward(self, x: Tensor, vec: Tensor, pe: Tensor) -> Tensor:
        shift, scale, gate = self.modulation(vec)
        qkv, mlp = torch.split(self.linear1((1 + scale) * self.pre_norm(x) + shift),
                               [3 * self.hidden_size, self.mlp_hidden], dim=-1)
        q, k, v = _heads(qkv, self.num_heads)
        q, k = self.norm(q, k, v)
        out = self.linear2(torch.cat((_attention(q, k, v, pe), self.mlp_act(mlp)), 2))
        return x + gate * out


class LastLayer(nn.Module):
    def __init__(self, hidden_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        return self.linear((1 + scale[:, None, :]) * self.norm_final(x) + shift[:, None, :])


class _Embedders(nn.Module):
    """The input layers Flux and the ControlNet share (names are checkpoint keys of both)."""

    def __init__(self, p: FluxParams):
        super().__init__()
        self.params = p
        self.pe_embedder = EmbedND(p.theta, p.axes_dim)
        self.img_in = nn.Linear(p.in_channels, p.hidden_size, bias=True)
        self.time_in = MLPEmbedder(256, p.hidden_size)
        self.vector_in = MLPEmbedder(p.vec_in_dim, p.hidden_size)
        self.guidance_in = MLPEmbedder(256, p.hidden_size) if p.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(p.context_in_dim, p.hidden_size)
        self.gradient_checkpointing = False

    def _vec(self, timesteps: Tensor, y: Tensor, guidance: Tensor | None) -> Tensor:
        """Time, guidance and pooled-text embedding ``(B, hidden)``; the sinusoids are computed from
        the given (float32) values and cast to the weights' dtype."""
        dt = self.img_in.weight.dtype
        vec = self.time_in(_timestep_embedding(timesteps.float(), 256).to(dt))
        if self.params.guidance_embed:
            if guidance is None:
                raise ValueError("Flux-dev needs a guidance value (guidance-distilled model)")
            vec = vec + self.guidance_in(_timestep_embedding(guidance.float(), 256).to(dt))
        return vec + self.vector_in(y.to(dt))

    def _block(self, block: nn.Module, *args):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)


class Flux(_Embedders):
    """The Flux transformer (BFL checkpoint keys).  ``forward`` returns ``(B, L, in_channels)``."""

    def __init__(self, params: FluxParams = FLUX_DEV):
        super().__init__(params)
        p = params
        self.double_blocks = nn.ModuleList(
            [DoubleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, p.qkv_bias) for _ in range(p.depth)])
        self.single_blocks = nn.ModuleList(
            [SingleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio) for _ in range(p.depth_single_blocks)])
        self.final_layer = LastLayer(p.hidden_size, p.in_channels)

    def forward(self, img: Tensor, img_ids: Tensor, txt: Tensor, txt_ids: Tensor, timesteps: Tensor, y: Tensor,
                guidance: Tensor | None = None, controls: tuple[Tensor, ...] | None = None) -> Tensor:
        img = self.img_in(img)
        vec = self._vec(timesteps, y, guidance)
        txt = self.txt_in(txt)
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        for i, block in enumerate(self.double_blocks):
            img, txt = self._block(block, img, txt, vec, pe)
            if controls:
                img = img + controls[i % len(controls)]
        x = torch.cat((txt, img), 1)
        for block in self.single_blocks:
            x = self._block(block, x, vec, pe)
        return self.final_layer(x[:, txt.shape[1]:], vec)


def _hint_block() -> nn.Sequential:
    """x-flux ControlNet ``input_hint_block``: 3 -> 16 channels, three stride-2 convolutions (÷8)."""
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.SiLU()]
    for stride in (1, 2, 1, 2, 1, 2):
        layers += [nn.Conv2d(16, 16, 3, padding=1, stride=stride), nn.SiLU()]
    layers.append(nn.Conv2d(16, 16, 3, padding=1))
    return nn.Sequential(*layers)


class XLabsControlNet(_Embedders):
    """The XLabs Flux ControlNet (x-flux ``ControlNetFlux``; HED v3 has 2 double blocks).
    ``forward`` returns one ``(B, L, hidden)`` residual per block."""

    def __init__(self, params: FluxParams = FLUX_DEV, depth: int = XLABS_CONTROLNET_DEPTH):
        super().__init__(params)
        p = params
        self.double_blocks = nn.ModuleList(
            [DoubleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, p.qkv_bias) for _ in range(depth)])
        self.controlnet_blocks = nn.ModuleList([nn.Linear(p.hidden_size, p.hidden_size) for _ in range(depth)])
        self.pos_embed_input = nn.Linear(p.in_channels, p.hidden_size, bias=True)
        self.input_hint_block = _hint_block()

    def forward(self, img: Tensor, img_ids: Tensor, control: Tensor, txt: Tensor, txt_ids: Tensor,
                timesteps: Tensor, y: Tensor, guidance: Tensor | None = None) -> tuple[Tensor, ...]:
        img = self.img_in(img) + self.pos_embed_input(patchify(self.input_hint_block(control)))
        vec = self._vec(timesteps, y, guidance)
        txt = self.txt_in(txt)
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        out = []
        for block, head in zip(self.double_blocks, self.controlnet_blocks):
            img, txt = self._block(block, img, txt, vec, pe)
            out.append(head(img))
        return tuple(out)

