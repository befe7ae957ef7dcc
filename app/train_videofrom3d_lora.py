"""``python -m pano360 train-videofrom3d-lora``: VideoFrom3D's style LoRA (distribution alignment).

Trains rank-16 LoRAs on Flux-dev and the XLabs HED ControlNet from one or a few reference (style)
images, the official recipe (``sag_distribution_alignment.py``; docs/videofrom3d.md has the
details, memory and time estimates).  Example (one GPU with >= 40 GB, the paper's settings)::

    python -m pano360 train-videofrom3d-lora --images style.png --edges style_hed/ \\
        --text-embedding ComfyUI/output/vf3d_empty_prompt_00001_.safetensors \\
        --flux ComfyUI/models/diffusion_models/flux1-dev.safetensors \\
        --controlnet ComfyUI/models/controlnet/flux-hed-controlnet-v3.safetensors \\
        --vae ComfyUI/models/vae/ae.safetensors --out ComfyUI/models/loras/mystyle --gradient-checkpointing

Every 100 steps ``<out>/checkpoint-<step>/`` gets ``lora.safetensors`` (XLabs keys: the pack's
XLabs Flux LoRA Loader and the official code), ``controlnet.lora.safetensors`` (the pack's XLabs
ControlNet Loader) and ``lora_comfyui.safetensors`` (kohya keys: ComfyUI's stock LoraLoader).
Run the same command again to resume from ``<out>/training_state.pt``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from ..models.flux_loader import load_flux, load_flux_vae, load_xlabs_controlnet
from ..pipelines.videofrom3d.style_data import IMAGE_SIZE, load_references, read_text_embedding
from ..pipelines.videofrom3d.style_lora import StyleLoRA, StyleLoRAConfig, train_style_lora

log = logging.getLogger("pano360.train_videofrom3d_lora")


def _blocks(text: str) -> tuple[int, ...] | None:
    """``"all"`` -> None; ``"1,2,3,4"`` -> (1, 2, 3, 4); ``""`` / ``"none"`` -> ()."""
    text = text.strip().lower()
    if text == "all":
        return None
    if text in ("", "none"):
        return ()
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all', 'none' or block indices like 1,2,3,4, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = StyleLoRAConfig()
    g = parser.add_argument_group("data and models")
    g.add_argument("--images", required=True, nargs="+", type=Path, help="reference (style) images or folders of them")
    g.add_argument("--edges", type=Path,
                   help="folder of HED edge maps of the images, same file names (e.g. ComfyUI's HED Lines node from "
                        "comfyui_controlnet_aux, saved per image); needed with --controlnet")
    g.add_argument("--text-embedding", required=True, nargs="+", type=Path,
                   help="Flux text conditioning from the 'VideoFrom3D Save Text Embedding' node (tensors txt, vec): "
                        "one file for every image (the official default: an empty prompt) or one per image")
    g.add_argument("--flux", required=True, type=Path, help="Flux-dev transformer, BFL layout (flux1-dev.safetensors)")
    g.add_argument("--controlnet", type=Path,
                   help="XLabs HED ControlNet (flux-hed-controlnet-v3.safetensors); without it only the Flux LoRA "
                        "is trained, not the official recipe")
    g.add_argument("--vae", required=True, type=Path, help="Flux VAE: ae.safetensors or a diffusers vae/ folder")
    g.add_argument("--out", required=True, type=Path, help="output folder (checkpoint-N/, training_state.pt, log)")
    s = parser.add_argument_group("training (defaults: configs/distribution_alignment.yaml)")
    s.add_argument("--steps", type=int, default=d.steps)
    s.add_argument("--rank", type=int, default=d.rank)
    s.add_argument("--lr", type=float, default=d.lr)
    s.add_argument("--double-blocks", type=_blocks, default=d.double_blocks, help="Flux double blocks with a LoRA (all)")
    s.add_argument("--single-blocks", type=_blocks, default=d.single_blocks,
                   help="Flux single blocks with a LoRA (1,2,3,4)")
    s.add_argument("--size", type=int, default=IMAGE_SIZE, help="long side of the training crops in pixels")
    s.add_argument("--save-every", type=int, default=d.save_every)
    s.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between fixed-draw evaluation losses")
    s.add_argument("--precision", choices=("bf16", "fp32"), default=d.precision,
                   help="the frozen models' dtype (the LoRA is always float32)")
    s.add_argument("--gradient-checkpointing", action="store_true", help="recompute block activations (less memory)")
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--no-resume", action="store_true", help="start over even if --out holds a training state")


def _vae_encoder(vae, device):
    """``(1, 3, H, W)`` in [-1, 1] -> scaled latent mean and std, as x-flux's ``ae.encode`` (which
    samples: ``scale · (z − shift)``)."""
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    dtype = next(vae.parameters()).dtype

    @torch.no_grad()
    def encode(image: torch.Tensor):
        dist = vae.encode(image.to(device, dtype)).latent_dist
        return ((dist.mean - shift) * scale).float(), (dist.std * scale).float()

    return encode


def run(args: argparse.Namespace) -> int:
    if args.controlnet is not None and args.edges is None:
        raise SystemExit("--controlnet needs --edges (HED maps of the images: the ControlNet's condition)")
    config = StyleLoRAConfig(steps=args.steps, rank=args.rank, lr=args.lr, double_blocks=args.double_blocks,
                             single_blocks=args.single_blocks, controlnet=args.controlnet is not None,
                             image_size=args.size, save_every=args.save_every, eval_every=args.eval_every,
                             precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
                             seed=args.seed)
    try:
        texts = [read_text_embedding(p) for p in args.text_embedding]
        refs = load_references(args.images, args.edges if args.edges is not None else None, len(texts))
    except ValueError as err:
        raise SystemExit(str(err)) from None
    device = torch.device(args.device)
    log.info("loading Flux from %s", args.flux)
    flux = load_flux(args.flux, device, config.dtype)
    p = flux.params
    bad = [f"{i}: txt {tuple(t.txt.shape)}, vec {tuple(t.vec.shape)}" for i, t in enumerate(texts)
           if t.txt.shape[1] != p.context_in_dim or t.vec.shape[0] != p.vec_in_dim]
    if bad:
        raise SystemExit(f"--text-embedding: this Flux reads txt (tokens, {p.context_in_dim}) and vec ({p.vec_in_dim},); "
                         f"got {bad}")
    controlnet = None
    if args.controlnet is not None:
        log.info("loading the ControlNet from %s", args.controlnet)
        controlnet = load_xlabs_controlnet(args.controlnet, p, device, config.dtype)
    vae = load_flux_vae(args.vae, device)
    model = StyleLoRA(flux, controlnet, config)
    n = sum(x.numel() for x in model.flux_parameters() + model.control_parameters())
    log.info("training %d LoRA parameters (rank %d) on %d image(s) for %d steps", n, config.rank, len(refs), config.steps)
    result = train_style_lora(model, refs, texts, _vae_encoder(vae, device), args.out, device=device,
                              resume=not args.no_resume)
    first, last = result.eval_losses[0][1], result.eval_losses[-1][1]
    log.info("done: evaluation loss %.5f -> %.5f; LoRA files in %s", first, last, result.folder)
    return 0
