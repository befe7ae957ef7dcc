"""Settings of a VideoPanda training run (stored as JSON beside every checkpoint).

Defaults follow VideoPanda (Xie et al. 2025) where it states them and say so; the rest are
named design choices (docs/videopanda.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Literal

from ...sampling.flow import WAN21_SHIFT, WAN21_TOKENS, shift_for_tokens
from .data import PAPER_MATRICES

__all__ = [
    "TrainConfig",
    "BASE_TRAINING",
    "COND_DROP",
    "TEXT_DROP",
    "NOISE_AUG_MAX",
    "NOISE_AUG_DEFAULT",
    "ADAPTER_FILE",
    "STATE_FILE",
    "CONFIG_FILE",
]

BASE_TRAINING = ("frozen", "lora", "self_attn", "full")
# VideoPanda §3.1: "randomly dropping the conditioning frames with a probability of 10%".
COND_DROP = 0.1
# Caption dropout for text CFG; the paper does not state it, 10% is the common choice (Ho & Salimans 2022 use 10-20%).
TEXT_DROP = 0.1
# Noise augmentation of the carried row: sigma ~ U(0, max) in training, a default for sampling.
# Design choice: VideoPanda App. A.3 (its values) is not public; small, as §3.1 says ("a small amount").
NOISE_AUG_MAX = 0.15
NOISE_AUG_DEFAULT = 0.05
ADAPTER_FILE = "videopanda_adapter.safetensors"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "train_config.json"



@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs besides the models and the data (stored with every checkpoint)."""

    steps: int = 10000
    matrices: tuple[tuple[int, int], ...] = PAPER_MATRICES
    view_size: int = 512  # VideoPanda: 512x512 views (§3.1)
    frame_stride: int = 1
    regime_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # §3.2: equal probability
    cond_drop: float = COND_DROP
    text_drop: float = TEXT_DROP
    noise_aug_max: float = NOISE_AUG_MAX
    shift: float = WAN21_SHIFT  # at shift_tokens; scaled by sqrt(tokens / shift_tokens) per matrix
    shift_tokens: int = WAN21_TOKENS
    shift_low: float | None = None  # interpolated shift at the data end (None: plain shift)
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1
    base_training: Literal["frozen", "lora", "self_attn", "full"] = "frozen"
    base_lora_rank: int = 32
    new_layers: Literal["full", "lora"] = "full"
    new_lora_rank: int = 64
    gradient_checkpointing: bool = False
    precision: Literal["bf16", "fp32"] = "bf16"
    save_every: int = 1000
    sample_every: int = 1000
    sample_steps: int = 25  # VideoPanda §4.2: 25 steps
    sample_cfg: float = 4.0  # §4.2: CFG 4 video-conditioned
    seed: int = 0

    def __post_init__(self):
        if self.base_training not in BASE_TRAINING:
            raise ValueError(f"base_training must be one of {BASE_TRAINING}, got {self.base_training!r}")
        if self.new_layers not in ("full", "lora"):
            raise ValueError(f"new_layers must be 'full' or 'lora', got {self.new_layers!r}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {self.precision!r}")
        if not self.matrices or any(len(m) != 2 or min(m) < 1 for m in self.matrices):
            raise ValueError(f"matrices must be (views, latent frames) pairs >= 1, got {self.matrices}")
        for name in ("cond_drop", "text_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.noise_aug_max < 1.0:
            raise ValueError(f"noise_aug_max must be in [0, 1), got {self.noise_aug_max}")
        if self.view_size % 16:
            raise ValueError(f"view_size must be a multiple of 16 (VAE 8 x patch 2), got {self.view_size}")
        for name in ("steps", "grad_accum", "save_every", "sample_every", "sample_steps", "frame_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "matrices", tuple(tuple(int(v) for v in m) for m in self.matrices))
        object.__setattr__(self, "regime_weights", tuple(float(w) for w in self.regime_weights))

    def to_json(self) -> str:
        d = asdict(self)
        d["matrices"] = [list(m) for m in self.matrices]
        return json.dumps(d, sort_keys=True, indent=1)

    @staticmethod
    def from_json(text: str) -> "TrainConfig":
        d = json.loads(text)
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config fields {unknown}")
        d["matrices"] = tuple(tuple(m) for m in d.get("matrices", PAPER_MATRICES))
        if "regime_weights" in d:
            d["regime_weights"] = tuple(d["regime_weights"])
        return TrainConfig(**d)

    def shift_at(self, tokens: int) -> float:
        return shift_for_tokens(self.shift, tokens, self.shift_tokens)
