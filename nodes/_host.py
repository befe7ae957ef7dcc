"""The one place where Pano360 talks to ComfyUI.

Every other module of ``nodes/`` imports ComfyUI's API from here, and ``projection``,
``models`` and ``pipelines`` never import ComfyUI at all.  Keeping the surface in one
small module makes the pack easy to port when ComfyUI's unstable ``comfy_api.latest``
moves, and lets tests see exactly what the pack relies on.

Supports ComfyUI 0.3.64 (2025-10, the oldest) through 0.33 (2026-08, what users run
today); CI runs the host tests on both (docs/testing.md).  What differs between them,
and how the pack stays right on both (feature checks, never version numbers):

* **V3 API** (``comfy_api.latest``): still the current, unstable API in 0.33.  0.33 adds
  schema fields (``search_aliases``, ``is_dev_only``, ``essentials_category``, ...) and
  dynamic inputs (``io.DynamicCombo``, ``io.Autogrow``, ``io.MatchType``) that 0.3.64
  lacks; the pack's nodes use neither, so one schema serves both.  ``/object_info``
  gains ``is_input_list``, ``dev_only``, ``search_aliases``, ...: the recorded schemas
  are per version (``workflows/schemas/<version>/``) and the workflow tools read
  dynamic combos, autogrow and match-type inputs of core nodes (``client/schema.py``).
  The executor passes V3 hidden inputs as a ``V3Data`` dict in 0.33 (a plain dict in
  0.3.64): call nodes through ComfyUI's executor, never ``PREPARE_CLASS_CLONE``.
* **Progress**: 0.33's ``ProgressBar.update_absolute`` throttles the updates between the
  first and the last (``PROGRESS_THROTTLE_*``); :func:`progress_callback` still reports
  every step, and ComfyUI decides what reaches the browser.  Cancel is unchanged
  (``throw_exception_if_processing_interrupted``).
* **Empty latents**: 0.33's ``fix_empty_latent_channels`` also resizes and calls the
  latent format's ``fix_empty_latent``, which may return a ``comfy.nested_tensor.
  NestedTensor`` (audio+video models, e.g. LTX-2, MiniMax H3): not a torch.Tensor.
  Nodes read LATENTs through ``_common.latent_samples`` and name the input when they
  get one (separate the streams first, e.g. LTXV Separate AV Latent).
* **Dynamic VRAM** (0.33, GPUs with comfy-aimdo, on by default): ComfyUI's loaders make
  ``CoreModelPatcher`` patchers, which then stream the weights of ComfyUI-built models
  (``comfy.ops`` layers) on demand (``ModelPatcherDynamic``).  :func:`model_patcher`
  does the same for ComfyUI-built models and keeps the legacy ``ModelPatcher`` for
  plain torch modules (PanoDiT), whose layers ``ModelPatcherDynamic`` cannot stream; on
  the CPU both are the legacy patcher.
* **Multi-GPU work units** (0.33): ``model_function_wrapper`` is called once per device
  clone, from one thread per device, each with its share of the conds and
  ``transformer_options["sample_sigmas"]`` moved to its device.  The pack's wrapper
  (``UnetRollWrapper``) finds the step from ``sample_sigmas`` and keeps no per-device
  state; the post-CFG and denoise-mask hooks run once per step on the output device.
* **Checkpoint saving** (tests): ``BaseModel.state_dict_for_saving`` takes the UNet state
  dict first in 0.33.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Callable

import torch

import comfy.model_management as _mm
import comfy.utils as _utils
import folder_paths as _folder_paths
from comfy_api.latest import ComfyExtension, io, ui

log = logging.getLogger("pano360")

__all__ = [
    "register_batch_routes",
    "ComfyExtension",
    "io",
    "ui",
    "log",
    "InterruptProcessingException",
    "check_interrupt",
    "progress_callback",
    "register_model_folder",
    "model_file_list",
    "model_file_path",
    "load_torch_file",
    "output_directory",
    "temp_directory",
    "input_directory",
    "save_image_path",
    "torch_device",
    "intermediate_device",
    "offload_device",
    "load_models",
    "free_memory",
    "free_bytes",
    "ModelPatcher",
    "model_patcher",
]

InterruptProcessingException = _mm.InterruptProcessingException


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    _mm.throw_exception_if_processing_interrupted()


def progress_callback(total: int, node_id: str | None = None) -> Callable[..., None]:
    """A ``callback(done, total)`` for the pipelines (``sampling.types.ProgressCallback``):
    drives ComfyUI's progress bar to ``done`` of ``total`` and honours an interrupt between
    units of work.  ``total`` here is the bar's length; a pipeline's own total, when given,
    replaces it (the pipeline knows best)."""
    bar = _utils.ProgressBar(total, node_id=node_id)

    def callback(done: int, of: int | None = None, preview=None) -> None:
        check_interrupt()
        bar.update_absolute(done, of or total, preview)

    return callback


def register_model_folder(name: str) -> None:
    """Register ``models/<name>`` so loaders list its model files (and ``/models/<name>``
    serves them).  An entry that already exists (for example from
    ``extra_model_paths.yaml``, which ComfyUI loads before custom nodes) keeps its paths
    and gets the default folder appended.  Idempotent."""
    path = os.path.join(_folder_paths.models_dir, name)
    if name in _folder_paths.folder_names_and_paths:
        _folder_paths.add_model_folder_path(name, path)
        paths, extensions = _folder_paths.folder_names_and_paths[name]
        if not extensions:
            # add_model_folder_path (extra_model_paths.yaml) creates entries with no
            # extension filter, which would list every file; list model files only.
            _folder_paths.folder_names_and_paths[name] = (paths, set(_folder_paths.supported_pt_extensions))
    else:
        _folder_paths.folder_names_and_paths[name] = ([path], set(_folder_paths.supported_pt_extensions))
    _folder_paths.filename_list_cache.pop(name, None)  # a listing made before this change is stale


def model_file_list(name: str) -> list[str]:
    return _folder_paths.get_filename_list(name)


def model_file_path(name: str, filename: str) -> str:
    return _folder_paths.get_full_path_or_raise(name, filename)


def load_torch_file(path: str, device=None):
    """safetensors or a weights-only torch file, through ComfyUI's loader."""
    return _utils.load_torch_file(path, safe_load=True, device=device)


