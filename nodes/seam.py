"""Pano360 nodes: seam-aware sampling and decoding for any ComfyUI model.

The maths lives in ``sampling/seam.py`` and ``sampling/hooks.py``; these nodes clone a MODEL and install a hook,
call the VAE twice and blend, or pad the latent around the sphere, code it once and crop.  See docs/seam.md.
"""

from __future__ import annotations

import torch

from ..sampling.hooks import UnetRollWrapper
from ..sampling.seam import (
    ARGUS_BLEND_RATIO,
    ARGUS_ROLL_FRACTION,
    CIRCULAR_COLUMNS,
    RollSchedule,
    circular_decode,
    circular_encode,
    seam_blended_decode,
)
from ._common import NodeInputError, check_widgets, describe, latent_samples, node_id
from ._host import io, log, progress_callback

CATEGORY = "Pano360/seam"


class Pano360SeamRollPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360SeamRollPatch",
            display_name="Seam Roll Patch (rotate during denoising)",
            category=CATEGORY,
            description=(
                "Makes any model (UNet or DiT, image or video) generate equirect panoramas without a "
                "visible 0/360° seam, as Argus does: at each sampling step the model sees the panorama "
                "turned by a growing multiple of a fraction of its width (the latent and any concat "
                "conditioning roll together), and its prediction is turned back, so the sampler, noise "
                "masks and previews stay in your frame and nothing needs un-rolling afterwards. Use with "
                "a 2:1 latent and the Seam-Blended VAE Decode."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to patch. It is cloned; the input stays unchanged."),
                io.Boolean.Input(
                    "enable", default=True,
                    tooltip="Off passes the model through unpatched (for A/B comparisons).",
                ),
                io.Float.Input(
                    "roll_fraction", default=ARGUS_ROLL_FRACTION, min=0.01, max=0.99, step=0.01,
                    tooltip=(
                        "How far the panorama turns each time, as a fraction of its width: 0.25 = 90° "
                        "(Argus). Rolls are whole latent columns (rounded down), so there is no "
                        "interpolation; ControlNet residuals turn with it when the shift divides evenly."
                    ),
                ),
                io.Int.Input(
                    "every_k_steps", default=1, min=1, max=1000,
                    tooltip=(
                        "Turn after every k sampling steps (1 = every step, Argus). Step k·n sees a turn of "
                        "n × roll_fraction. The step is found from the sigma in the sampler's schedule."
                    ),
                ),
            ],
            outputs=[io.Model.Output(tooltip="The cloned model with the seam roll hook installed.")],
        )

    @classmethod
    def execute(cls, model, enable: bool, roll_fraction: float, every_k_steps: int) -> io.NodeOutput:
        check_widgets(cls, roll_fraction=roll_fraction, every_k_steps=every_k_steps)
        if not enable:
            return io.NodeOutput(model)
        try:
            schedule = RollSchedule(fraction=roll_fraction, every=every_k_steps)
        except ValueError as err:
            raise NodeInputError(node_id(cls), "roll_fraction/every_k_steps", "a fraction in (0, 1) and k >= 1",
                                 str(err)) from err
        patched = model.clone()
        previous = patched.model_options.get("model_function_wrapper")
        if previous is not None:
            log.info("%s: wrapping the model function wrapper already installed (%s)",
                     node_id(cls), type(previous).__name__)
        patched.set_model_unet_function_wrapper(UnetRollWrapper(schedule, previous))
        return io.NodeOutput(patched)


