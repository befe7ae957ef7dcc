"""Look Beyond's camera-pose conditioning for SVD keyframe inbetweening.

Look Beyond (Kang et al., ACM MM 2025; ``YiGuYT/LookBeyond`` ``VideoDiffusion/``) conditions its
SVD UNet on the camera path by adding a pose embedding to the image-condition latent:

    Plücker rays [B, 6, T, H, W] (image resolution, OpenCV axes, ``dataset/realestate10K.py``)
      -> PixelUnshuffle(8) -> 3x3 conv 384 -> 320
      -> 2 x (ResNet block: 3x3 conv, ReLU, 1x1 conv, skip; then a temporal transformer block:
              sinusoidal frame encoding, 8-head self-attention over frames, GEGLU feed-forward)
      -> [B*T, 320, H/8, W/8]                                  (``camctrl/pose_adaptor.py``)
      -> channel_reducer: 1x1 conv 320 -> 4                    (``model_1_state_dict.pth``)
    image latent (VAE mode, unscaled, repeated over frames) + pose embedding
      -> linear_fuser: Linear(4, 4) over channels              (``model_3_state_dict.pth``)
      -> concatenated with the noisy latent as SVD's usual 8-channel UNet input.

The pose encoder is ``model_2_state_dict.pth``.  Module names here are the official ones, so
the official state dicts load unchanged (``tests/data/lookbeyond_pose_keys.json`` holds the
official tables, built on the meta device from the official code).  The official constructor
loops over ``channels[:len(channels) - 3]``: with ``camctrl/config.yaml``'s four channel
widths that is one level, ``channels[0] = 320``, which is the only width this port keeps.

:meth:`LookBeyondPoseConditioner.zero_initialised` gives the "no weights loaded" conditioner:
a zero reducer and an identity fuser, so the image latents pass through unchanged.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PoseEncoderConfig",
    "CameraPoseEncoder",
    "LookBeyondPoseConditioner",
    "POSE_CHECKPOINT_FILES",
    "detect_pose_config",
    "strip_module_prefix",
    "load_pose_conditioner",
]

# The three files videogen.py --checkpoint_dir reads next to unet/ (train.py saves them with
# accelerator.save_state in the order the modules were prepared).
POSE_CHECKPOINT_FILES = {
    "channel_reducer": "model_1_state_dict.pth",
    "pose_encoder": "model_2_state_dict.pth",
    "linear_fuser": "model_3_state_dict.pth",
}
# Multi-GPU training wraps modules in DistributedDataParallel, whose state dicts carry this.
DDP_PREFIX = "module."
# camctrl/motion_module.py PositionalEncoding: the classic Transformer frequency base.
POSITION_BASE = 10000.0
# diffusers FeedForward(activation_fn="geglu"): inner width = 4 x dim (mult=4).
FF_MULT = 4


@dataclass(frozen=True)
class PoseEncoderConfig:
    """Look Beyond's ``camctrl/config.yaml`` ``pose_encoder_kwargs`` (the defaults of
    ``CameraPoseEncoder``), reduced to what the built network depends on."""

    downscale: int = 8  # downscale_factor: PixelUnshuffle, = the SVD VAE's factor
    ray_channels: int = 6  # Plücker (o x d, d); cin = 6 * 8 * 8 = 384
    channels: int = 320  # channels[0]
    num_res_blocks: int = 2  # nums_rb
    heads: int = 8  # temporal_attention_nhead
    max_frames: int = 16  # temporal_position_encoding_max_len
    latent_channels: int = 4  # channel_reducer output = SVD VAE latent channels

    def __post_init__(self) -> None:
        for name in ("downscale", "ray_channels", "channels", "num_res_blocks", "heads", "max_frames", "latent_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PoseEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.channels % self.heads:
            raise ValueError(f"PoseEncoderConfig: channels {self.channels} not divisible by heads {self.heads}")

    @property
    def in_channels(self) -> int:
        """Channels after PixelUnshuffle (``cin``, 384)."""
        return self.ray_channels * self.downscale**2


# ---------------------------------------------------------------- building blocks


class ResnetBlock(nn.Module):
    """``camctrl/pose_adaptor.py`` ``ResnetBlock`` with in_c == out_c, ``sk=True``, ``down=False``
    (the only form the released config builds): ``x + block2(relu(block1(x)))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.block1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(channels, channels, 1, 1, 0)  # ksize = 1

    def forward(self, x: Tensor) -> Tensor:  # (N, C, h, w)
        return x + self.block2(self.act(self.block1(x)))