def output_directory() -> str:
    return _folder_paths.get_output_directory()


def temp_directory() -> str:
    return _folder_paths.get_temp_directory()


def input_directory() -> str:
    return _folder_paths.get_input_directory()


def save_image_path(prefix: str, directory: str, width: int = 0, height: int = 0):
    """ComfyUI's numbering of output files: (folder, filename, counter, subfolder, prefix)."""
    return _folder_paths.get_save_image_path(prefix, directory, width, height)


def torch_device():
    return _mm.get_torch_device()


def intermediate_device():
    return _mm.intermediate_device()


def offload_device():
    return _mm.unet_offload_device()


def load_models(patchers: list, memory_required: int = 0) -> None:
    """Let ComfyUI's memory manager place the given ModelPatchers on the device."""
    _mm.load_models_gpu(patchers, memory_required=memory_required)


def free_memory() -> None:
    _mm.soft_empty_cache()


def free_bytes(device=None) -> int:
    """Free memory ComfyUI sees on ``device`` (default: where IMAGE/LATENT outputs live, the
    intermediate device; system RAM for the CPU), ``model_management.get_free_memory``."""
    return int(_mm.get_free_memory(device if device is not None else _mm.intermediate_device()))


def __getattr__(name: str):
    # ModelPatcher is imported lazily: comfy.model_patcher pulls in a lot.  It is the
    # legacy patcher on every version (for plain torch modules); see model_patcher().
    if name == "ModelPatcher":
        from comfy.model_patcher import ModelPatcher

        return ModelPatcher
    raise AttributeError(name)


def model_patcher(model, load_device=None, offload_device=None, comfy_built: bool = True):
    """A ModelPatcher for ``model`` made the way ComfyUI's own loaders make one.

    ``comfy_built``: the model was built by ComfyUI (``model_config.get_model``, layers from
    ``comfy.ops``); it then gets ``comfy.model_patcher.CoreModelPatcher``, which ComfyUI
    0.33 switches to ``ModelPatcherDynamic`` when dynamic VRAM is on.  Plain torch modules
    (``comfy_built=False``) get the legacy ``ModelPatcher``, which moves them whole.
    """
    import comfy.model_patcher as _patcher

    cls = getattr(_patcher, "CoreModelPatcher", _patcher.ModelPatcher) if comfy_built else _patcher.ModelPatcher
    return cls(model, load_device=load_device or _mm.get_torch_device(),
               offload_device=offload_device or _mm.unet_offload_device())


