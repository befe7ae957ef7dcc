"""Pano360 nodes: spherical positional encoding for DiTs and noise on the sphere.

The maths lives in ``models/spherical_rope.py`` and ``sampling/noise.py`` (host-free).
The RoPE node clones a MODEL, replaces its RoPE module with the wrapping one (an object
patch) and installs the model wrapper that tells it the latent's token grid; the noise
node gives SamplerCustomAdvanced a NOISE drawn on the sphere.  See docs/spherical.md.
"""

from __future__ import annotations

from ..models.spherical_rope import MODES, SphericalRoPE, family_of, grid_wrapper
from ..sampling.noise import NOISE_DENSITY, spherical_noise
from ._bundles import SEED_MAX
from . import _host
from ._common import NodeInputError, check_widgets, node_id
from ._host import io

CATEGORY = "Pano360/seam"
WRAPPER_KEY = "pano360_spherical_rope"


class Pano360SphericalRoPE(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360SphericalRoPE",
            display_name="Spherical RoPE (wrap the 0/360° seam)",
            category=CATEGORY,
            description=(
                "Makes a DiT's positional encoding wrap around the panorama: the width axis of its rotary "
                "position embedding becomes periodic over the latent's width, so the first and last token "
                "columns are neighbours exactly like any two adjacent columns (and the model has no 'left "
                "edge' to draw a seam at). For equirect latents (width = 2 × height) of Flux/Chroma, Wan, "
                "Lumina 2 / Z-Image and Qwen-Image models, on ComfyUI 0.3.64 and 0.33. ComfyUI's own "
                "rope_options (ScaleROPE) only scale and shift positions and cannot wrap; their scales are "
                "honoured here."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A DiT model (Flux, Chroma, Wan 2.x, Lumina 2, Z-Image, Qwen-Image). "
                                                "It is cloned; the input stays unchanged."),
                io.Combo.Input("mode", options=["off", *MODES], default="wrap",
                               tooltip="off: the model unchanged (for A/B comparisons). wrap: every width frequency "
                                       "becomes a whole number of turns per panorama (frequencies below half a turn "
                                       "become constant). wrap_pole: also shrinks the width frequencies of each token "
                                       "row by the sine of its colatitude, so tokens near a pole, which are almost the "
                                       "same direction, sit almost at the same position (rows keep the exact wrap; "
                                       "scores across rows are no longer exactly shift invariant)."),
            ],
            outputs=[io.Model.Output(tooltip="The cloned model with the spherical RoPE installed (or the input for off).")],
        )

    @classmethod
    def execute(cls, model, mode: str) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, mode=mode)
        if mode == "off":
            return io.NodeOutput(model)
        network = model.get_model_object("diffusion_model")
        try:
            family = family_of(network)
        except ValueError as e:
            raise NodeInputError(node, "model", "a DiT whose RoPE is ComfyUI's EmbedND", str(e)) from None
        original = getattr(network, family.embedder)
        patched = model.clone()
        patched.add_object_patch(f"diffusion_model.{family.embedder}",
                                 SphericalRoPE(original.dim, original.theta, original.axes_dim, _host.rope_function(),
                                               mode))
        _host.add_diffusion_model_wrapper(patched, WRAPPER_KEY, grid_wrapper(family, network.patch_size))
        return io.NodeOutput(patched)


class SphericalNoise:
    """A ComfyUI NOISE (``seed`` and ``generate_noise(latent)``, the interface of
    comfy_extras' ``Noise_RandomNoise``) whose noise is drawn on the sphere."""

    def __init__(self, seed: int):
        self.seed = seed

    def generate_noise(self, input_latent: dict):
        samples = input_latent["samples"]
        h, w = samples.shape[-2:]
        if w != 2 * h:
            raise ValueError(f"Pano360SphericalNoise: the latent must be an equirect (width = 2 × height), got "
                             f"{w}x{h} (WxH)")
        return spherical_noise(tuple(samples.shape), self.seed).to(samples.dtype)


class Pano360SphericalNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360SphericalNoise",
            display_name="Spherical Noise (equirect latents)",
            category=CATEGORY,
            description=(
                "Initial noise for SamplerCustomAdvanced that lives on the sphere: i.i.d. values on points "
                f"spread uniformly over it ({NOISE_DENSITY:g} per equator pixel), each equirect pixel taking its "
                "nearest point's value. Along the equator every pixel gets its own value; towards the poles, where "
                "an equirect row is a small circle, pixels share values as they share directions, so the noise "
                "is as dense on the sphere everywhere. For training-free equirect generation; keep ComfyUI's "
                "RandomNoise with 360° LoRAs (trained on per-pixel noise)."
            ),
            inputs=[io.Int.Input("noise_seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                                 tooltip="Seed of the noise (same seed, same noise).")],
            outputs=[io.Noise.Output(tooltip="NOISE for SamplerCustomAdvanced (latent width must be 2 × height).")],
        )

    @classmethod
    def execute(cls, noise_seed: int) -> io.NodeOutput:
        check_widgets(cls, noise_seed=noise_seed)
        return io.NodeOutput(SphericalNoise(noise_seed))


NODES = [Pano360SphericalRoPE, Pano360SphericalNoise]
