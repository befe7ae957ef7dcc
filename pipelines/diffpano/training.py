"""Training DiffPano: Pano-SD (a LoRA on SD's UNet) and the spherical epipolar modules.

DiffPano (Ye et al. 2024, §3; spec §3c) trains in two stages on posed panorama sequences:

1. **Pano-SD**: a LoRA on Stable Diffusion's UNet fine-tuned on equirect panoramas (VAE and
   text encoder frozen).  Here: adapters on every attention projection (``to_q, to_k, to_v,
   to_out.0``, the targets of diffusers' SD LoRA script) with a random horizontal roll of
   each panorama (any roll of an equirect is another valid panorama).
2. **Multi-view**: the EAModules after the mid/decoder attention blocks, trained on ``V``
   panoramas of one scene at a time (same timestep for all views, each view attending to
   its nearest others), with the UNet and the Pano-SD LoRA frozen.  Rolling a panorama
   turns its camera (``roll_panorama``), so the roll augments this stage too.

The model comes in as :class:`Components` (any diffusers ``UNet2DConditionModel`` plus
encoders), so the loop runs tiny on the CPU for tests and at SD size on a GPU
(``python -m pano360 train-diffpano``, app/train_diffpano.py).  Checkpoints (trainable
weights, optimizer, step) are written atomically every ``save_every`` steps and the run
resumes from the newest; the per-step loss is appended to ``loss.csv``.  Data sampling is
seeded by ``(seed, step)``, so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import pathlib
import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ...media.atomic import atomic_folder, atomic_path
from ...models.diffpano_epipolar import EpipolarAttentionSet, EpipolarConfig, EpipolarPlan, EpipolarViews, nearest_references
from ...models.diffpano_loader import save_epipolar
from ...models.diffpano_unet import epipolar_hooks
from ...models.lora import add_lora, kohya_unet_name, linear_targets, lora_state_dict, remove_lora
from ...projection.geometry import rotation_matrix
from ...sampling.types import ProgressCallback, report
from .synthetic import random_room, random_walk, render_room

log = logging.getLogger(__name__)

__all__ = [
    "STAGES",
    "PRECISIONS",
    "TrainConfig",
    "Components",
    "PanoramaSet",
    "PosedSequence",
    "SequenceSet",
    "roll_panorama",
    "synthetic_sequences",
    "train",
    "TrainResult",
    "LORA_FILE",
    "MODULES_FILE",
]

STAGES = ("lora", "epipolar")
PRECISIONS = ("no", "fp16", "bf16")
# diffusers examples/text_to_image/train_text_to_image_lora.py defaults: --rank 4,
# --learning_rate 1e-4 (alpha = rank, i.e. scale 1).
DEFAULT_RANK = 4
DEFAULT_LR = 1e-4
# Gradient clipping norm (diffusers' training scripts: --max_grad_norm 1.0).
MAX_GRAD_NORM = 1.0
LORA_FILE = "pano_sd_lora.safetensors"
MODULES_FILE = "diffpano_epipolar.safetensors"
_CHECKPOINT = re.compile(r"^checkpoint-(\d{7})$")
# Data draws are seeded by seed * _SEED_STRIDE + step (distinct streams per seed).
_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class TrainConfig:
    """stage: ``lora`` (Pano-SD) or ``epipolar`` (the EAModules).  views: panoramas per item
    (stage 2).  rank/alpha: LoRA (stage 1).  height: panoramas are resized to ``height x
    2 height``.  mixed_precision: ``no`` | ``fp16`` (CUDA, with loss scaling) | ``bf16``."""

    stage: str
    steps: int = 1000
    learning_rate: float = DEFAULT_LR
    batch_size: int = 1
    views: int = 3
    rank: int = DEFAULT_RANK
    alpha: float | None = None
    height: int = 512
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    save_every: int = 500
    seed: int = 0
    roll_augment: bool = True
    max_grad_norm: float = MAX_GRAD_NORM
    epipolar: EpipolarConfig = field(default_factory=EpipolarConfig)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage: expected one of {list(STAGES)}, got {self.stage!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision: expected one of {list(PRECISIONS)}, got {self.mixed_precision!r}")
        for name in ("steps", "batch_size", "views", "rank", "height", "save_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.stage == "epipolar" and self.views < 2:
            raise ValueError(f"views: the epipolar stage needs at least 2 views per item, got {self.views}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")

    def to_json(self) -> str:
        data = asdict(self)
        data["epipolar"] = self.epipolar.to_dict()
        return json.dumps(data, sort_keys=True)


@dataclass(frozen=True)
class Components:
    """What a training run needs of the base model.

    unet: a diffusers ``UNet2DConditionModel`` (frozen here).  encode_images: ``(B, 3, H, W)``
    in 0..1 -> the UNet's latents (VAE mean or sample times its scaling factor).
    encode_prompts: captions -> ``(B, L, D)`` text states.  alphas_cumprod: ``(T,)`` the
    training noise schedule.  prediction: ``epsilon`` | ``v_prediction``.
    """

    unet: nn.Module
    encode_images: Callable[[Tensor], Tensor]
    encode_prompts: Callable[[list[str]], Tensor]
    alphas_cumprod: Tensor
    prediction: str = "epsilon"


# --------------------------------------------------------------------------- data


def roll_panorama(image: Tensor, rotation: Tensor, shift: int) -> tuple[Tensor, Tensor]:
    """Roll an equirect ``(C, H, W)`` right by ``shift`` columns and turn its camera to match.

    The content at longitude ``L`` moves to ``L + delta`` (``delta = 2 pi shift / W``), so the
    camera-to-world rotation becomes ``R R_y(-delta)`` and every pixel keeps its world ray.
    """
    w = image.shape[-1]
    delta = 2.0 * math.pi * shift / w
    turn = rotation_matrix(torch.tensor(-delta, dtype=torch.float64), 0.0, 0.0).to(rotation)
    return torch.roll(image, shift, dims=-1), rotation @ turn


def _load_image(path: pathlib.Path, height: int) -> Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    if tuple(x.shape[-2:]) != (height, 2 * height):
        x = F.interpolate(x[None], size=(height, 2 * height), mode="bilinear", align_corners=False, antialias=True)[0]
    return x.clamp(0.0, 1.0)


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")


class PanoramaSet:
    """Equirect panoramas with captions (stage 1).  ``images``: ``(N, 3, H, 2H)`` or paths
    (loaded on use); ``captions``: one per image."""

    def __init__(self, images: Sequence, captions: Sequence[str], height: int):
        if len(images) == 0 or len(images) != len(captions):
            raise ValueError(f"panoramas: need as many captions as images (>0), got {len(images)} and {len(captions)}")
        self.images, self.captions, self.height = list(images), list(captions), height

    @staticmethod
    def from_folder(folder: str | os.PathLike, height: int, default_caption: str) -> "PanoramaSet":
        """Every image in ``folder``; a caption from ``<stem>.txt`` beside it, else ``default_caption``."""
        root = pathlib.Path(folder)
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTS)})")
        caps = [_caption(p.with_suffix(".txt"), default_caption) for p in files]
        return PanoramaSet(files, caps, height)

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> Tensor:
        x = self.images[i]
        return _load_image(x, self.height) if isinstance(x, (str, os.PathLike)) else x

    def sample(self, batch: int, generator: torch.Generator, roll: bool) -> tuple[Tensor, list[str]]:
        idx = torch.randint(len(self), (batch,), generator=generator).tolist()
        out, caps = [], []
        for i in idx:
            img = self.image(i)
            if roll:
                img = torch.roll(img, int(torch.randint(img.shape[-1], (1,), generator=generator)), dims=-1)
            out.append(img)
            caps.append(self.captions[i])
        return torch.stack(out), caps


def _caption(path: pathlib.Path, default: str) -> str:
    return path.read_text(encoding="utf-8").strip() if path.is_file() else default


@dataclass(frozen=True)
class PosedSequence:
    """One scene: frames ``(T, 3, H, 2H)`` (or paths), cameras ``rotations (T, 3, 3)`` and
    ``positions (T, 3)``, and a caption."""

    frames: tuple
    rotations: Tensor
    positions: Tensor
    caption: str


class SequenceSet:
    """Posed panorama sequences (stage 2)."""

    def __init__(self, sequences: Sequence[PosedSequence], height: int):
        if not sequences:
            raise ValueError("sequences: need at least one posed sequence")
        self.sequences, self.height = list(sequences), height

    @staticmethod
    def from_folder(folder: str | os.PathLike, height: int, default_caption: str,
                    pose_file: str = "poses.txt") -> "SequenceSet":
        """Each subfolder (or ``folder`` itself) holding equirect frames (sorted by name) and a
        RealEstate10K pose file ``pose_file`` with one camera per frame (positions in metres,
        docs/cameras.md); an optional ``caption.txt``."""
        from ...cameras.formats.realestate10k import read_realestate10k

        root = pathlib.Path(folder)
        dirs = sorted(d for d in root.iterdir() if d.is_dir()) or [root]
        seqs = []
        for d in dirs:
            pose = d / pose_file
            if not pose.is_file():
                raise ValueError(f"{d}: no pose file {pose_file} (RealEstate10K camera rows, one per frame)")
            frames = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            path = read_realestate10k(pose.read_text(encoding="utf-8"), "exact", relative=False)
            if path.num_frames != len(frames):
                raise ValueError(f"{d}: {len(frames)} frames but {path.num_frames} cameras in {pose_file}")
            if not path.has_position:
                raise ValueError(f"{d}: {pose_file} has no camera positions")
            seqs.append(PosedSequence(tuple(frames), path.rotations(dtype=torch.float64),
                                      path.positions(dtype=torch.float64), _caption(d / "caption.txt", default_caption)))
        return SequenceSet(seqs, height)

    def sample(self, views: int, generator: torch.Generator, roll: bool) -> tuple[Tensor, Tensor, Tensor, str]:
        """``views`` consecutive frames of a random sequence: images ``(V, 3, H, W)``, rotations
        ``(V, 3, 3)``, positions ``(V, 3)``, caption."""
        fitting = [s for s in self.sequences if len(s.frames) >= views]
        if not fitting:
            raise ValueError(f"no sequence has {views} frames")
        seq = fitting[int(torch.randint(len(fitting), (1,), generator=generator))]
        start = int(torch.randint(len(seq.frames) - views + 1, (1,), generator=generator))
        imgs, rots = [], []
        for k in range(start, start + views):
            f = seq.frames[k]
            img = _load_image(f, self.height) if isinstance(f, (str, os.PathLike)) else f
            rot = seq.rotations[k]
            if roll:
                img, rot = roll_panorama(img, rot, int(torch.randint(img.shape[-1], (1,), generator=generator)))
            imgs.append(img)
            rots.append(rot)
        return torch.stack(imgs), torch.stack(rots), seq.positions[start:start + views], seq.caption


def synthetic_sequences(num: int, frames: int, height: int, step: float = 0.5, seed: int = 0,
                        caption: str = "a room") -> SequenceSet:
    """``num`` procedural rooms, each walked through in ``frames`` panoramas (pipelines/diffpano/synthetic.py)."""
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for _ in range(num):
        room = random_room(g)
        rots, pos = random_walk(room, frames, step, g)
        imgs = tuple(render_room(room, rots[i], pos[i], (height, 2 * height))[0] for i in range(frames))
        seqs.append(PosedSequence(imgs, rots, pos, caption))
    return SequenceSet(seqs, height)


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class TrainResult:
    """losses: per-step training loss of this run (resumed steps excluded); step: the last
    step done; output: the exported trainable weights."""

    losses: tuple[float, ...]
    step: int
    output: pathlib.Path


def _autocast(device: torch.device, precision: str):
    if precision == "no":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("mixed_precision fp16 needs a CUDA device (use bf16 or no on the CPU)")
    return torch.autocast(device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


def _latest_checkpoint(out_dir: pathlib.Path) -> tuple[int, pathlib.Path] | None:
    found = [(int(m[1]), p) for p in out_dir.glob("checkpoint-*") if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return max(found) if found else None


def _save_checkpoint(out_dir: pathlib.Path, step: int, trainable: nn.Module, optimizer, config: TrainConfig) -> None:
    with atomic_folder(out_dir / f"checkpoint-{step:07d}") as tmp:
        tmp = pathlib.Path(tmp)
        save_file({k: v.detach().contiguous().cpu() for k, v in trainable.state_dict().items()},
                  str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "config": json.loads(config.to_json())}, indent=1))


def _target(components: Components, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    if components.prediction == "epsilon":
        return noise
    if components.prediction == "v_prediction":  # Salimans & Ho 2022, v = a eps - s x0
        a = components.alphas_cumprod.to(latents)[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - components.alphas_cumprod.to(latents)[t]).sqrt().view(-1, 1, 1, 1)
        return a * noise - s * latents
    raise ValueError(f"prediction: expected 'epsilon' or 'v_prediction', got {components.prediction!r}")


def _batch_views(rotations: Tensor, positions: Tensor, items: int, views: int, num_refs: int) -> EpipolarViews:
    """All items of a batch as one block-diagonal scene: view ``v`` of item ``b`` references
    only its own item's nearest views."""
    refs = []
    for b in range(items):
        r = nearest_references(positions[b * views:(b + 1) * views], num_refs)
        refs.append(torch.where(r >= 0, r + b * views, r))
    return EpipolarViews(rotations, positions, torch.cat(refs))


