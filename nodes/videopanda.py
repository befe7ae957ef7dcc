"""Pano360 nodes: VideoPanda's trained multi-view adapter for Wan 2.1 (docs/videopanda.md).

The loader reads an adapter file (``models/videopanda``, written by ``python -m pano360
train-videopanda``); the Multi-View Sampler and the Autoregressive Extender take it as an
optional input and then denoise the views jointly through the network.  The patches are
ComfyUI's own mechanisms on a clone of the MODEL: object patches on the ``forward`` of the
patch embedding and of every block's self-attention (``models/videopanda_wan.py``), a
``model_function_wrapper`` that adds the conditioning channels and the given cells
(``pipelines/videopanda/adapter.py``), and, when the adapter says so, its shifted flow
schedule as ``model_sampling``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.videopanda_adapter import LoadedAdapter, load_adapter
from ..models.videopanda_wan import comfy_forward_patches
from ..pipelines.videopanda.adapter import adapter_call, unet_wrapper
from ..projection import Rig
from ..sampling.flow import shift_for_tokens
from . import _host
from ._common import NodeInputError, check_widgets, describe
from ._host import io

MODEL_FOLDER = "videopanda"
CATEGORY = "Pano360/sampling"
VIDEOPANDA = io.Custom("PANO360_VIDEOPANDA")
SCHEDULES = ("adapter", "model")
# Default noise-augmentation sigma of carried cells (pipelines/videopanda/train_config.NOISE_AUG_DEFAULT,
# what the training writes into the file header; a design choice, VideoPanda App. A.3 is not public).
DEFAULT_NOISE_AUG = 0.05

_host.register_model_folder(MODEL_FOLDER)


@dataclass(frozen=True)
class VideoPandaHandle:
    """A loaded adapter and how to run it (the ``PANO360_VIDEOPANDA`` value)."""

    name: str
    loaded: LoadedAdapter
    noise_aug_sigma: float
    schedule: str  # "adapter": its shifted flow schedule; "model": the MODEL's own model_sampling


class AdapterRun:
    """One node execution's patches for ``model``: built once, applied to every sampler call
    (every window of the Extender) on a fresh clone."""

    def __init__(self, handle: VideoPandaHandle, model, node: str):
        if not isinstance(handle, VideoPandaHandle):
            raise NodeInputError(node, "videopanda", "a PANO360_VIDEOPANDA from Pano360 VideoPanda Adapter Loader",
                                 describe(handle))
        self.handle, self.node = handle, node
        adapter = handle.loaded.adapter
        try:
            self.patches = comfy_forward_patches(_host.diffusion_model(model), adapter)
        except (ValueError, AttributeError, TypeError) as e:
            raise NodeInputError(node, "model", f"the Wan 2.1 text-to-video model the adapter '{handle.name}' was "
                                 f"trained for", str(e)) from None

    def apply(self, patched, rig: Rig, mask: torch.Tensor | None, samples: torch.Tensor, seed: int):
        """Patch the clone ``patched`` for sampling the grid ``samples`` ``(V, C, T, h, w)`` (raw
        latents holding the given values); returns the patcher to sample with."""
        loaded, cfg = self.handle.loaded, self.handle.loaded.adapter.config
        if samples.ndim != 5:
            raise NodeInputError(self.node, "latent", "Wan video latents [views, C, T, h, w] with a VideoPanda adapter",
                                 describe(samples))
        if loaded.base_lora:
            patched = _host.with_lora(patched, {f"diffusion_model.{k}": v for k, v in loaded.base_lora.items()})
        if loaded.base_weights:
            missing = _host.set_weights(patched, loaded.base_weights)
            if missing:
                raise NodeInputError(self.node, "videopanda", "base weights the MODEL has",
                                     f"{len(missing)} unknown keys, e.g. {missing[:3]}")
        for key, fn in self.patches.items():
            patched.add_object_patch(key, fn)
        v, _, t, h, w = samples.shape
        if self.handle.schedule == "adapter":
            facts = loaded.training
            pt, ph, pw = cfg.patch_size
            tokens = v * (t // pt) * (h // ph) * (w // pw)
            shift = shift_for_tokens(facts.shift, tokens, facts.shift_tokens)
            low = None if facts.shift_low is None else shift_for_tokens(facts.shift_low, tokens, facts.shift_tokens)
            patched.add_object_patch("model_sampling", _host.flow_model_sampling(patched, shift, low))
        held = mask is not None and bool(mask.any())
        call = adapter_call(rig, mask if mask is not None else torch.zeros(v, t), tuple(samples.shape),
                            cfg.ray_encoding, given=_host.latent_to_model_space(patched, samples) if held else None,
                            noise_aug_sigma=self.handle.noise_aug_sigma, seed=seed, patch_t=cfg.patch_size[0])
        patched.set_model_unet_function_wrapper(unet_wrapper(call))
        return patched


class Pano360VideoPandaAdapterLoader(io.ComfyNode):
    """Load a trained VideoPanda adapter for Wan 2.1."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VideoPandaAdapterLoader",
            display_name="Pano360 VideoPanda Adapter Loader",
            category=CATEGORY,
            description="Loads VideoPanda's multi-view adapter for Wan 2.1 T2V (multi-view attention, ray and mask "
                        "conditioning; trained with 'python -m pano360 train-videopanda') from models/videopanda. "
                        "Connect it to the Multi-View Sampler or the Autoregressive Extender: the views are then "
                        "denoised jointly by the network.",
            inputs=[
                io.Combo.Input("adapter", options=_host.model_file_list(MODEL_FOLDER),
                               tooltip="Adapter file in ComfyUI/models/videopanda (.safetensors with the training "
                                       "facts in its header)."),
                io.Float.Input("noise_aug_sigma", default=DEFAULT_NOISE_AUG, min=0.0, max=0.9, step=0.01,
                               tooltip="Noise-augmentation sigma (flow sigma, 0..1) of given cells that are not the "
                                       "input video: the row an autoregressive window carries. The network is told "
                                       "the value (VideoPanda §3.1); raise it to regenerate detail in long videos "
                                       "(§4.6), 0 = carried frames clean. The input video always stays clean."),
                io.Combo.Input("schedule", options=list(SCHEDULES), default="adapter",
                               tooltip="adapter: sample with the adapter's shifted flow schedule (its training shift, "
                                       "scaled to the grid's size); model: keep the MODEL's own (e.g. a "
                                       "ModelSamplingSD3 node's shift)."),
            ],
            outputs=[VIDEOPANDA.Output(display_name="videopanda",
                                       tooltip="The adapter, for Pano360 Multi-View Sampler / Autoregressive Extender.")],
        )

    @classmethod
    def execute(cls, adapter, noise_aug_sigma, schedule) -> io.NodeOutput:
        node = "Pano360VideoPandaAdapterLoader"
        check_widgets(cls, adapter=adapter, noise_aug_sigma=noise_aug_sigma, schedule=schedule)
        path = _host.model_file_path(MODEL_FOLDER, adapter)
        try:
            loaded = load_adapter(path)
        except ValueError as e:
            raise NodeInputError(node, "adapter", "a Pano360 VideoPanda adapter file", str(e)) from None
        return io.NodeOutput(VideoPandaHandle(adapter, loaded, float(noise_aug_sigma), schedule))


NODES = [Pano360VideoPandaAdapterLoader]