# --- model patches -------------------------------------------------------------------------


def rope_function() -> Callable:
    """ComfyUI's own ``rope(pos, dim, theta)`` (``comfy.ldm.flux.math``), which every
    EmbedND of the Flux/Wan/Lumina/Qwen families calls."""
    import comfy.ldm.flux.math

    return comfy.ldm.flux.math.rope


# --- sampling with ComfyUI's samplers (multi-view, Argus) ------------------------------------


def sampler_names() -> list[str]:
    import comfy.samplers as _samplers

    return list(_samplers.KSampler.SAMPLERS)


def scheduler_names() -> list[str]:
    import comfy.samplers as _samplers

    return list(_samplers.KSampler.SCHEDULERS)


def fix_empty_latent(model, samples):
    """What KSampler does to an empty latent first: give it the model's channel count and,
    for 3-D latent formats (video models), a time axis (``comfy.sample.fix_empty_latent_channels``)."""
    import comfy.sample

    return comfy.sample.fix_empty_latent_channels(model, samples)


def latent_to_model_space(model, samples):
    """Raw VAE latents -> the sampler's latent space (``latent_format.process_in``, as
    ``CFGGuider.inner_sample`` does to the latent image)."""
    return model.get_model_object("latent_format").process_in(samples)


def sampling_progress(model, total_steps: int, to_preview: Callable | None = None) -> Callable[[int], Callable]:
    """One progress bar with latent previews over ``total_steps`` sampler steps that may be
    spread over several sampler calls.  Returns ``for_offset(offset)`` -> a sampler
    callback ``(step, x0, x, steps)`` that reports ``offset + step + 1`` of ``total_steps``
    (like ``latent_preview.prepare_callback``; ComfyUI's progress hook also checks for an
    interrupt on every update).  ``to_preview(x0)`` turns the sampler's x0 into a latent
    the previewer can show (a lattice latent into a small equirect, for example)."""
    import latent_preview

    previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
    bar = _utils.ProgressBar(total_steps)

    def for_offset(offset: int) -> Callable:
        def callback(step, x0, x, steps):
            if previewer and to_preview is not None:
                x0 = to_preview(x0)
            preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
            bar.update_absolute(offset + step + 1, total_steps, preview)

        return callback

    return for_offset


def sample(model, samples, *, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive, negative, noise_mask=None, callback=None):
    """Sample like ``nodes.common_ksampler`` (full denoise): seeded noise from
    ``comfy.sample.prepare_noise``, then ``comfy.sample.sample`` with ComfyUI's samplers,
    schedulers, CFG, model management and the model's patches/hooks.  ``samples`` must
    already have passed :func:`fix_empty_latent`.  Returns raw latents on the
    intermediate device."""
    import comfy.sample

    noise = comfy.sample.prepare_noise(samples, seed)
    return comfy.sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, positive, negative, samples,
        noise_mask=noise_mask, callback=callback, disable_pbar=not _utils.PROGRESS_BAR_ENABLED, seed=seed,
    )


def sample_latent(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                  positive, negative, latent, node_id: str | None = None):
    """:func:`sample` on one (possibly empty) latent tensor with its own progress bar, which
    also honours an interrupt after every step."""
    bar = _utils.ProgressBar(steps, node_id=node_id)

    def callback(step, x0, x, total_steps):
        check_interrupt()
        bar.update_absolute(step + 1, total_steps)

    return sample(model, fix_empty_latent(model, latent), seed=seed, steps=steps, cfg=cfg,
                  sampler_name=sampler_name, scheduler=scheduler, positive=positive, negative=negative,
                  callback=callback)


# --- several passes per step (keyframe inbetweening) ---------------------------------------


def model_object(model, name: str):
    """The module at attribute path ``name`` of a MODEL (its object patch when it has one)."""
    return model.get_model_object(name)