def train(components: Components, data: PanoramaSet | SequenceSet, config: TrainConfig,
          out_dir: str | os.PathLike, *, callback: ProgressCallback | None = None) -> TrainResult:
    """Train the stage's weights; resume from the newest checkpoint in ``out_dir``.

    Stage ``lora`` needs a :class:`PanoramaSet` (adapters are added to the UNet for the run
    and removed afterwards); stage ``epipolar`` a :class:`SequenceSet` (merge the stage-1
    LoRA into the UNet first: ``models.lora.merge_kohya_lora``).  Returns :class:`TrainResult`; the final
    weights are ``out_dir/pano_sd_lora.safetensors`` or ``out_dir/diffpano_epipolar.safetensors``.
    callback(done, total) after every step (it may raise to stop; the last checkpoint stays).
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.stage == "lora" and not isinstance(data, PanoramaSet):
        raise ValueError("stage lora trains on a PanoramaSet (a folder of equirect images)")
    if config.stage == "epipolar" and not isinstance(data, SequenceSet):
        raise ValueError("stage epipolar trains on a SequenceSet (posed panorama sequences)")
    unet = components.unet
    device = next(unet.parameters()).device
    _autocast(device, config.mixed_precision)  # refuses fp16 off CUDA before anything runs
    unet.requires_grad_(False)
    loras = {}
    with torch.random.fork_rng(devices=[]):  # the initial weights follow config.seed, the caller's RNG is untouched
        torch.manual_seed(config.seed)
        if config.stage == "lora":
            names = linear_targets(unet)
            if not names:
                raise ValueError(f"{type(unet).__name__}: no attention projections to adapt")
            loras = add_lora(unet, names, config.rank, config.alpha)
            # only the factors: checkpoints stay small and never hold the frozen base
            trainable: nn.Module = nn.ModuleDict({kohya_unet_name(n): nn.ModuleDict(
                {"lora_down": w.lora_down, "lora_up": w.lora_up}) for n, w in loras.items()})
        else:
            trainable = EpipolarAttentionSet.for_diffusers_unet(unet, config.epipolar, config.gradient_checkpointing)
    trainable.to(device=device, dtype=torch.float32).train()
    try:
        return _loop(components, data, config, out, trainable, loras, device, callback)
    finally:
        if loras:
            remove_lora(unet, loras, merge=False)  # the caller's UNet comes back as it was


def _loop(components: Components, data, config: TrainConfig, out: pathlib.Path, trainable: nn.Module,
          loras: dict, device, callback: ProgressCallback | None) -> TrainResult:
    unet = components.unet
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=config.learning_rate)
    scaler = torch.amp.GradScaler("cuda") if config.mixed_precision == "fp16" else None
    start = 0
    latest = _latest_checkpoint(out)
    if latest is not None:
        start, folder = latest
        trainable.load_state_dict(load_file(str(folder / "trainable.safetensors"), device=str(device)), strict=True)
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
        log.info("train-diffpano: resumed from %s (step %d)", folder.name, start)
    if config.gradient_checkpointing and hasattr(unet, "enable_gradient_checkpointing"):
        unet.enable_gradient_checkpointing()
    timesteps = components.alphas_cumprod.shape[0]
    alphas = components.alphas_cumprod.to(device=device, dtype=torch.float32)
    losses = []
    loss_log = out / "loss.csv"
    new_log = not loss_log.exists()
    with open(loss_log, "a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(["step", "loss"])
        for step in range(start, config.steps):
            g = torch.Generator().manual_seed(config.seed * _SEED_STRIDE + step)
            views = None
            if config.stage == "lora":
                images, captions = data.sample(config.batch_size, g, config.roll_augment)
                per_item = 1
            else:
                parts = [data.sample(config.views, g, config.roll_augment) for _ in range(config.batch_size)]
                images = torch.cat([p[0] for p in parts])
                views = _batch_views(torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]),
                                     config.batch_size, config.views, config.epipolar.num_refs)
                captions = [p[3] for p in parts for _ in range(config.views)]
                per_item = config.views
            with torch.no_grad():
                latents = components.encode_images(images.to(device)).float()
                text = components.encode_prompts(captions).to(device)
            noise = torch.randn(latents.shape, generator=g).to(device)
            t = torch.randint(timesteps, (config.batch_size,), generator=g).repeat_interleave(per_item).to(device)
            a = alphas[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            hooks = (epipolar_hooks(unet, trainable, EpipolarPlan(views, config.epipolar))
                     if config.stage == "epipolar" else nullcontext())
            with hooks, _autocast(device, config.mixed_precision):
                pred = unet(noisy, t, text).sample
            loss = F.mse_loss(pred.float(), _target(components, latents, noise, t))
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable.parameters(), config.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"train-diffpano: the loss became {value} at step {step + 1}")
            losses.append(value)
            writer.writerow([step + 1, f"{value:.6g}"])
            fh.flush()
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                _save_checkpoint(out, step + 1, trainable, optimizer, config)
            report(callback, step + 1 - start, config.steps - start)
    final = out / (LORA_FILE if config.stage == "lora" else MODULES_FILE)
    trainable.eval()
    # replace=True: the export of this run's own weights (a resumed run exports again)
    with atomic_path(final, ".part", replace=True) as tmp:
        if config.stage == "lora":
            alpha = next(iter(loras.values())).alpha
            save_file(lora_state_dict(loras, kohya_unet_name), tmp, metadata={
                "ss_network_dim": str(config.rank), "ss_network_alpha": str(alpha), "pano360_training": config.to_json()})
        else:
            save_epipolar(trainable, tmp, {"pano360_training": config.to_json()})
    return TrainResult(tuple(losses), config.steps, final)