class Pano360SeamBlendedVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360SeamBlendedVAEDecode",
            display_name="Seam-Blended VAE Decode",
            category=CATEGORY,
            description=(
                "VAE Decode for equirect panoramas and 360° videos without a seam (Argus's extended "
                "decoding): decodes the latent as is and turned by half its width, turns the second result "
                "back, and blends the two so the 0/360° border comes from the middle of the turned decode. "
                "Costs two decodes. Works for image latents [B,C,H,W] and video latents [B,C,T,H,W]."
            ),
            inputs=[
                io.Latent.Input("samples", tooltip="The equirect latent (width = 2 × height for a full panorama; even latent width)."),
                io.Vae.Input("vae", tooltip="The VAE that matches the model that made the latent."),
                io.Float.Input(
                    "blend_ratio", default=ARGUS_BLEND_RATIO, min=2.0, max=256.0, step=1.0,
                    tooltip=(
                        "The blend ramps are width / ratio pixels wide: 16 (Argus inference) gives 64-px ramps "
                        "on a 1024-px panorama; smaller values blend over a wider band (2 = the whole half)."
                    ),
                ),
                io.Int.Input(
                    "batch_chunk", default=0, min=0, max=4096,
                    tooltip="Decode this many batch items (images, or videos for 5-D latents) per VAE call; 0 = all at once. Lower it to save memory; the progress bar advances per call.",
                ),
            ],
            outputs=[io.Image.Output(tooltip="The decoded panorama(s) [B,H,W,C]; video frames are flattened into the batch, as VAE Decode does.")],
        )

    @classmethod
    def execute(cls, samples, vae, blend_ratio: float, batch_chunk: int) -> io.NodeOutput:
        check_widgets(cls, blend_ratio=blend_ratio, batch_chunk=batch_chunk)
        latent = latent_samples(samples, node_id(cls), "samples")
        if latent.ndim not in (4, 5):
            raise NodeInputError(node_id(cls), "samples", "a LATENT with 4-D or 5-D 'samples'", describe(samples))
        if latent.shape[-1] % 2:
            raise NodeInputError(node_id(cls), "samples", "an even latent width (it is rolled by half)",
                                 f"width {latent.shape[-1]}")
        batch = latent.shape[0]
        chunk = batch_chunk or batch
        calls = 2 * -(-batch // chunk)
        images = seam_blended_decode(vae.decode, latent, blend_ratio, batch_chunk=batch_chunk,
                                     callback=progress_callback(calls))
        if images.ndim == 5:  # video [B,T,H,W,C] -> [B*T,H,W,C], as core VAEDecode
            images = images.reshape(-1, *images.shape[-3:])
        return io.NodeOutput(images)


def _latent_tensor(samples, node: str) -> "torch.Tensor":
    latent = latent_samples(samples, node, "samples")
    if latent.ndim not in (4, 5):
        raise NodeInputError(node, "samples", "a LATENT with 4-D or 5-D 'samples'", describe(samples))
    return latent


def _pad_inputs() -> list:
    return [
        io.Int.Input("wrap_columns", default=CIRCULAR_COLUMNS, min=0, max=64,
                     tooltip="Latent columns wrapped around from the other side before coding (each side); the "
                             "result matches a VAE whose convolutions wrap when this covers its reach. 2 = PanoWan's "
                             "decode, 6 = HunyuanWorld's blend; more costs width (W + 2 × this)."),
        io.Int.Input("pole_rows", default=0, min=0, max=32,
                     tooltip="Latent rows continued over each pole (the row beyond the top is the top row seen "
                             "from the other side: turned by half the width) instead of the VAE's zero padding. "
                             "0 = off. Needs an even latent width."),
    ]


class Pano360CircularVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360CircularVAEDecode",
            display_name="Circular VAE Decode (seamless 360°)",
            category=CATEGORY,
            description=(
                "VAE Decode for equirect latents with no seam from the decoder: the latent is wrapped around "
                "by a few columns on each side (and optionally continued over the poles), decoded once and "
                "cropped, so the decoder sees the sphere's own neighbours at the 0/360° border. One decode "
                "(slightly wider) instead of the Seam-Blended VAE Decode's two. Image latents [B,C,H,W] and "
                "video latents [B,C,T,H,W] of any VAE (Flux, Wan, Qwen-Image, LTX, SD)."
            ),
            inputs=[
                io.Latent.Input("samples", tooltip="The equirect latent (width = 2 × height)."),
                io.Vae.Input("vae", tooltip="The VAE that matches the model that made the latent."),
                *_pad_inputs(),
                io.Int.Input("batch_chunk", default=0, min=0, max=4096,
                             tooltip="Decode this many batch items per VAE call; 0 = all at once."),
            ],
            outputs=[io.Image.Output(tooltip="The decoded panorama(s) [B,H,W,C]; video frames flattened into the batch, as VAE Decode does.")],
        )

    @classmethod
    def execute(cls, samples, vae, wrap_columns: int, pole_rows: int, batch_chunk: int) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, wrap_columns=wrap_columns, pole_rows=pole_rows, batch_chunk=batch_chunk)
        latent = _latent_tensor(samples, node)
        if pole_rows and latent.shape[-1] % 2:
            raise NodeInputError(node, "pole_rows", "0 for an odd latent width (the pole turns rows by half the width)",
                                 str(pole_rows))
        if wrap_columns > latent.shape[-1] or pole_rows > latent.shape[-2]:
            raise NodeInputError(node, "wrap_columns", f"at most the latent's {latent.shape[-1]} columns and "
                                                       f"{latent.shape[-2]} rows", f"{wrap_columns}, {pole_rows}")
        chunk = batch_chunk or latent.shape[0]
        images = circular_decode(vae.decode, latent, wrap_columns, pole_rows, batch_chunk=batch_chunk,
                                 callback=progress_callback(-(-latent.shape[0] // chunk)))
        if images.ndim == 5:  # video [B,T,H,W,C] -> [B*T,H,W,C], as core VAEDecode
            images = images.reshape(-1, *images.shape[-3:])
        return io.NodeOutput(images)


class Pano360CircularVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360CircularVAEEncode",
            display_name="Circular VAE Encode (seamless 360°)",
            category=CATEGORY,
            description=(
                "VAE Encode for equirect panoramas and 360° videos: the pixels are wrapped around by the VAE's "
                "scale × wrap_columns on each side (and optionally continued over the poles), encoded once and "
                "the latent cropped, so the latent has no seam at the 0/360° border."
            ),
            inputs=[
                io.Image.Input("pixels", tooltip="Equirect image(s) [B,H,W,C] or video frames; width and height multiples of the VAE's scale (8 for most)."),
                io.Vae.Input("vae", tooltip="The VAE of the model that will use the latent."),
                *_pad_inputs(),
            ],
            outputs=[io.Latent.Output(tooltip="The latent, as VAE Encode gives it.")],
        )

    @classmethod
    def execute(cls, pixels, vae, wrap_columns: int, pole_rows: int) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, wrap_columns=wrap_columns, pole_rows=pole_rows)
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
            raise NodeInputError(node, "pixels", "an IMAGE [B,H,W,C]", describe(pixels))
        scale = int(vae.spacial_compression_encode())
        h, w = pixels.shape[-3:-1]
        if h % scale or w % scale:
            raise NodeInputError(node, "pixels", f"width and height multiples of the VAE's scale {scale}", f"{w}x{h}")
        if pole_rows and (w // scale) % 2:
            raise NodeInputError(node, "pole_rows", "0 for an odd latent width", str(pole_rows))
        latent = circular_encode(lambda px: vae.encode(px[..., :3]), pixels, scale, wrap_columns, pole_rows)
        return io.NodeOutput({"samples": latent})


NODES = [Pano360SeamRollPatch, Pano360SeamBlendedVAEDecode, Pano360CircularVAEDecode, Pano360CircularVAEEncode]