def diffusion_model_keys(model) -> list[str]:
    """The state-dict keys of a MODEL's diffusion model (ComfyUI's key layout, no prefix)."""
    return list(diffusion_model(model).state_dict().keys())


def object_patches(model) -> dict:
    """``{attribute path: object}`` of a MODEL's object patches."""
    return dict(model.object_patches)


def with_object_patches(model, patches: dict):
    """A clone of ``model`` whose modules at the given attribute paths are replaced by the given
    objects while it runs (``ModelPatcher.add_object_patch``)."""
    clone = model.clone()
    for name, obj in patches.items():
        clone.add_object_patch(name, obj)
    return clone


def with_attached_models(model, key: str, models: list):
    """A clone of ``model`` that ComfyUI loads together with ``models`` for sampling
    (``set_additional_models``)."""
    clone = model.clone()
    clone.set_additional_models(key, list(models))
    return clone


def attached_models(model, key: str) -> list:
    return list(model.get_additional_models_with_key(key))


def model_dtype(model):
    return model.model_dtype()


def calculate_sigmas(model, scheduler: str, steps: int):
    """ComfyUI's sigmas for ``scheduler`` over the model's own sigma range."""
    import comfy.samplers as _samplers

    return _samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).cpu()


def multi_pass_guider(model, conds: dict, predict: Callable, extra_models: dict | None = None):
    """A ComfyUI guider (usable with ``SamplerCustomAdvanced``-style sampling) whose prediction is
    ``predict(evaluate, x, timestep)``.

    ``evaluate(model_key, cond_names, x, transformer_options) -> [prediction per cond]`` runs
    ``comfy.samplers.calc_cond_batch`` on the main model (``model_key`` None) or on one of
    ``extra_models`` (attached to ``model`` with :func:`with_attached_models`, so ComfyUI loads
    them), with ``transformer_options`` merged into the model options; ``conds``: ``{name:
    conditioning list}``, processed by ComfyUI as usual (SVD's ``concat_latent_image``, time ids…).
    """
    import comfy.model_patcher as _patcher
    import comfy.samplers as _samplers

    extra = dict(extra_models or {})

    class MultiPassGuider(_samplers.CFGGuider):
        def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
            def evaluate(model_key, cond_names, x_in, transformer_options):
                target = self.inner_model if model_key is None else extra[model_key].model
                options = _patcher.create_model_options_clone(model_options)
                options.setdefault("transformer_options", {}).update(transformer_options)
                return _samplers.calc_cond_batch(target, [self.conds[n] for n in cond_names], x_in, timestep, options)

            return predict(evaluate, x, timestep)

        def inner_sample(self, *args, **kwargs):
            for patcher in extra.values():  # loaded with the main model; make them current for calc_cond_batch
                patcher.pre_run()
            try:
                return super().inner_sample(*args, **kwargs)
            finally:
                for patcher in extra.values():
                    patcher.cleanup()

    guider = MultiPassGuider(model)
    guider.inner_set_conds(conds)
    return guider


def sample_with_guider(guider, latent, sampler_function, sigmas, seed: int, callback=None):
    """Sample ``latent`` (raw, e.g. zeros) with seeded noise (``comfy.sample.prepare_noise``), the
    k-diffusion style ``sampler_function`` (``comfy.samplers.KSAMPLER``) and ``sigmas``.
    callback(step, x0, x, steps) per step.  Returns raw latents (``process_latent_out``)."""
    import comfy.samplers as _samplers

    noise = prepare_noise(latent, seed)
    sampler = _samplers.KSAMPLER(sampler_function)
    return guider.sample(noise, latent, sampler, sigmas, callback=callback,
                         disable_pbar=not _utils.PROGRESS_BAR_ENABLED, seed=seed)

# --- model patches (VideoPanda adapter) -----------------------------------------------------


def diffusion_model(model):
    """The ModelPatcher's network (``model.diffusion_model``), for building object patches."""
    return model.get_model_object("diffusion_model")


