"""Gaussian diffusion (DDPM) with learned-range variance: tables, respacing and the loop.

The sampling math of OpenAI's ADM/IDDPM ``gaussian_diffusion.py`` and ``respace.py`` (which
fast-DiT and Look Beyond's ``PanoDiT/diffusion`` copy), for any eps/variance network:

- linear beta schedule, 1000 steps, every table computed once in float64 (Ho et al. 2020;
  Nichol & Dhariwal 2021 for the learned-range variance);
- respacing to fewer steps keeps a subset of timesteps and recomputes
  ``beta_i = 1 - abar_i / abar_prev_kept`` (ADM ``SpacedDiffusion``); the network is
  called with the *original* timestep;
- each step samples x_{t-1} with ``log var = (v+1)/2 log beta_t + (1-(v+1)/2) log var_posterior``.

Stage-specific behaviour (RePaint's known region, seam rolls) comes in as ``before``/``after``
callables of :func:`p_sample_loop`, so there is one loop.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .types import ProgressCallback, report

__all__ = [
    "NUM_TRAIN_TIMESTEPS",
    "EpsVarModel",
    "StepHook",
    "DiffusionSchedule",
    "linear_betas",
    "space_timesteps",
    "make_schedule",
    "p_sample_loop",
]

NUM_TRAIN_TIMESTEPS = 1000  # ADM / DiT: create_diffusion(timestep_respacing="")
LINEAR_BETA_START = 1e-4  # Ho et al. 2020, scaled by 1000 / T (ADM get_named_beta_schedule)
LINEAR_BETA_END = 0.02

EpsVarModel = Callable[[Tensor, Tensor], Tensor]
"""(x (N, C, S, S), t (N,) original timesteps, float) -> (N, 2C, S, S): eps, variance value."""


def linear_betas(num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Tensor:
    """ADM's "linear" schedule: ``linspace(1e-4, 0.02)`` scaled by ``1000/T``, float64 (T,)."""
    if num_timesteps < 2:
        raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
    scale = NUM_TRAIN_TIMESTEPS / num_timesteps
    return torch.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, num_timesteps, dtype=torch.float64)


