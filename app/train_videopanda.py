"""``python -m pano360 train-videopanda``: train VideoPanda's adapter on Wan 2.1 from 360° videos.

Example (one GPU, the paper's settings; docs/videopanda.md has the data layout and memory)::

    python -m pano360 train-videopanda --data my360videos/ --out runs/vpanda \\
        --base ComfyUI/models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors \\
        --vae ComfyUI/models/vae/wan_2.1_vae.safetensors \\
        --text-encoder Wan2.1-T2V-1.3B-Diffusers/ --gradient-checkpointing

The result, ``<out>/videopanda_adapter.safetensors``, goes into ComfyUI's
``models/videopanda/`` for the Pano360 VideoPanda Adapter Loader.  Run the same command
again to resume from ``<out>/training_state.pt``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..sampling.flow import WAN21_SHIFT, WAN21_TOKENS
from ..models.videopanda_adapter import RAY_CHANNELS, VideoPandaAdapter, VideoPandaConfig
from ..models.videopanda_wan import diffusers_to_official_key
from ..models.wan_loader import WanLatents, load_wan_transformer, load_wan_vae
from ..media.video import count_frames
from ..pipelines.videopanda.batches import MatrixSource
from ..pipelines.videopanda.data import PAPER_MATRICES, scan_folder
from ..pipelines.videopanda.train import train
from ..pipelines.videopanda.train_config import BASE_TRAINING, TrainConfig
from ..pipelines.videopanda.trainable import Trainable
from ..projection import rig_preset

log = logging.getLogger("pano360.train_videopanda")

# Wan's text context: UMT5-XXL, 512 tokens, padded with zeros (diffusers WanPipeline max_sequence_length 512).
WAN_TEXT_TOKENS = 512
EMPTY_CAPTION_FILE = "empty.safetensors"


def parse_matrices(text: str) -> tuple[tuple[int, int], ...]:
    """``"3x16,4x12"`` -> ``((3, 16), (4, 12))`` (views x latent frames)."""
    out = []
    for part in text.split(","):
        try:
            v, t = (int(s) for s in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"matrices: expected VIEWSxFRAMES[,...] like 3x16,8x6, got {part!r}") from None
        out.append((v, t))
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = parser.add_argument_group("data and models")
    g.add_argument("--data", required=True, type=Path, help="folder of equirect (2:1) videos with <name>.txt captions")
    g.add_argument("--out", required=True, type=Path, help="output folder (adapter, resumable state, sample grids)")
    g.add_argument("--base", required=True, type=Path,
                   help="Wan 2.1 T2V transformer: ComfyUI/official .safetensors or a diffusers folder")
    g.add_argument("--vae", required=True, type=Path, help="Wan 2.1 VAE: ComfyUI .safetensors or a diffusers folder")
    t = g.add_mutually_exclusive_group(required=True)
    t.add_argument("--text-embeddings", type=Path,
                   help=f"folder of precomputed caption embeddings: <video name>.safetensors (tensor 'context', "
                        f"[L, 4096]) per video and {EMPTY_CAPTION_FILE} for the empty caption")
    t.add_argument("--text-encoder", type=Path,
                   help="a Wan diffusers folder with text_encoder/ (UMT5-XXL) and tokenizer/ (needs transformers)")
    g.add_argument("--rig", default="videopanda8", help="rig preset the views come from (default videopanda8)")
    g.add_argument("--ray-encoding", choices=sorted(RAY_CHANNELS), default="directions",
                   help="ray channels: directions (VideoPanda) or plucker")
    g.add_argument("--cached-clips", type=int, default=0, help="decoded videos kept in memory (small datasets)")
    s = parser.add_argument_group("training")
    s.add_argument("--steps", type=int, default=d.steps)
    s.add_argument("--matrices", type=parse_matrices, default=PAPER_MATRICES,
                   help="views x latent frames per batch, drawn at random (default 3x16,4x12,6x8,8x6: the paper's)")
    s.add_argument("--view-size", type=int, default=d.view_size, help="view side in pixels (multiple of 16)")
    s.add_argument("--frame-stride", type=int, default=d.frame_stride, help="take every n-th video frame")
    s.add_argument("--lr", type=float, default=d.lr)
    s.add_argument("--grad-accum", type=int, default=d.grad_accum)
    s.add_argument("--base-training", choices=BASE_TRAINING, default=d.base_training,
                   help="frozen: adapter only; lora: LoRA on the base blocks; self_attn: base self-attention "
                        "unfrozen; full: everything (VideoPanda's freezing ablation)")
    s.add_argument("--base-lora-rank", type=int, default=d.base_lora_rank)
    s.add_argument("--new-layers", choices=("full", "lora"), default=d.new_layers,
                   help="train the multi-view attention fully or as LoRA on its copied q, k, v, o")
    s.add_argument("--new-lora-rank", type=int, default=d.new_lora_rank)
    s.add_argument("--shift", type=float, default=WAN21_SHIFT,
                   help=f"flow time shift at --shift-tokens tokens, scaled by sqrt(tokens / shift-tokens) per "
                        f"matrix (default {WAN21_SHIFT:g} at {WAN21_TOKENS}: ComfyUI's Wan 2.1 shift at Wan's native size)")
    s.add_argument("--shift-tokens", type=int, default=WAN21_TOKENS)
    s.add_argument("--shift-low", type=float, default=None, help="interpolated shift at the data end (default: plain)")
    s.add_argument("--noise-aug-max", type=float, default=d.noise_aug_max,
                   help="noise-augmentation sigma of the carried row, drawn from U(0, max)")
    s.add_argument("--cond-drop", type=float, default=d.cond_drop)
    s.add_argument("--text-drop", type=float, default=d.text_drop)
    s.add_argument("--gradient-checkpointing", action="store_true")
    s.add_argument("--precision", choices=("bf16", "fp32"), default=d.precision)
    s.add_argument("--save-every", type=int, default=d.save_every)
    s.add_argument("--sample-every", type=int, default=d.sample_every)
    s.add_argument("--sample-steps", type=int, default=d.sample_steps)
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")


def _precomputed_text(folder: Path, clips) -> Callable[[str], Tensor]:
    from safetensors.torch import load_file

    by_caption = {}
    for clip in clips:
        f = folder / f"{clip.path.stem}.safetensors"
        if not f.is_file():
            raise ValueError(f"--text-embeddings: no {f.name} for {clip.path.name} in {folder}")
        by_caption[clip.caption] = load_file(str(f))["context"]
    empty = folder / EMPTY_CAPTION_FILE
    if not empty.is_file():
        raise ValueError(f"--text-embeddings: {folder} needs {EMPTY_CAPTION_FILE} (the empty caption, for CFG dropout)")
    by_caption[""] = load_file(str(empty))["context"]

    def encode(caption: str) -> Tensor:
        return by_caption[caption]

    return encode


def _umt5_text(folder: Path, device) -> Callable[[str], Tensor]:
    try:
        from transformers import AutoTokenizer, UMT5EncoderModel
    except ImportError:
        raise SystemExit("--text-encoder needs the 'transformers' package (pip install transformers), or use "
                         "--text-embeddings with precomputed embeddings") from None
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    model = UMT5EncoderModel.from_pretrained(str(folder / "text_encoder"), torch_dtype=torch.bfloat16).to(device).eval()

    @torch.no_grad()
    def encode(caption: str) -> Tensor:
        tok = tokenizer([caption], padding="max_length", max_length=WAN_TEXT_TOKENS, truncation=True,
                        return_tensors="pt")
        n = int(tok.attention_mask.sum())
        out = model(tok.input_ids.to(device), tok.attention_mask.to(device)).last_hidden_state[0, :n].float().cpu()
        return torch.cat([out, out.new_zeros(WAN_TEXT_TOKENS - n, out.shape[1])])  # zero padding, as WanPipeline

    return encode


def _require_diffusers() -> None:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise SystemExit("train-videopanda needs diffusers (>= 0.42): pip install 'diffusers>=0.42', or install "
                         "the pack with its 'train' extra") from None


def run(args: argparse.Namespace) -> int:
    _require_diffusers()
    config = TrainConfig(
        steps=args.steps, matrices=args.matrices, view_size=args.view_size, frame_stride=args.frame_stride,
        cond_drop=args.cond_drop, text_drop=args.text_drop, noise_aug_max=args.noise_aug_max, shift=args.shift,
        shift_tokens=args.shift_tokens, shift_low=args.shift_low, lr=args.lr, grad_accum=args.grad_accum,
        base_training=args.base_training, base_lora_rank=args.base_lora_rank, new_layers=args.new_layers,
        new_lora_rank=args.new_lora_rank, gradient_checkpointing=args.gradient_checkpointing,
        precision=args.precision, save_every=args.save_every, sample_every=args.sample_every,
        sample_steps=args.sample_steps, seed=args.seed)
    clips = scan_folder(args.data)
    lengths = [count_frames(c.path) for c in clips]
    log.info("%d videos, %d frames in all", len(clips), sum(lengths))
    transformer, base_cfg = load_wan_transformer(args.base)
    cfg = VideoPandaConfig(**{**base_cfg.__dict__, "ray_encoding": args.ray_encoding})
    official = {diffusers_to_official_key(k): v for k, v in transformer.state_dict().items()}
    adapter = VideoPandaAdapter(cfg).init_from_base(official)
    del official
    latents = WanLatents(load_wan_vae(args.vae), device=args.device,
                         dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32)
    text = (_precomputed_text(args.text_embeddings, clips) if args.text_embeddings is not None
            else _umt5_text(args.text_encoder, args.device))
    model = Trainable(transformer, adapter, config)
    source = MatrixSource(clips, lengths, rig_preset(args.rig, size=config.view_size), config, latents.encode, text,
                          cfg.ray_encoding, seed=config.seed, cached_clips=args.cached_clips)
    result = train(model, source, args.out, device=args.device, decode=latents.decode, resume_run=not args.no_resume)
    log.info("adapter: %s", result.adapter_path)
    return 0