def flow_model_sampling(model, shift: float, shift_low: float | None = None):
    """A rectified-flow ``model_sampling`` (``ModelSamplingDiscreteFlow`` + ``CONST``, what the
    ModelSamplingSD3 node builds) whose sigmas follow ``sampling.flow.shifted_sigma`` with
    ``shift`` (and the interpolated ``shift_low``); timesteps stay ``1000 * sigma``.  For
    ``ModelPatcher.add_object_patch("model_sampling", ...)``."""
    import comfy.model_sampling as _ms

    from ..sampling.flow import shifted_sigma

    class ShiftedFlow(_ms.ModelSamplingDiscreteFlow, _ms.CONST):
        def sigma(self, timestep):
            u = timestep / self.multiplier
            return shifted_sigma(torch.as_tensor(u, dtype=torch.float64), shift, shift_low).to(torch.float32)

        def percent_to_sigma(self, percent):
            if percent <= 0.0:
                return 1.0
            if percent >= 1.0:
                return 0.0
            return float(shifted_sigma(torch.tensor(1.0 - percent, dtype=torch.float64), shift, shift_low))

    sampling = ShiftedFlow(model.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1000)  # ComfyUI's flow table: 1000 steps, t = 1000 sigma
    return sampling


def set_weights(model, weights: dict) -> list[str]:
    """Replace weights (ComfyUI's ``"set"`` patch) on a ModelPatcher; keys without the
    ``diffusion_model.`` prefix.  Returns the keys the model did not have."""
    patches = {f"diffusion_model.{k}": ("set", (v,)) for k, v in weights.items()}
    applied = set(model.add_patches(patches, 1.0))
    return sorted(k for k in patches if k not in applied)


def with_lora(model, lora: dict, strength: float = 1.0):
    """``model`` with a LoRA state dict applied through ComfyUI's own LoRA loader
    (``comfy.sd.load_lora_for_models``; kohya ``lora_down``/``lora_up``/``alpha`` keys)."""
    import comfy.sd

    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0.0)
    return patched


# --- output ---------------------------------------------------------------------------------


def metadata_disabled() -> bool:
    """True when ComfyUI runs with ``--disable-metadata`` (no prompt/workflow in saved files)."""
    from comfy.cli_args import args

    return bool(args.disable_metadata)


# ---- models built from state dicts through ComfyUI's own classes ------------------------


def build_model(sd: dict, model_config_name: str, *, unet_config_overrides: dict | None = None, dtype=None,
                source: str = "unet", require: Callable[[dict], str | None] | None = None):
    """A ComfyUI MODEL (ModelPatcher) of ``comfy.supported_models.<model_config_name>`` from a
    diffusion-model state dict in ComfyUI's key layout (no prefix).

    The sizes come from ComfyUI's own detection (``model_detection.detect_unet_config``);
    the model class is chosen by name rather than matched, so smaller test configurations
    work too.  ``require(unet_config)`` may return a message refusing the detected config.
    Every key of the built model must be in ``sd`` and vice versa; otherwise ValueError names
    them (nothing is half-loaded).  dtype: None picks ComfyUI's choice for the device.
    """
    import comfy.model_detection as _detect
    import comfy.supported_models as _supported

    unet_config = _detect.detect_unet_config(sd, "")
    if unet_config is None:
        raise ValueError(f"{source}: ComfyUI does not recognise this model's keys")
    if require is not None:
        refusal = require(unet_config)
        if refusal:
            raise ValueError(f"{source}: {refusal}")
    model_config = getattr(_supported, model_config_name)(unet_config)
    model_config.unet_config.update(unet_config_overrides or {})
    load_device = _mm.get_torch_device()
    offload = _mm.unet_offload_device()
    if dtype is None:
        dtype = _mm.unet_dtype(
            model_params=_utils.calculate_parameters(sd),
            supported_dtypes=list(model_config.supported_inference_dtypes),
            weight_dtype=_utils.weight_dtype(sd),
        )
    manual_cast = _mm.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model(sd, "")
    expected = set(model.diffusion_model.state_dict().keys())
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source}: does not match ComfyUI's {model_config_name} model: missing {missing[:20]}"
            f"{' …' if len(missing) > 20 else ''}, unexpected {unexpected[:20]}{' …' if len(unexpected) > 20 else ''}"
        )
    model = model.to(offload)
    model.load_model_weights(sd, "")
    return model_patcher(model, load_device=load_device, offload_device=offload)


