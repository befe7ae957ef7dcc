"""``python -m pano360 train-diffpano --stage lora|epipolar --base SD_FOLDER --out RUN [...]``.

Trains DiffPano's weights on your data (pipelines/diffpano/training.py; docs/diffpano.md):

* ``--stage lora``: Pano-SD, a LoRA on the UNet, from ``--data`` (a folder of equirect
  images, captions in ``<name>.txt`` beside them).  Output ``RUN/pano_sd_lora.safetensors``
  (kohya keys: ComfyUI's LoraLoader reads it; put it in ``models/loras``).
* ``--stage epipolar``: the spherical epipolar modules, from ``--data`` (one subfolder per
  scene: equirect frames sorted by name, ``poses.txt`` in RealEstate10K rows with positions
  in metres, optional ``caption.txt``) or ``--synthetic N`` procedural rooms (a setup
  check); ``--lora`` applies the stage-1 LoRA, frozen.  Output
  ``RUN/diffpano_epipolar.safetensors`` (``models/diffpano``).

``--base`` is a diffusers Stable Diffusion folder (``unet/ vae/ text_encoder/ tokenizer/
scheduler/``, e.g. SD 1.5 or 2.1 as published on Hugging Face); the VAE and text encoder
stay frozen.  Runs on CUDA when present (``--mixed-precision fp16|bf16``), else on the CPU
(tiny runs only).  Rerunning with the same ``--out`` resumes from the newest checkpoint.
Needs ``diffusers`` and ``transformers`` (ComfyUI ships transformers).
"""

from __future__ import annotations

import argparse
import logging
import math
import pathlib

log = logging.getLogger(__name__)

DEFAULT_CAPTION = "a 360 degree equirectangular panorama"
# Steps between progress lines in the log.
LOG_EVERY = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..pipelines.diffpano.training import DEFAULT_LR, DEFAULT_RANK, PRECISIONS, STAGES

    parser.add_argument("--stage", choices=STAGES, required=True, help="lora: Pano-SD; epipolar: the epipolar modules")
    parser.add_argument("--base", required=True, help="diffusers Stable Diffusion folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, loss.csv and the exported weights (resumes if present)")
    parser.add_argument("--data", help="lora: a folder of equirect images; epipolar: a folder of posed sequences")
    parser.add_argument("--synthetic", type=int, default=0, help="epipolar: train on N procedural rooms instead of --data")
    parser.add_argument("--lora", help="epipolar: the stage-1 LoRA (kohya safetensors), applied frozen")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"learning rate (default {DEFAULT_LR})")
    parser.add_argument("--batch-size", type=int, default=1, help="images (lora) or scenes of --views panoramas (epipolar) per step")
    parser.add_argument("--views", type=int, default=3, help="epipolar: panoramas per scene and step")
    parser.add_argument("--rank", type=int, default=DEFAULT_RANK, help=f"lora: rank (default {DEFAULT_RANK})")
    parser.add_argument("--alpha", type=float, default=None, help="lora: alpha (default = rank)")
    parser.add_argument("--height", type=int, default=512, help="panoramas are resized to height x 2 height")
    parser.add_argument("--samples", type=int, default=8, help="epipolar: points per ray (S)")
    parser.add_argument("--refs", type=int, default=2, help="epipolar: reference panoramas per panorama (K)")
    parser.add_argument("--near", type=float, default=0.5, help="epipolar: nearest sampled distance (metres)")
    parser.add_argument("--far", type=float, default=0.0, help="epipolar: farthest sampled distance, 0 = infinity")
    parser.add_argument("--mixed-precision", choices=PRECISIONS, default="no")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-roll", action="store_true", help="no random horizontal roll of the panoramas")
    parser.add_argument("--caption", default=DEFAULT_CAPTION, help="caption where the data has none")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def load_components(base: str | pathlib.Path, device):
    """:class:`Components` from a diffusers Stable Diffusion folder."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from ..pipelines.diffpano.training import Components

    base = pathlib.Path(base)
    missing = [s for s in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (base / s).is_dir()]
    if missing:
        raise ValueError(f"--base {base}: not a diffusers Stable Diffusion folder (missing {', '.join(missing)}/)")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").to(device)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").to(device).eval().requires_grad_(False)
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").to(device).eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    scale = float(vae.config.scaling_factor)

    def encode_images(x):
        return vae.encode(x.to(device) * 2 - 1).latent_dist.sample() * scale

    def encode_prompts(captions):
        ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        return text_encoder(ids)[0]

    return Components(unet, encode_images, encode_prompts, scheduler.alphas_cumprod.clone(),
                      scheduler.config.prediction_type)


def run(args: argparse.Namespace) -> int:
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        log.error("train-diffpano: needs diffusers and transformers (pip install diffusers transformers): %s", e)
        return 2
    import torch

    from ..models.diffpano_epipolar import EpipolarConfig
    from ..models.lora import merge_kohya_lora
    from ..pipelines.diffpano.training import PanoramaSet, SequenceSet, TrainConfig, synthetic_sequences, train

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        config = TrainConfig(
            stage=args.stage, steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size, views=args.views,
            rank=args.rank, alpha=args.alpha, height=args.height, mixed_precision=args.mixed_precision,
            gradient_checkpointing=args.gradient_checkpointing, save_every=args.save_every, seed=args.seed,
            roll_augment=not args.no_roll,
            epipolar=EpipolarConfig(num_samples=args.samples, num_refs=args.refs, near=args.near,
                                    far=args.far or math.inf),
        )
        if args.stage == "lora":
            if not args.data:
                raise ValueError("--stage lora needs --data (a folder of equirect images)")
            data = PanoramaSet.from_folder(args.data, args.height, args.caption)
        elif args.synthetic:
            data = synthetic_sequences(args.synthetic, max(args.views + 1, 6), args.height, seed=args.seed, caption=args.caption)
        elif args.data:
            data = SequenceSet.from_folder(args.data, args.height, args.caption)
        else:
            raise ValueError("--stage epipolar needs --data (posed sequences) or --synthetic N")
        components = load_components(args.base, device)
        if args.lora:
            if args.stage != "epipolar":
                raise ValueError("--lora is the frozen stage-1 LoRA of the epipolar stage")
            merged = merge_kohya_lora(components.unet, args.lora)
            log.info("train-diffpano: merged %s into %d UNet layers (frozen)", args.lora, merged)

        def progress(done: int, total: int) -> None:
            if done % LOG_EVERY == 0 or done == total:
                log.info("train-diffpano: step %d / %d", done, total)

        result = train(components, data, config, args.out, callback=progress)
    except (OSError, ValueError) as e:
        log.error("train-diffpano: %s", e)
        return 2
    if result.losses:
        k = min(LOG_EVERY, len(result.losses))
        log.info("train-diffpano: loss %.4f (mean of the first %d steps of this run) -> %.4f (last %d)",
                 sum(result.losses[:k]) / k, k, sum(result.losses[-k:]) / k, k)
    log.info("train-diffpano: wrote %s (loss per step in %s)", result.output, pathlib.Path(args.out) / "loss.csv")
    return 0
