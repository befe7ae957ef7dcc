"""Pano360 nodes: seam-aware sampling and decoding for any ComfyUI model.

The maths lives in ``sampling/seam.py`` and ``sampling/hooks.py``; these nodes clone a MODEL and install a hook,
or call the VAE twice and blend.  See docs/seam.md.
"""

from __future__ import annotations

from ..sampling.hooks import UnetRollWrapper
from ..sampling.seam import ARGUS_BLEND_RATIO, ARGUS_ROLL_FRACTION, RollSchedule, seam_blended_decode
from ._common import NodeInputError, describe
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
        if not enable:
            return io.NodeOutput(model)
        try:
            schedule = RollSchedule(fraction=roll_fraction, every=every_k_steps)
        except ValueError as err:
            raise NodeInputError(cls.__name__, "roll_fraction/every_k_steps", "a fraction in (0, 1) and k >= 1",
                                 str(err)) from err
        patched = model.clone()
        previous = patched.model_options.get("model_function_wrapper")
        if previous is not None:
            log.info("%s: wrapping the model function wrapper already installed (%s)",
                     cls.__name__, type(previous).__name__)
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
        latent = samples.get("samples") if isinstance(samples, dict) else None
        if latent is None or latent.ndim not in (4, 5):
            raise NodeInputError(cls.__name__, "samples", "a LATENT with 4-D or 5-D 'samples'", describe(samples))
        if latent.shape[-1] % 2:
            raise NodeInputError(cls.__name__, "samples", "an even latent width (it is rolled by half)",
                                 f"width {latent.shape[-1]}")
        batch = latent.shape[0]
        chunk = batch_chunk or batch
        calls = 2 * -(-batch // chunk)
        images = seam_blended_decode(vae.decode, latent, blend_ratio, batch_chunk=batch_chunk,
                                     callback=progress_callback(calls))
        if images.ndim == 5:  # video [B,T,H,W,C] -> [B*T,H,W,C], as core VAEDecode
            images = images.reshape(-1, *images.shape[-3:])
        return io.NodeOutput(images)


NODES = [Pano360SeamRollPatch, Pano360SeamBlendedVAEDecode]