def folder_paths_of(name: str) -> list[str]:
    """The folders registered under a model folder name (``folder_paths.get_folder_paths``)."""
    return list(_folder_paths.get_folder_paths(name))


def share_model_folder(name: str, other: str) -> None:
    """List the files of ComfyUI's ``other`` model folder(s) under ``name`` as well (after
    ``name``'s own paths), as ComfyUI lets ``unet`` and ``diffusion_models`` share files.
    ``name`` must be registered first."""
    for path in _folder_paths.get_folder_paths(other):
        if path not in _folder_paths.get_folder_paths(name):
            _folder_paths.add_model_folder_path(name, path)


# ComfyUI's annotation of a file name with its folder ("name.png [output]", folder_paths).
_ANNOTATIONS = {" [input]": "input", " [output]": "output", " [temp]": "temp"}


def input_file(relative: str) -> str:
    """The real path of ``relative`` inside ComfyUI's input folder (subfolders allowed), or
    inside its output or temp folder when annotated the way ComfyUI annotates file names
    (``"sub/pose.txt [output]"``, ``folder_paths.get_annotated_filepath``).

    Anything that resolves outside that folder (an absolute path elsewhere, ``..``, a symlink
    out) is refused with ValueError: a prompt queued through the API must not read arbitrary
    files of the server.  Existence is the caller's check.
    """
    kind = "input"
    for suffix, name in _ANNOTATIONS.items():
        if isinstance(relative, str) and relative.endswith(suffix):
            relative, kind = relative[: -len(suffix)], name
            break
    getter = {"input": _folder_paths.get_input_directory, "output": _folder_paths.get_output_directory,
              "temp": _folder_paths.get_temp_directory}[kind]
    root = os.path.realpath(getter())
    full = os.path.realpath(os.path.join(root, relative))
    if not relative or os.path.commonpath([root, full]) != root:
        raise ValueError(f"expected a file inside ComfyUI's {kind} folder {root}, got {relative!r}")
    return full


# ---- batch client: the output lookup route (client/marker.py) -----------------------------


def register_batch_routes() -> None:
    """Serve the batch client's output lookup (``client.marker.ROUTE``) on ComfyUI's server, so a
    rerun of ``python -m pano360 batch`` can tell which prompts finished before a restart.
    Idempotent; does nothing when ComfyUI runs without its server (scripts, in-process tests)."""
    import asyncio

    from aiohttp import web

    from ..client import marker

    try:
        from server import PromptServer
    except ImportError:
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is None or any(getattr(r, "path", None) == marker.ROUTE for r in instance.routes):
        return

    @instance.routes.get(marker.ROUTE)
    async def batch_outputs_info(request):
        return web.json_response(marker.info_reply(metadata=not metadata_disabled()))

    @instance.routes.post(marker.ROUTE)
    async def batch_outputs_find(request):
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "expected a JSON body"}, status=400)
        status, reply = await asyncio.get_running_loop().run_in_executor(
            None, marker.find_reply, output_directory(), body, not metadata_disabled())
        return web.json_response(reply, status=status)


# ---- videofrom3d: Flux anchors (SAG), XLabs LoRAs, CogVideoX inbetweening (GGI) ---------------


def with_values(conditioning, **values):
    """A copy of a CONDITIONING with ``values`` set in every entry (as ``node_helpers.conditioning_set_values``)."""
    return [[t[0], {**t[1], **values}] for t in conditioning]


def apply_controlnet(positive, negative, control_net, image, strength: float, vae=None):
    """ComfyUI's ``ControlNetApplyAdvanced`` (whole schedule, both branches).  image: IMAGE [B,H,W,C]."""
    # ComfyUI's own top-level nodes.py (not this pack's package), looked up by name
    comfy_nodes = importlib.import_module("nodes")
    return comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control_net, image, strength,
                                                                   0.0, 1.0, vae=vae)


def vae_encode(vae, image):
    """IMAGE [B,H,W,C] -> raw latents (as ``VAEEncode``)."""
    return vae.encode(image[..., :3])


def vae_decode(vae, samples):
    """Raw latents -> IMAGE frames [N,H,W,C] (video VAEs' time axis folded into the batch)."""
    images = vae.decode(samples)
    return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


