"""Training VideoPanda's adapter on a Wan 2.1 transformer (diffusers), one GPU or a tiny CPU run.

The loop (VideoPanda §3.2, on Wan; docs/videopanda.md):

1. a random matrix from :mod:`.data` (views × latent frames, regime, column), encoded by the
   VAE into the sampler's latent space;
2. one sigma per matrix from the shifted flow schedule (:mod:`...sampling.flow`),
   the shift scaled to the matrix's token count; target cells noised to it; given cells
   clean (the video column) or noise-augmented (the autoregressive row); the conditioning
   dropped with ``cond_drop`` and the caption with ``text_drop`` (CFG);
3. the flow-velocity loss ``|v - (eps - x0)|^2`` over the target cells;
4. AdamW on the trainable parameters (:class:`Trainable`); checkpoints every
   ``save_every`` steps (adapter file + resumable state), preview grids every
   ``sample_every`` steps.

Models come in as objects (a diffusers ``WanTransformer3DModel``, an encode callable, a text
callable), so the same loop runs the real 1.3B model on a GPU and tiny random ones in tests.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ...media.atomic import write_json
from ...media.images import save_png, to_uint8
from ...sampling.flow import flow_sigmas, noised, sample_sigmas, velocity_target
from ...sampling.types import ProgressCallback, report
from .adapter import AdapterCall, conditioning
from .adapter_sampler import sample_grid_with_adapter
from .batches import Batch, MatrixSource
from .checkpoint import resume, save_checkpoint
from .train_config import ADAPTER_FILE, CONFIG_FILE, TrainConfig
from .trainable import Trainable

log = logging.getLogger("pano360.videopanda.train")

__all__ = ["training_loss", "preview", "train", "TrainResult", "Decode"]

Decode = Callable[[Tensor], Tensor]  # sampler latents (V, C, T, h, w) -> (V, 3, N, H, W) in [-1, 1]


def training_loss(model: Trainable, batch: Batch, *, generator: torch.Generator, device: torch.device | str,
                  sigma: float | None = None) -> Tensor:
    """The flow-velocity loss of one matrix over its target cells (given cells excluded).

    sigma: force the noise level (evaluation); otherwise drawn from the shifted schedule at
    this matrix's token count.
    """
    x0 = batch.latents.to(device)
    v, c, t, h, w = x0.shape
    pt, ph, pw = model.adapter.config.patch_size
    tokens = v * (t // pt) * (h // ph) * (w // pw)
    if sigma is None:
        s = sample_sigmas(1, model.config.shift_at(tokens), model.config.shift_low, generator=generator)
    else:
        s = torch.tensor([sigma])
    eps = torch.randn(x0.shape, generator=generator).to(device)
    aug = torch.randn(x0.shape, generator=generator).to(device)
    keep = batch.mask.to(device).reshape(v, 1, t, 1, 1)
    csig = batch.cell_sigma.to(device).reshape(v, 1, t, 1, 1)
    x_t = noised(x0, eps, s.to(device).expand(v))
    x_in = torch.lerp(x_t, (1 - csig) * x0 + csig * aug, keep)
    cond = conditioning(batch.rays.to(device), batch.mask.to(device), batch.cell_sigma.to(device))
    timestep = (s * 1000.0).to(device).expand(v)
    pred = model.velocity(torch.cat([x_in, cond], 1), timestep, batch.text.to(device).expand(v, -1, -1), v)
    err = (pred - velocity_target(x0, eps)).square() * (1 - keep)
    cells = (1 - keep).sum() * c * h * w
    if cells == 0:  # every cell given (not a paper regime): nothing to learn from this matrix
        return err.sum() * 0.0
    return err.sum() / cells


def preview(model: Trainable, batch: Batch, config: TrainConfig, *, device, null_text: Tensor,
            decode: Decode | None) -> Tensor:
    """Sample ``batch``'s matrix with its mask (given cells from its latents) and return a
    ``(3, V*h, 2*N*w)`` image in [0, 1]: generated views left, the data right (rows =
    views, columns = frames; latents shown as their first 3 channels without a decoder)."""
    v, c, t, h, w = batch.latents.shape
    call = AdapterCall(views=v, cond=conditioning(batch.rays, batch.mask, batch.cell_sigma),
                       null_cond=conditioning(batch.rays, torch.zeros_like(batch.mask), torch.zeros_like(batch.cell_sigma)),
                       given=batch.latents.to(device) if bool(batch.mask.any()) else None,
                       keep=batch.mask.reshape(v, 1, t, 1, 1).to(device),
                       sigma=batch.cell_sigma.reshape(v, 1, t, 1, 1).to(device),
                       noise=None, patch_t=model.adapter.config.patch_size[0])
    g = torch.Generator().manual_seed(config.seed)
    noise = torch.randn(batch.latents.shape, generator=g).to(device)
    call = replace(call, noise=torch.randn(batch.latents.shape, generator=g).to(device))
    pt, ph, pw = model.adapter.config.patch_size
    sigmas = flow_sigmas(config.sample_steps, config.shift_at(v * (t // pt) * (h // ph) * (w // pw)), config.shift_low)
    with torch.no_grad():
        out = sample_grid_with_adapter(lambda x, ts, txt: model.velocity(x, ts, txt, v), call, noise, sigmas,
                                       text=batch.text.to(device), null_text=null_text.to(device), cfg=config.sample_cfg)
        pair = torch.cat([out, batch.latents.to(device)])
        pixels = decode(pair) if decode is not None else pair[:, :3]
    pixels = ((pixels.float().cpu() + 1) / 2).clamp(0, 1)  # (2V, 3, N, H, W)
    gen, ref = pixels[:v], pixels[v:]
    rows = [torch.cat([torch.cat(list(gen[i].unbind(1)), dim=-1), torch.cat(list(ref[i].unbind(1)), dim=-1)], dim=-1)
            for i in range(v)]
    return torch.cat(rows, dim=-2)


@dataclass(frozen=True)
class TrainResult:
    """The run's last step, the loss of every step run in this call, and the adapter file."""

    steps: int
    losses: tuple[float, ...]
    adapter_path: Path