class PositionalEncoding(nn.Module):
    """Sinusoidal frame encoding ``pe (1, max_len, d)``: sin on even, cos on odd channels
    (``camctrl/motion_module.py``).  A persistent buffer, as in the official state dict."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(POSITION_BASE) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x: Tensor) -> Tensor:  # (N, T, d)
        frames = x.shape[1]
        if frames > self.pe.shape[1]:
            raise ValueError(f"pose encoder: {frames} frames, but its frame encoding covers at most "
                             f"{self.pe.shape[1]} (temporal_position_encoding_max_len)")
        return x + self.pe[:, :frames].to(x.dtype)


class TemporalSelfAttention(nn.Module):
    """diffusers ``Attention`` as ``camctrl/motion_module.py`` ``TemporalSelfAttention`` uses it:
    frame encoding added to the input, then multi-head self-attention over frames, no q/k/v bias."""

    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: Tensor) -> Tensor:  # (N, T, d) -> (N, T, d)
        x = self.pos_encoder(x)
        n, t, d = x.shape

        def split(y: Tensor) -> Tensor:  # (N, T, d) -> (N, heads, T, d / heads)
            return y.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x)))
        out = out.transpose(1, 2).reshape(n, t, d)
        for layer in self.to_out:
            out = layer(out)
        return out


class GEGLU(nn.Module):
    """diffusers ``GEGLU``: ``a * gelu(b)`` with ``a, b = proj(x).chunk(2)``."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: Tensor) -> Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    """diffusers ``FeedForward(dim, activation_fn="geglu")``: ``net = [GEGLU, Dropout, Linear]``."""

    def __init__(self, dim: int):
        super().__init__()
        inner = FF_MULT * dim
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TemporalTransformerBlock(nn.Module):
    """``camctrl/motion_module.py`` ``TemporalTransformerBlock`` with one ``Temporal_Self`` block:
    ``x + attn(norm(x))``, then ``x + ff(ff_norm(x))``."""

    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalSelfAttention(dim, heads, max_len)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:  # (N, T, d)
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


# ---------------------------------------------------------------- the encoder


class CameraPoseEncoder(nn.Module):
    """``camctrl/pose_adaptor.py`` ``CameraPoseEncoder`` (one level, see the module docstring)."""

    def __init__(self, config: PoseEncoderConfig = PoseEncoderConfig()):
        super().__init__()
        self.config = config
        c = config.channels
        self.unshuffle = nn.PixelUnshuffle(config.downscale)
        self.encoder_down_conv_blocks = nn.ModuleList(
            [nn.ModuleList([ResnetBlock(c) for _ in range(config.num_res_blocks)])])
        self.encoder_down_attention_blocks = nn.ModuleList(
            [nn.ModuleList([TemporalTransformerBlock(c, config.heads, config.max_frames)
                            for _ in range(config.num_res_blocks)])])
        self.encoder_conv_in = nn.Conv2d(config.in_channels, c, 3, 1, 1)

    def forward(self, rays: Tensor) -> Tensor:
        """rays: ``(B, 6, T, H, W)`` Plücker rays (official layout ``b c f h w``), H and W
        multiples of ``downscale``.  Returns ``(B*T, channels, H/8, W/8)``, frame-major per video."""
        b, c, t, h, w = rays.shape
        if h % self.config.downscale or w % self.config.downscale:
            raise ValueError(f"pose encoder: ray map {h}x{w} is not a multiple of {self.config.downscale}")
        x = rays.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # b c f h w -> (b f) c h w
        x = self.encoder_conv_in(self.unshuffle(x))
        for res_blocks, attention_blocks in zip(self.encoder_down_conv_blocks, self.encoder_down_attention_blocks):
            for res, attention in zip(res_blocks, attention_blocks):
                x = res(x)
                n, ch, hh, ww = x.shape  # (b f) c h w -> (b h w) f c
                y = x.reshape(b, t, ch, hh * ww).permute(0, 3, 1, 2).reshape(b * hh * ww, t, ch)
                y = attention(y)
                x = y.reshape(b, hh * ww, t, ch).permute(0, 2, 3, 1).reshape(n, ch, hh, ww)
        return x


class LookBeyondPoseConditioner(nn.Module):
    """Pose encoder + channel reducer + linear fuser: the whole ray-map path of ``videogen.py``."""

    def __init__(self, config: PoseEncoderConfig = PoseEncoderConfig()):
        super().__init__()
        self.config = config
        self.pose_encoder = CameraPoseEncoder(config)
        self.channel_reducer = nn.Conv2d(config.channels, config.latent_channels, kernel_size=1)
        self.linear_fuser = nn.Linear(config.latent_channels, config.latent_channels)

    @classmethod
    def zero_initialised(cls, config: PoseEncoderConfig = PoseEncoderConfig()) -> "LookBeyondPoseConditioner":
        """A conditioner with no trained weights: the reducer outputs zeros and the fuser is
        the identity, so :meth:`fuse` returns the image latents unchanged."""
        module = cls(config)
        with torch.no_grad():
            module.channel_reducer.weight.zero_()
            module.channel_reducer.bias.zero_()
            module.linear_fuser.weight.copy_(torch.eye(config.latent_channels))
            module.linear_fuser.bias.zero_()
        return module

    def embed(self, rays: Tensor) -> Tensor:
        """rays: ``(T, 6, H, W)`` Plücker rays of one camera path.  Returns the pose embedding
        ``(T, latent_channels, H/8, W/8)`` (videogen.py ``pose_embeddings`` without its batch axis)."""
        if rays.ndim != 4 or rays.shape[1] != self.config.ray_channels:
            raise ValueError(f"rays: expected (T, {self.config.ray_channels}, H, W), got {tuple(rays.shape)}")
        features = self.pose_encoder(rays.movedim(0, 1)[None])  # (1, 6, T, H, W)
        return self.channel_reducer(features)

    def fuse(self, image_latents: Tensor, embedding: Tensor) -> Tensor:
        """``linear_fuser(image_latents + embedding)`` over the channel axis.

        image_latents: ``(..., T, 4, h, w)`` or broadcastable (e.g. ``(1, 4, h, w)`` for one
        repeated frame, or zeros for the unconditional branch); embedding: ``(T, 4, h, w)``.
        Returns ``(..., T, 4, h, w)``.
        """
        x = (image_latents + embedding).movedim(-3, -1)  # channels last for the Linear
        return self.linear_fuser(x).movedim(-1, -3)


# ---------------------------------------------------------------- loading


def strip_module_prefix(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove DistributedDataParallel's ``module.`` prefix when every key has it."""
    if sd and all(k.startswith(DDP_PREFIX) for k in sd):
        return {k[len(DDP_PREFIX):]: v for k, v in sd.items()}
    return dict(sd)


