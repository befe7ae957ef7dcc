"""Pano360 nodes: PanoDiT (Look Beyond stage 1): loader, sampler, text feature from .npy.

The math lives in ``models/pano_dit*.py`` and ``pipelines/lookbeyond/panorama.py``; these
nodes only adapt ComfyUI types.  See docs/panodit.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from . import _host
from ._common import NodeInputError, check_widgets, describe, latent_samples, mask_to_bhw
from ._host import io
from ..models.pano_dit import PanoDiT
from ..models.pano_dit_loader import CHECKPOINT_KEYS, load_panodit
from ..pipelines.lookbeyond.panorama import LOOKBEYOND_ROLL_FRACTIONS, complete_panorama, latent_mask, parse_fractions
from ..sampling.gaussian_diffusion import NUM_TRAIN_TIMESTEPS

MODEL_FOLDER = "panodit"
CATEGORY = "Pano360/sampling"
PanoDiTType = io.Custom("PANO360_PANODIT")
WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TEXT_FEATURE_DIM = 1024  # OpenCLIP ViT-H-14 encode_text width (open_clip ViT-H-14.json embed_dim; Look Beyond text features)
LATENT_DOWNSCALE = 8  # SD VAE: 8 pixels per latent cell

_host.register_model_folder(MODEL_FOLDER)


@dataclass(frozen=True)
class PanoDiTHandle:
    """What flows along a PANO360_PANODIT wire: ComfyUI's patcher around the module
    (so its memory manager places and offloads the weights) and the load info."""

    patcher: object  # comfy ModelPatcher holding a PanoDiT
    variant: str
    source_key: str
    dtype: torch.dtype

    @property
    def module(self) -> PanoDiT:
        return self.patcher.model


class Pano360PanoDiTLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360PanoDiTLoader",
            display_name="PanoDiT Loader (Look Beyond)",
            category=CATEGORY,
            description=(
                "Loads a Look Beyond PanoDiT (DiT-XL/2 with text cross-attention) from models/panodit: an "
                "official training checkpoint (.pt with model/ema/opt/args, read without unpickling arbitrary "
                "objects) or a .safetensors file. Every size is read from the weights (any depth, width, "
                "patch); the head count, which no weight shape shows, from the file's stored config, the "
                "training args, the standard DiT of that width, or num_heads."
            ),
            inputs=[
                io.Combo.Input(
                    "checkpoint",
                    options=_host.model_file_list(MODEL_FOLDER),
                    tooltip="File in ComfyUI/models/panodit (.pt training checkpoint or .safetensors).",
                ),
                io.Combo.Input(
                    "weights",
                    options=["auto", *CHECKPOINT_KEYS],
                    default="auto",
                    tooltip="Which weights of a training checkpoint: auto = EMA when present (as the original "
                    "sampler), else the raw model. Plain state dicts and safetensors hold one set of weights: "
                    "use auto.",
                ),
                io.Combo.Input(
                    "weight_dtype",
                    options=list(WEIGHT_DTYPES),
                    default="fp32",
                    tooltip="Weight precision. fp32 matches the reference; bf16/fp16 halve memory (XL/2: 3.75 GB in fp32).",
                ),
                io.Int.Input(
                    "num_heads", default=0, min=0, max=256,
                    tooltip="Attention heads; 0 = automatic (a converted file's stored config, the training "
                    "args, the standard DiT of the same width: XL 16, L 16, B 12, S 6, else 64-channel heads). "
                    "Set it only for a model of your own with another head count.",
                ),
            ],
            outputs=[PanoDiTType.Output(tooltip="The PanoDiT model, for the PanoDiT Sampler.")],
        )

    @classmethod
    def execute(cls, checkpoint: str, weights: str, weight_dtype: str, num_heads: int = 0) -> io.NodeOutput:
        check_widgets(cls, weights=weights, weight_dtype=weight_dtype, num_heads=num_heads)   # 'fp8' was a bare KeyError
        path = _host.model_file_path(MODEL_FOLDER, checkpoint)
        dtype = WEIGHT_DTYPES[weight_dtype]
        try:
            module, info = load_panodit(path, key=weights, dtype=dtype, num_heads=num_heads or None)
        except ValueError as err:
            name = "num_heads" if "num_heads" in str(err) else "checkpoint"
            raise NodeInputError("Pano360PanoDiTLoader", name, "a PanoDiT checkpoint that fits", str(err)) from err
        patcher = _host.ModelPatcher(module, load_device=_host.torch_device(), offload_device=_host.offload_device())
        return io.NodeOutput(PanoDiTHandle(patcher, info["variant"], info["key"], dtype))


class Pano360PanoDiTSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360PanoDiTSampler",
            display_name="PanoDiT Sampler (Look Beyond)",
            category=CATEGORY,
            description=(
                "Completes a 2:1 equirectangular panorama from text and a known region with PanoDiT: ancestral "
                "DDPM with learned variance on the linear 1000-step schedule (respaced for fewer steps), "
                "RePaint replacement of the known region and seam rolls. The 32x64 latent band (256x512 px) "
                "sits in the model's 64x64 canvas. Output: raw latents for VAE Decode (sd-vae-ft-ema)."
            ),
            inputs=[
                PanoDiTType.Input("panodit", tooltip="Model from PanoDiT Loader."),
                io.Conditioning.Input(
                    "text",
                    tooltip="Text condition: the pooled output (1024 dims, OpenCLIP ViT-H/14 family) of a CLIP Text "
                    "Encode node, or Pano360 Text Feature From .npy (the original pipeline's DFN5B feature).",
                ),
                io.Latent.Input(
                    "known_latent",
                    optional=True,
                    tooltip="VAE Encode of the known equirectangular image, 2:1 (256x512 px -> 32x64 latent for "
                    "XL/2). Only the masked part is used. Leave empty to generate from text alone.",
                ),
                io.Mask.Input(
                    "known_mask",
                    optional=True,
                    tooltip="1 = known. Latent-sized (32x64) or any size with the same 2:1 aspect (pixel masks are "
                    "averaged over each 8x8 cell; a cell is known when at least half of it is). Without a mask "
                    "nothing is kept.",
                ),
                io.Int.Input(
                    "steps",
                    default=NUM_TRAIN_TIMESTEPS,
                    min=2,
                    max=NUM_TRAIN_TIMESTEPS,
                    tooltip="Denoising steps. 1000 = the original; fewer keep evenly spaced timesteps of the same "
                    "schedule (ADM respacing), faster but rougher.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Noise seed (CPU generator: the same on every device). Original default 0.",
                ),
                io.Boolean.Input(
                    "seam_rolls",
                    default=True,
                    tooltip="Roll the canvas around the 0/360° seam during sampling (rolled back at the end) so the "
                    "seam is denoised in the middle of the canvas too.",
                ),
                io.String.Input(
                    "roll_at",
                    default=", ".join(str(f) for f in LOOKBEYOND_ROLL_FRACTIONS),
                    tooltip="Comma-separated fractions of the 1000-step schedule at which to roll (0.75, 0.5, 0.25 = "
                    "timesteps 750/500/250, the original). Each fires once, at the first step at or below it.",
                ),
                io.Float.Input(
                    "roll_width",
                    default=0.25,
                    min=0.0,
                    max=1.0,
                    step=0.0625,
                    tooltip="Columns per roll as a fraction of the panorama width (0.25 = W/4, 90°, the original).",
                ),
                io.Combo.Input(
                    "output_orientation",
                    options=["input", "lookbeyond"],
                    default="input",
                    tooltip="input: the known region stays where it was. lookbeyond: as sample_with_text.py, input "
                    "column c ends at c - W/4 (longitude shifted by -90°).",
                ),
            ],
            outputs=[io.Latent.Output(tooltip="Raw (unscaled) SD-VAE latents of the panorama band, for VAE Decode.")],
        )

    @classmethod
    def validate_inputs(cls, roll_at: str | None = "") -> bool | str:
        # No **kwargs: ComfyUI 0.3.64 would then skip its min/max/list checks of every input.
        # A linked input arrives as None and is checked when the node runs.
        if roll_at is None:
            return True
        try:
            parse_fractions(roll_at)
        except ValueError as exc:
            return f"roll_at: {exc}"
        return True

    @classmethod
    def execute(
        cls,
        panodit: PanoDiTHandle,
        text,
        steps: int,
        seed: int,
        seam_rolls: bool,
        roll_at: str,
        roll_width: float,
        output_orientation: str,
        known_latent=None,
        known_mask=None,
    ) -> io.NodeOutput:
        node = "Pano360PanoDiTSampler"
        # an unknown output_orientation was silently treated as "input"
        check_widgets(cls, steps=steps, seed=seed, roll_width=roll_width, output_orientation=output_orientation)
        if not isinstance(panodit, PanoDiTHandle):
            raise NodeInputError(node, "panodit", "a PANO360_PANODIT from PanoDiT Loader", describe(panodit))
        cfg = panodit.module.config
        size = cfg.input_size
        feature = _pooled_text(text, cfg.text_dim, node)
        if known_latent is None:
            raw = torch.zeros(feature.shape[0], cfg.in_channels, size // 2, size)
        else:
            raw = latent_samples(known_latent, node, "known_latent")
            if raw.ndim != 4 or raw.shape[1:] != (cfg.in_channels, size // 2, size):
                raise NodeInputError(
                    node, "known_latent", f"latents [B,{cfg.in_channels},{size // 2},{size}] "
                    f"(VAE Encode of a {size * 4}x{size * 8} equirect)", describe(raw)
                )
        if known_mask is None:
            mask = torch.zeros(1, 1, size // 2, size)
        else:
            try:
                mask = latent_mask(mask_to_bhw(known_mask, node, "known_mask"), (size // 2, size))
            except ValueError as exc:
                raise NodeInputError(node, "known_mask", f"a 2:1 MASK ({exc})", describe(known_mask)) from None
            if mask.shape[0] not in (1, raw.shape[0]):
                raise NodeInputError(node, "known_mask", f"batch 1 or {raw.shape[0]}", describe(known_mask))
        if feature.shape[0] not in (1, raw.shape[0]):
            raise NodeInputError(node, "text", f"pooled_output batch 1 or {raw.shape[0]}", describe(feature))
        fractions = parse_fractions(roll_at) if seam_rolls else ()

        _host.load_models([panodit.patcher])
        module, device = panodit.module, _host.torch_device()

        def network(x, t, txt):
            return module(x.to(device, panodit.dtype), t.to(device), txt.to(device, panodit.dtype)).float()

        with torch.inference_mode():
            out = complete_panorama(
                network,
                raw.to(device),
                mask.to(device),
                feature.to(device),
                canvas_size=size,
                steps=steps,
                generator=torch.Generator("cpu").manual_seed(seed),
                roll_fractions=fractions,
                roll_shift_fraction=roll_width,
                lookbeyond_orientation=output_orientation == "lookbeyond",
                callback=_host.progress_callback(steps),
            )
        return io.NodeOutput({"samples": out.to(_host.intermediate_device())})


def _pooled_text(conditioning, dim: int, node: str) -> torch.Tensor:
    """CONDITIONING -> (B, dim) pooled feature of its first entry."""
    try:
        pooled = conditioning[0][1]["pooled_output"]
    except (TypeError, IndexError, KeyError):
        raise NodeInputError(node, "text", "a CONDITIONING with a pooled_output", describe(conditioning)) from None
    if not isinstance(pooled, torch.Tensor) or pooled.ndim != 2 or pooled.shape[-1] != dim:
        raise NodeInputError(
            node, "text", f"pooled_output [B,{dim}] (OpenCLIP ViT-H/14 text encoder, e.g. DFN5B-H/14)", describe(pooled)
        )
    return pooled


class Pano360TextFeatureFromNpy(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360TextFeatureFromNpy",
            display_name="Pano360 Text Feature From .npy",
            category=CATEGORY,
            description=(
                "Reads a text feature saved by Look Beyond's extract_text_features.py (OpenCLIP "
                "ViT-H-14-378-quickgelu / dfn5b encode_text, float32 (1,1024)) and passes it as CONDITIONING "
                "for the PanoDiT Sampler."
            ),
            inputs=[
                io.String.Input(
                    "path",
                    default="panodit/sample_text.npy",
                    tooltip="Path of the .npy file relative to ComfyUI's input folder; shape (1,1024), (1024,) or "
                    "(1,1,1024).",
                ),
            ],
            outputs=[io.Conditioning.Output(tooltip="One-token conditioning whose pooled_output is the feature.")],
        )

    @classmethod
    def validate_inputs(cls, path: str | None = None) -> bool | str:
        if path is None:  # a linked input: checked when the node runs
            return True
        try:
            _input_path(path)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, path: str):
        try:
            return os.path.getmtime(_input_path(path))
        except ValueError:
            return float("nan")

    @classmethod
    def execute(cls, path: str) -> io.NodeOutput:
        full = _input_path(path)
        try:
            array = np.load(full, allow_pickle=False)
        except ValueError as exc:
            raise NodeInputError("Pano360TextFeatureFromNpy", "path", "a numeric .npy array", str(exc)) from None
        if array.size != TEXT_FEATURE_DIM or array.shape[-1] != TEXT_FEATURE_DIM or array.dtype.kind != "f":
            raise NodeInputError(
                "Pano360TextFeatureFromNpy", "path", f"a float array of shape (1,{TEXT_FEATURE_DIM})",
                f"{array.dtype} array of shape {array.shape} in {path}",
            )
        pooled = torch.from_numpy(array.astype(np.float32).reshape(1, TEXT_FEATURE_DIM))
        return io.NodeOutput([[pooled[:, None].clone(), {"pooled_output": pooled}]])


def _input_path(path: str) -> str:
    """Resolve ``path`` inside ComfyUI's input folder; refuse anything outside it."""
    full = _host.input_file(path)
    if not full.endswith(".npy") or not os.path.isfile(full):
        raise ValueError(f"path: no .npy file {path!r} in the input folder {_host.input_directory()}")
    return full


NODES = [Pano360PanoDiTLoader, Pano360PanoDiTSampler, Pano360TextFeatureFromNpy]