def sample_with_sampler_function(model, noise, sigmas, positive, negative, cfg: float, latent, sampler_function,
                                 *, seed: int, cfg_from_step: int = 0, callback=None):
    """``comfy.sample.sample_custom`` with a k-diffusion style ``sampler_function(model, x, sigmas,
    extra_args, callback, disable)`` (ComfyUI's ``KSAMPLER``), explicit sigmas, and CFG only from
    step ``cfg_from_step`` on (the conditional prediction alone before it).  Returns raw latents."""
    import comfy.sample
    import comfy.samplers

    m = model
    if cfg_from_step > 0:
        first = sigmas[: cfg_from_step].to(torch.float32)

        def cfg_function(args):
            sigma = args["sigma"].flatten()[0].to(first.device, torch.float32)
            if bool((first - sigma).abs().min() < 1e-6 * max(1.0, float(sigma))):
                return args["cond"]
            return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

        m = model.clone()
        m.set_model_sampler_cfg_function(cfg_function)
    sampler = comfy.samplers.KSAMPLER(sampler_function)
    return comfy.sample.sample_custom(m, noise, cfg, sampler, sigmas, positive, negative, latent,
                                      callback=callback, disable_pbar=not _utils.PROGRESS_BAR_ENABLED, seed=seed)


def prepare_noise(latent, seed: int):
    """ComfyUI's seeded initial noise for a latent (``comfy.sample.prepare_noise``)."""
    import comfy.sample

    return comfy.sample.prepare_noise(latent, seed)


def lora_patched(model, lora_sd: dict, key_map: dict, strength: float):
    """A clone of ``model`` with a LoRA applied through ComfyUI's own ``comfy.lora.load_lora``
    (patches computed on load, like ``LoraLoaderModelOnly``).  ValueError when a key does not map."""
    import comfy.lora

    patches = comfy.lora.load_lora(lora_sd, key_map)
    m = model.clone()
    applied = m.add_patches(patches, strength)
    if len(applied) != len(patches):
        missing = sorted(str(k) for k in set(patches) - set(applied))
        raise ValueError(f"LoRA: the model has no weights for {missing[:5]}")
    return m


def controlnet_from_state_dict(sd: dict):
    """A ComfyUI CONTROL_NET from a state dict (``comfy.controlnet.load_controlnet_state_dict``)."""
    import comfy.controlnet

    control = comfy.controlnet.load_controlnet_state_dict(sd)
    if control is None:
        raise ValueError("ComfyUI does not recognise this ControlNet's keys")
    return control


def has_native_cogvideox() -> bool:
    """Whether this ComfyUI has a native CogVideoX model (0.33 and later)."""
    try:
        import comfy.ldm.cogvideo.model  # noqa: F401
    except ImportError:
        return False
    return True


def wrap_module(module):
    """A ComfyUI MODEL-like ModelPatcher around any ``nn.Module`` (ComfyUI places it on the device)."""
    import comfy.model_patcher as _patcher

    return _patcher.ModelPatcher(module, load_device=_mm.get_torch_device(), offload_device=_mm.unet_offload_device())


def padded_text_conditioning(clip, text: str, length: int):
    """Encode ``text`` with a T5 CLIP padded to exactly ``length`` tokens (CogVideoX: 226), whatever
    the loader's own padding; returns the (1, length, D) embeddings.  ValueError if the text is longer."""
    tokens = clip.tokenize(text)
    key = "t5xxl" if "t5xxl" in tokens else next(iter(tokens))
    rows = tokens[key]
    if len(rows) != 1:
        raise ValueError(f"text: {sum(len(r) for r in rows)} tokens, more than the {length} CogVideoX reads")
    row = list(rows[0])
    tokenizer = getattr(clip.tokenizer, key, None) or getattr(clip.tokenizer, f"clip_{key}", None)
    pad = getattr(tokenizer, "pad_token", 0)
    while row and row[-1][0] == pad:
        row.pop()
    if len(row) > length:
        raise ValueError(f"text: {len(row)} tokens, more than the {length} CogVideoX reads")
    pad_entry = (pad, 1.0) if len(rows[0][0]) == 2 else (pad, 1.0, 0)
    row += [pad_entry] * (length - len(row))
    tokens = {**tokens, key: [row]}
    return clip.encode_from_tokens(tokens)