def detect_pose_config(encoder_sd: Mapping[str, Tensor]) -> PoseEncoderConfig:
    """Read the sizes from the pose encoder's tensor shapes; heads cannot be read from
    shapes and keep the official 8.  ValueError names what is missing."""
    conv = encoder_sd.get("encoder_conv_in.weight")
    if conv is None or conv.ndim != 4:
        raise ValueError("pose encoder: no encoder_conv_in.weight (not a Look Beyond CameraPoseEncoder state dict)")
    channels, cin = int(conv.shape[0]), int(conv.shape[1])
    base = PoseEncoderConfig()
    if cin != base.ray_channels * base.downscale**2:
        raise ValueError(f"pose encoder: encoder_conv_in takes {cin} channels, expected "
                         f"{base.ray_channels} x {base.downscale}^2 = {base.in_channels}")
    blocks = {k.split(".")[2] for k in encoder_sd if k.startswith("encoder_down_conv_blocks.0.")}
    pe = encoder_sd.get("encoder_down_attention_blocks.0.0.attention_blocks.0.pos_encoder.pe")
    max_frames = int(pe.shape[1]) if pe is not None else base.max_frames
    return replace(base, channels=channels, num_res_blocks=max(1, len(blocks)), max_frames=max_frames)


def load_pose_conditioner(parts: Mapping[str, Mapping[str, Tensor]], source: str = "pose checkpoint",
                          heads: int | None = None) -> LookBeyondPoseConditioner:
    """Build a conditioner from the three official state dicts.

    parts: ``{"pose_encoder": sd, "channel_reducer": sd, "linear_fuser": sd}`` (any ``module.``
    prefix is stripped).  Strict: a missing or unexpected key is a ValueError naming the part,
    the keys and ``source``; nothing is half-loaded.
    """
    missing_parts = [p for p in POSE_CHECKPOINT_FILES if p not in parts]
    if missing_parts:
        raise ValueError(f"{source}: missing {', '.join(missing_parts)} "
                         f"(expected {', '.join(POSE_CHECKPOINT_FILES.values())})")
    sds = {name: strip_module_prefix(parts[name]) for name in POSE_CHECKPOINT_FILES}
    config = detect_pose_config(sds["pose_encoder"])
    if heads is not None:
        config = replace(config, heads=int(heads))
    module = LookBeyondPoseConditioner(config)
    for name, sd in sds.items():
        target = getattr(module, name)
        expected = set(target.state_dict())
        missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing or unexpected:
            raise ValueError(f"{source}: {name} ({POSE_CHECKPOINT_FILES[name]}) does not match Look Beyond's "
                             f"module: missing {missing[:10]}, unexpected {unexpected[:10]}")
        wrong = [k for k, v in target.state_dict().items() if tuple(sd[k].shape) != tuple(v.shape)]
        if wrong:
            raise ValueError(f"{source}: {name}: wrong shapes for {wrong[:10]}")
        target.load_state_dict(sd, strict=True)
    return module.eval()