def train(model: Trainable, source: MatrixSource, out: str | Path, *, device: torch.device | str = "cpu",
          decode: Decode | None = None, callback: ProgressCallback | None = None,
          resume_run: bool = True) -> TrainResult:
    """Run ``model.config.steps`` optimizer steps, continuing a checkpoint in ``out`` when
    ``resume_run``.  Writes ``out/videopanda_adapter.safetensors``, ``out/training_state.pt``,
    ``out/train_config.json`` and ``out/samples/step_NNNNNN.png`` (generated views left, data
    right; one row per view).  ``callback(done, total)`` after every step (may raise to stop);
    the loss is logged at INFO.  FloatingPointError when the loss stops being finite."""
    cfg = model.config
    out = Path(out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG_FILE, json.loads(cfg.to_json()), replace=True)
    model.adapter.to(device)
    model.transformer.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    start = resume(out, model, optimizer, source, generator) if resume_run else 0
    null_text = source.text("")[None]
    # one fixed video-conditioned matrix to watch (its own generator: the run's draws are unchanged)
    watched = source.batch(cfg.matrices[0], regime="column", train=False,
                           rng=torch.Generator().manual_seed(cfg.seed + 1))
    losses = []
    batches = iter(source)
    model.transformer.train()
    path = out / ADAPTER_FILE
    for step in range(start, cfg.steps):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.grad_accum):
            loss = training_loss(model, next(batches), generator=generator, device=device) / cfg.grad_accum
            loss.backward()
            total += float(loss.detach())
        if not math.isfinite(total):
            raise FloatingPointError(f"loss became {total} at step {step + 1}; lower the learning rate or use fp32")
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(total)
        done = step + 1
        log.info("step %d/%d  loss %.4f", done, cfg.steps, total)
        if done % cfg.save_every == 0 or done == cfg.steps:
            path = save_checkpoint(out, model, optimizer, done, source, generator)
        if done % cfg.sample_every == 0 or done == cfg.steps:
            model.transformer.eval()
            image = preview(model, watched, cfg, device=device, null_text=null_text, decode=decode)
            save_png(to_uint8(image, channels_last=False), out / "samples" / f"step_{done:06d}.png", replace=True)
            model.transformer.train()
        report(callback, done, cfg.steps)
    return TrainResult(cfg.steps, tuple(losses), path)