# ---- DiffPano: model wrappers and ComfyUI 0.33's MoGe panorama depth -----------------------


def add_diffusion_model_wrapper(model, key: str, wrapper) -> None:
    """Add ``wrapper(executor, *args, **kwargs)`` around the diffusion model's forward on the
    ModelPatcher ``model`` (``WrappersMP.DIFFUSION_MODEL``, ComfyUI 0.3.64 and 0.33); a wrapper
    under the same ``key`` is replaced."""
    import comfy.patcher_extension as _ext

    model.remove_wrappers_with_key(_ext.WrappersMP.DIFFUSION_MODEL, key)
    model.add_wrapper_with_key(_ext.WrappersMP.DIFFUSION_MODEL, key, wrapper)


def moge_panorama_distance(moge_model, image):
    """Distances of an equirect ``IMAGE [1, H, W, 3]`` from ComfyUI's native MoGe panorama
    inference (``comfy_extras/nodes_moge.py``, ComfyUI 0.33+): ``(H, W)``, relative scale.

    ValueError when this ComfyUI has no MoGe nodes."""
    try:
        from comfy_extras.nodes_moge import MoGePanoramaInference
    except ImportError:
        raise ValueError("MoGe panorama depth needs a ComfyUI with the native MoGe nodes "
                         "(comfy_extras/nodes_moge.py, ComfyUI 0.33 or newer)") from None
    merge = max(256, min(8192, int(image.shape[2])))
    out = MoGePanoramaInference.execute(moge_model, image, resolution_level=9, split_resolution=512,
                                        merge_resolution=merge, batch_size=4)
    return out.args[0]["depth"][0]


# ---- video VAEs through diffusers (the CogVideoX VAE on ComfyUI 0.3.64) ------------------------


def vae_dtype(working_dtypes=(torch.bfloat16, torch.float16, torch.float32)):
    """The dtype ComfyUI would run a VAE in on its device (``model_management.vae_dtype``)."""
    return _mm.vae_dtype(_mm.get_torch_device(), list(working_dtypes))


class ModuleVideoVAE:
    """ComfyUI's VAE interface -- ``encode(IMAGE)``, ``decode(latent)`` and the compression facts
    stock nodes read -- around a video VAE ``nn.Module`` that ComfyUI's memory manager places.

    encode_fn(module, frames [T, H, W, C] 0..1) -> raw latents (1, C', T', h, w);
    decode_fn(module, latents) -> frames [B, T, H, W, 3] 0..1 (as ``comfy.sd.VAE`` returns video).
    """

    def __init__(self, module, encode_fn, decode_fn, latent_channels: int, spatial: int = 8, temporal: int = 4):
        holder = torch.nn.Module()  # ModelPatcher sets attributes (``device``) diffusers models make read-only
        holder.vae = module
        self.first_stage_model = module
        self.patcher = wrap_module(holder)
        self._encode, self._decode = encode_fn, decode_fn
        self.latent_channels, self.latent_dim, self.output_channels = latent_channels, 3, 3
        self._spatial, self._temporal = spatial, temporal
        # comfy.sd.VAE's CogVideoX entries: causal time axis (first frame alone, then groups of 4)
        self.downscale_ratio = (lambda a: max(0, (a + temporal - 1) // temporal), spatial, spatial)
        self.upscale_ratio = (lambda a: max(0, a * temporal - (temporal - 1)), spatial, spatial)

    def encode(self, pixels):
        _mm.load_models_gpu([self.patcher])
        return self._encode(self.first_stage_model, pixels).to(_mm.intermediate_device())

    def decode(self, samples):
        _mm.load_models_gpu([self.patcher])
        return self._decode(self.first_stage_model, samples).to(_mm.intermediate_device())

    def spacial_compression_encode(self) -> int:
        return self._spatial

    def spacial_compression_decode(self) -> int:
        return self._spatial

    def temporal_compression_decode(self) -> int:
        return self._temporal

    def throw_exception_if_invalid(self) -> None:
        return None


def native_vae(sd: dict):
    """ComfyUI's own VAE from a state dict (what the stock ``VAELoader`` builds)."""
    import comfy.sd

    vae = comfy.sd.VAE(sd=sd)
    vae.throw_exception_if_invalid()
    return vae