def space_timesteps(num_timesteps: int, section_counts: int | Sequence[int]) -> list[int]:
    """Timesteps kept when respacing (ADM ``respace.space_timesteps``), ascending.

    The T steps are split into ``len(section_counts)`` equal sections (the first
    ``T % len`` one step longer); section k keeps ``section_counts[k]`` evenly strided
    steps, first and last included, positions rounded half-to-even like Python's round.
    """
    counts = [section_counts] if isinstance(section_counts, int) else list(section_counts)
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"section_counts must be positive, got {section_counts!r}")
    size_per, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for k, count in enumerate(counts):
        size = size_per + (1 if k < extra else 0)
        if size < count:
            raise ValueError(f"cannot take {count} steps from a section of {size} steps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


@dataclass(frozen=True, eq=False)
class DiffusionSchedule:
    """Gaussian diffusion tables for the kept steps, float64, index i = 0 (least noise) ..

    ``timesteps[i]`` is the original timestep the network sees at index i.
    """

    timesteps: Tensor  # (n,) int64, original timestep per index
    betas: Tensor  # (n,) respaced betas
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor  # multiplies x0
    posterior_mean_coef2: Tensor  # multiplies x_t

    @classmethod
    def from_betas(cls, betas: Tensor, timesteps: Tensor | None = None) -> "DiffusionSchedule":
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D tensor in (0, 1]")
        n = betas.shape[0]
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        # log clipped: the posterior variance is 0 at index 0, use index 1's value there.
        post_log = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if n > 1 else torch.log(betas)
        return cls(
            timesteps=torch.arange(n) if timesteps is None else timesteps.to(torch.int64),
            betas=betas,
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            posterior_variance=post_var,
            posterior_log_variance_clipped=post_log,
            posterior_mean_coef1=betas * abar_prev.sqrt() / (1.0 - abar),
            posterior_mean_coef2=(1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        )

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    def _at(self, table: Tensor, i: int, like: Tensor) -> Tensor:
        return table[i].to(device=like.device, dtype=like.dtype)

    def q_sample(self, x0: Tensor, i: int, noise: Tensor) -> Tensor:
        """Sample q(x_t | x0) at index i: ``sqrt(abar) x0 + sqrt(1 - abar) noise``."""
        abar = self.alphas_cumprod[i]
        return x0 * float(abar.sqrt()) + noise * float((1.0 - abar).sqrt())

    def predict_x0(self, x_t: Tensor, i: int, eps: Tensor) -> Tensor:
        abar = self.alphas_cumprod[i]
        return x_t * float((1.0 / abar).sqrt()) - eps * float((1.0 / abar - 1.0).sqrt())

    def q_posterior(self, x0: Tensor, x_t: Tensor, i: int) -> tuple[Tensor, float, float]:
        """Mean (x_t's shape), variance and clipped log variance of q(x_{t-1} | x_t, x0)."""
        mean = x0 * float(self.posterior_mean_coef1[i]) + x_t * float(self.posterior_mean_coef2[i])
        return mean, float(self.posterior_variance[i]), float(self.posterior_log_variance_clipped[i])

    def learned_range_log_variance(self, v: Tensor, i: int) -> Tensor:
        """Log variance interpolated between the posterior (v=-1) and beta_t (v=+1)."""
        frac = (v + 1.0) / 2.0
        max_log = float(torch.log(self.betas[i]))
        min_log = float(self.posterior_log_variance_clipped[i])
        return frac * max_log + (1.0 - frac) * min_log

    def p_mean_log_variance(self, model_out: Tensor, x_t: Tensor, i: int, clip_denoised: bool = False):
        """Split the network output (N, 2C, ...) into eps and v; return
        (mean of p(x_{t-1} | x_t), its log variance, predicted x0)."""
        c = x_t.shape[1]
        if model_out.shape[1] != 2 * c:
            raise ValueError(f"model output must have {2 * c} channels (eps, variance), got {model_out.shape[1]}")
        eps, v = model_out[:, :c], model_out[:, c:]
        x0 = self.predict_x0(x_t, i, eps)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(x0, x_t, i)
        return mean, self.learned_range_log_variance(v, i), x0


def make_schedule(steps: int | Sequence[int] = NUM_TRAIN_TIMESTEPS, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> DiffusionSchedule:
    """The linear schedule respaced to ``steps`` (an int, or ADM section counts)."""
    base = DiffusionSchedule.from_betas(linear_betas(num_train_timesteps))
    kept = space_timesteps(num_train_timesteps, steps)
    abar = base.alphas_cumprod[kept]
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return DiffusionSchedule.from_betas(1.0 - abar / prev, torch.tensor(kept))


# (x, loop position k (0 = noisiest), schedule index i) -> x; runs before/after a step
StepHook = Callable[[Tensor, int, int], Tensor]


def p_sample_loop(
    model: EpsVarModel,
    x: Tensor,
    schedule: DiffusionSchedule,
    *,
    noise: Callable[[], Tensor],
    before: StepHook | None = None,
    after: StepHook | None = None,
    clip_denoised: bool = False,
    callback: ProgressCallback | None = None,
) -> Tensor:
    """Ancestral sampling from ``x`` = x_T down to x_0 (ADM ``p_sample_loop_progressive``).

    model: ``(x, t) -> (N, 2C, ...)`` eps and variance value at the original timestep ``t``.
    noise(): a fresh standard-normal tensor of ``x``'s shape; called once per step, after
    ``before`` (which may draw its own), so a caller reproduces a reference's draw order.
    before/after(x, k, i): stage hooks around each step (RePaint, seam rolls).
    callback(done, total) after each step.
    """
    n = x.shape[0]
    steps = schedule.num_steps
    for k, i in enumerate(range(steps - 1, -1, -1)):
        if before is not None:
            x = before(x, k, i)
        t = torch.full((n,), float(schedule.timesteps[i]), device=x.device)
        out = model(x, t).float()
        mean, log_var, _ = schedule.p_mean_log_variance(out, x, i, clip_denoised)
        z = noise()
        x = mean + (torch.exp(0.5 * log_var) * z if i > 0 else 0.0)
        if after is not None:
            x = after(x, k, i)
        report(callback, k + 1, steps)
    return x
