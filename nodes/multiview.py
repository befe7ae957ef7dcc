"""Pano360 nodes: multi-view sampling over a rig, view masks, autoregressive windows.

Training-free VideoPanda on public models: the rig's views are one latent batch (view-major,
docs/conventions.md) sampled by ComfyUI's own sampler; a post-CFG hook on a clone of the
MODEL fuses the views' predicted clean latents on the sphere at every step
(``sampling/fusion.py``).  Given cells (a view mask) are held with ComfyUI's latent
``noise_mask``; noise augmentation releases them for the last steps through the model's
denoise-mask function.  See docs/multiview.md.

With a trained VideoPanda adapter (``videopanda`` input, nodes/videopanda.py) the network
itself denoises the views jointly; sphere fusion is then off unless a Fusion Settings node
turns it on (either space: in ``uniform_sphere`` the adapter denoises the views filled from
the lattice each step).  See docs/videopanda.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics import PanoramaScores, score_panorama, view_disagreement
from ..pipelines.videopanda.autoregressive import PAPER_OVERLAP, PAPER_WINDOW, PAPER_WINDOWS, WindowSchedule, extend
from ..pipelines.videopanda.view_mask import REGIMES, build_view_mask, mask_to_latent_frames, noise_mask_for_latent
from ..projection import Rig, rig_preset, stitch_rig
from ..projection.lattice import erp_size_for_points, lattice_to_erp
from ..sampling.fusion import (
    POLE_PITCH,
    LatentLayout,
    LatticeLayout,
    MultiViewFusion,
    SphereFusion,
    SyncSchedule,
    canvas_size,
    lattice_size,
    pole_region,
    pole_views,
)
from ..sampling.held import given_grid, held_on_lattice, one_view_frames
from ..sampling.hooks import SphereUnetWrapper, UnetRollWrapper, denoise_mask_hook, post_cfg_hook
from ..sampling.windows import window_seed
from . import _host
from ._bundles import FusionSettings, SamplerSettings, WindowSettings
from ._common import NodeInputError, check_widgets, describe, latent_samples
from ._host import io
from .settings import FUSION, SAMPLER, WINDOWS, bundle
from .videopanda import VIDEOPANDA, AdapterRun

RIG = io.Custom("PANO360_RIG")
VIEW_MASK = io.Custom("PANO360_VIEW_MASK")
METRICS = io.Custom("PANO360_METRICS")
CATEGORY = "Pano360/sampling"
DEFAULT_RIG = "videopanda8"

# Equirect latent previews of a lattice state: this many rows (cheap to interpolate, enough
# to judge the layout in ComfyUI's preview).
PREVIEW_ROWS = 32
# The equirect latent of the sphere space is rounded to even rows (DiTs patchify by 2).
ERP_ALIGN = 2

# VideoPanda §4.2: DDIM, 25 steps; CFG 8 text-only, 4 video-conditioned.
PAPER_SAMPLING = SamplerSettings(seed=0, steps=25, cfg=8.0, sampler_name="euler", scheduler="normal")
PAPER_WINDOWS_SETTINGS = WindowSettings(PAPER_WINDOW, PAPER_OVERLAP)
# With a trained adapter the network joins the views; sphere fusion is opt-in (a Fusion Settings node).
ADAPTER_FUSION = FusionSettings(SyncSchedule(strength=0.0))


# ---------------------------------------------------------------------------------------
# Shared schema pieces
# ---------------------------------------------------------------------------------------


def _conditioning_inputs() -> list:
    return [
        io.Model.Input("model", tooltip="The diffusion model (image model for a panorama, video model for a 360° video)."),
        io.Conditioning.Input("positive", tooltip="Prompt for every view (or for the side views when positive_up/positive_down are connected)."),
        io.Conditioning.Input("negative", tooltip="Negative prompt for every view."),
    ]


def _settings_inputs() -> list:
    return [
        SAMPLER.Input("settings", optional=True,
                      tooltip="Seed, steps, CFG, sampler and scheduler (Pano360 Sampler Settings). Not connected: "
                              "VideoPanda's 25 steps, CFG 8, euler, seed 0."),
        FUSION.Input("fusion", optional=True,
                     tooltip="View synchronisation on the sphere and noise augmentation of given cells (Pano360 "
                             "Fusion Settings). Not connected: full synchronisation at every step, given cells held; "
                             "with a VideoPanda adapter: no synchronisation (the network joins the views)."),
        VIDEOPANDA.Input("videopanda", optional=True,
                         tooltip="A trained VideoPanda adapter (Pano360 VideoPanda Adapter Loader) for a Wan 2.1 "
                                 "T2V model: views are denoised jointly by its multi-view attention, conditioned on "
                                 "their rays and the view mask. Not connected: training-free fusion."),
    ]


def _pole_prompt_inputs() -> list:
    return [
        io.Conditioning.Input("positive_up", optional=True,
                              tooltip=f"Optional prompt for the views looking up (pitch >= {POLE_PITCH:g}°: sky). "
                                      "Each extra prompt adds one model pass over the batch per step."),
        io.Conditioning.Input("positive_down", optional=True,
                              tooltip=f"Optional prompt for the views looking down (pitch <= -{POLE_PITCH:g}°: ground). "
                                      "Each extra prompt adds one model pass over the batch per step."),
    ]


def _result_outputs() -> list:
    return [
        io.Latent.Output(display_name="equirect",
                         tooltip="The panorama as an equirect latent [frames,C,H,2H] (video models [1,C,T,H,2H]): the "
                                 "views stitched at latent size (equirect_canvas) or the sphere's points interpolated "
                                 "(uniform_sphere). Decode with Pano360 Circular VAE Decode for a seamless image."),
        METRICS.Output(display_name="metrics",
                       tooltip="Seam and pole scores of the equirect latent, and how much the views disagree where "
                               "they overlap (equirect_canvas: the output views; uniform_sphere: the views' predictions "
                               "at the last step, since the output views are copies of one sphere). Connect to Save "
                               "360° Image/Video to show them next to the saved file's own scores."),
    ]


def _bundles(settings, fusion, adapter: bool, node: str) -> tuple[SamplerSettings, FusionSettings]:
    fusion_settings = bundle(fusion, FusionSettings, ADAPTER_FUSION if adapter else FusionSettings(), node, "fusion")
    if adapter and fusion_settings.noise_augmentation > 0:
        raise NodeInputError(node, "fusion", "noise_augmentation 0 with a VideoPanda adapter (set the adapter's "
                             "noise_aug_sigma on its loader instead)", str(fusion_settings.noise_augmentation))
    return bundle(settings, SamplerSettings, PAPER_SAMPLING, node, "settings"), fusion_settings


def _rig(rig: Rig | None, node: str) -> Rig:
    if rig is None:
        return rig_preset(DEFAULT_RIG)
    if not isinstance(rig, Rig):
        raise NodeInputError(node, "rig", "a PANO360_RIG (from Pano360 Rig)", describe(rig))
    return rig


# ---------------------------------------------------------------------------------------
# Shared sampling call (the Multi-View Sampler and every window of the Extender)
# ---------------------------------------------------------------------------------------


def _mask_condition(cond: list, mask: torch.Tensor, node_id: str, name: str) -> list:
    out = []
    for emb, extras in cond:
        if "mask" in extras or "area" in extras:
            raise NodeInputError(node_id, name, "conditioning without an area or mask (per-view prompts set their own)",
                                 "a conditioning with an area/mask")
        out.append([emb, {**extras, "mask": mask, "mask_strength": 1.0, "set_area_to_bounds": False}])
    return out


def per_view_conditioning(positive, up, down, rig: Rig, layout: LatentLayout, node_id: str):
    """``positive`` for every view, or split by ComfyUI conditioning masks over batch items:
    ``up`` on the views looking up, ``down`` on those looking down, ``positive`` on the rest."""
    if up is None and down is None:
        return positive
    per_view = torch.zeros(layout.views)
    out = []
    for cond, is_up, name in ((up, True, "positive_up"), (down, False, "positive_down")):
        if cond is None:
            continue
        views = pole_views(rig, up=is_up)
        if not views:
            raise NodeInputError(node_id, name, f"a rig with views at |pitch| >= {POLE_PITCH:g}°",
                                 f"rig {rig.name!r} without such views")
        sel = torch.zeros(layout.views)
        sel[views] = 1.0
        per_view += sel
        out += _mask_condition(cond, _item_mask(sel, layout), node_id, name)
    out += _mask_condition(positive, _item_mask(1.0 - per_view, layout), node_id, "positive")
    return out


def _item_mask(per_view: torch.Tensor, layout: LatentLayout) -> torch.Tensor:
    """A ComfyUI conditioning mask over batch items: ``[V*T, h, w]`` (4-D) or ``[V, T, h, w]`` (5-D)."""
    h, w = layout.height, layout.width
    m = per_view.reshape(-1, 1, 1, 1).expand(layout.views, layout.frames, h, w)
    return (m if layout.video else m.reshape(-1, h, w)).contiguous()


def sample_grid(model, positive, negative, rig: Rig, samples: torch.Tensor, mask: torch.Tensor | None,
                settings: SamplerSettings, fusion_settings: FusionSettings, callback=None,
                adapter: AdapterRun | None = None) -> torch.Tensor:
    """Sample a view×frame grid with ComfyUI's sampler, the fusion hook and, when given, a
    VideoPanda adapter (the equirect-canvas space).

    samples: raw latents in the model's layout (after ``fix_empty_latent``) holding the
    given values at the mask's cells.  mask: ``[V, T]`` (1 = given) or None.  Returns raw
    latents, same layout; cells held to the end come out exactly as given.
    """
    layout = LatentLayout.of(samples.shape, rig.num_views)
    held = mask is not None and bool(mask.any())
    until = fusion_settings.hold_until
    patched = model.clone()
    if isinstance(patched.model_options.get("model_function_wrapper"), UnetRollWrapper):
        raise NodeInputError(node, "model", "a model without the Seam Roll Patch (the uniform sphere has no seam "
                                            "to roll; the views turn by themselves)", "a rolled model")
    if adapter is not None:
        patched = adapter.apply(patched, rig, mask, samples, settings.seed)
    if fusion_settings.sync.strength > 0:
        fusion = MultiViewFusion(
            rig, layout, schedule=fusion_settings.sync,
            given=_host.latent_to_model_space(model, samples) if held else None,
            given_mask=mask if held else None, hold_until=until,
        )
        patched.set_model_sampler_post_cfg_function(post_cfg_hook(fusion))
    noise_mask = None
    if held:
        noise_mask = noise_mask_for_latent(mask, tuple(samples.shape))
        if fusion_settings.noise_augmentation > 0:
            patched.set_model_denoise_mask_function(denoise_mask_hook(until))
    out = _host.sample(
        patched, samples, seed=settings.seed, steps=settings.steps, cfg=settings.cfg,
        sampler_name=settings.sampler_name, scheduler=settings.scheduler,
        positive=positive, negative=negative, noise_mask=noise_mask, callback=callback,
    )
    if held and fusion_settings.noise_augmentation == 0:
        # ComfyUI holds these cells up to float rounding of its last Euler step; put them back exactly.
        keep = 1.0 - noise_mask.to(device=out.device, dtype=out.dtype)
        out = torch.lerp(out, samples.to(out), keep)
    return out


@dataclass(frozen=True)
class GridResult:
    """What one multi-view sampling call gives: the views (raw latents in the grid's
    layout), the panorama as raw equirect latent frames ``(T, C, H, W)``, and the views'
    disagreement at the last step (None when not measured)."""

    views: torch.Tensor
    equirect: torch.Tensor
    disagreement: float | None
    lattice: torch.Tensor | None = None  # sphere space: the final lattice values (T, C, N)

    def scores(self) -> PanoramaScores:
        return score_panorama(self.equirect.float(), self.disagreement)


def equirect_latent(frames: torch.Tensor, video: bool) -> torch.Tensor:
    """Raw equirect frames ``(T, C, H, W)`` as a LATENT tensor of the model's kind
    (4-D frames, or one 5-D video ``[1, C, T, H, W]``)."""
    return frames.permute(1, 0, 2, 3)[None].contiguous() if video else frames


def sample_canvas(model, positive, negative, rig: Rig, samples: torch.Tensor, mask: torch.Tensor | None,
                  settings: SamplerSettings, fusion_settings: FusionSettings, callback=None,
                  adapter: AdapterRun | None = None) -> GridResult:
    """:func:`sample_grid`, with the panorama stitched from the views at latent size and the
    output views' disagreement where they overlap (what the stitch averages away)."""
    layout = LatentLayout.of(samples.shape, rig.num_views)
    views = sample_grid(model, positive, negative, rig, samples, mask, settings, fusion_settings, callback,
                        adapter=adapter)
    grid = layout.to_grid(views).float()
    erp_hw = canvas_size(rig, (layout.height, layout.width))
    erp, _ = stitch_rig(grid, rig, erp_hw)
    return GridResult(views, erp, float(view_disagreement(grid, rig, erp_hw).nanmean()))


def per_region_conditioning(positive, up, down, lattice: LatticeLayout, node_id: str):
    """The sphere space's per-view prompts: ``up`` on the lattice points above
    ``POLE_PITCH``, ``down`` below ``-POLE_PITCH``, ``positive`` elsewhere (ComfyUI
    conditioning masks shaped like the lattice latent: ``[T, 1, N]`` / ``[1, T, 1, N]``)."""
    if up is None and down is None:
        return positive

    def as_mask(points: torch.Tensor) -> torch.Tensor:
        m = points.reshape(1, 1, -1).expand(lattice.frames, 1, lattice.n).contiguous()
        return m[None] if lattice.video else m

    covered = torch.zeros(lattice.n)
    out = []
    for cond, is_up, name in ((up, True, "positive_up"), (down, False, "positive_down")):
        if cond is None:
            continue
        region = pole_region(lattice.n, up=is_up)
        covered += region
        out += _mask_condition(cond, as_mask(region), node_id, name)
    out += _mask_condition(positive, as_mask(1.0 - covered), node_id, "positive")
    return out


def sample_sphere(model, positive, negative, rig: Rig, samples: torch.Tensor, mask: torch.Tensor | None,
                  settings: SamplerSettings, fusion_settings: FusionSettings, node: str, callback=None, *,
                  carried: torch.Tensor | None = None, up=None, down=None, adapter: AdapterRun | None = None,
                  adapter_mask: torch.Tensor | None = None) -> GridResult:
    """Sample with the sampler's state on a uniform lattice (``sampling.fusion.SphereFusion``).

    samples: the view grid (raw latents, model layout) holding the given values at the
    mask's cells; only its view size, channels and frames matter otherwise.  The given
    pinhole views are placed on the lattice and held with ComfyUI's noise mask.
    carried: raw lattice values ``(T_c, C, N)`` of the first frames (an earlier window),
    held at every point.  Returns the views of the rig's base pose, the equirect latent and
    the final lattice.

    adapter: a VideoPanda adapter denoising the views of every step jointly (its wrapper runs
    inside the sphere's, on the views filled from the lattice); ``adapter_mask`` ``[V, T]``
    tells it which cells of ``samples`` are given (default ``mask``; the Extender's carried
    row is given there though held on the lattice).  The adapter is told that view ``v`` is
    given, so with given cells the views must not turn (rotation ``none``).
    """
    layout = LatentLayout.of(samples.shape, rig.num_views)
    view_hw = (layout.height, layout.width)
    try:
        fusion = SphereFusion(rig, view_hw, n=lattice_size(rig, view_hw, fusion_settings.lattice_density),
                              rotation=fusion_settings.rotation, distortion_power=fusion_settings.distortion_power,
                              schedule=fusion_settings.sync)
    except ValueError as e:
        raise NodeInputError(node, "rig", "a rig that sees every point of the sphere at every turn", str(e)) from None
    lattice = LatticeLayout(layout.frames, layout.channels, fusion.n, layout.video)
    values = samples.new_zeros(layout.frames, layout.channels, fusion.n)
    held = samples.new_zeros(layout.frames, 1, fusion.n)
    if mask is not None and bool(mask.any()):
        values, held = held_on_lattice(layout.to_grid(samples), mask, rig, fusion.n)
    if carried is not None:
        k = carried.shape[0]
        values[:k], held[:k] = carried.to(values), 1.0
    patched = model.clone()
    if isinstance(patched.model_options.get("model_function_wrapper"), UnetRollWrapper):
        raise NodeInputError(node, "model", "a model without the Seam Roll Patch (the uniform sphere has no seam "
                                            "to roll; the views turn by themselves)", "a rolled model")
    if adapter is not None:
        told = mask if adapter_mask is None else adapter_mask
        if told is not None and bool(told.any()) and fusion.turns > 1:
            raise NodeInputError(node, "fusion", "view rotation 'none' in the uniform_sphere space with a VideoPanda "
                                 "adapter and given cells (the adapter is told which views are given; turned views "
                                 "would no longer be them)", fusion_settings.rotation)
        patched = adapter.apply(patched, rig, told, samples, settings.seed)
    previous = patched.model_options.get("model_function_wrapper")  # the adapter's, or the user's
    patched.set_model_unet_function_wrapper(SphereUnetWrapper(fusion, lattice, previous))
    noise_mask = None
    if bool(held.any()):
        noise_mask = (1.0 - held).reshape(layout.frames, 1, fusion.n)
        if fusion_settings.noise_augmentation > 0:
            patched.set_model_denoise_mask_function(denoise_mask_hook(fusion_settings.hold_until))
    cond = per_region_conditioning(positive, up, down, lattice, node)
    out = _host.sample(
        patched, lattice.latent(values), seed=settings.seed, steps=settings.steps, cfg=settings.cfg,
        sampler_name=settings.sampler_name, scheduler=settings.scheduler,
        positive=cond, negative=negative, noise_mask=noise_mask, callback=callback,
    )
    if noise_mask is not None and fusion_settings.noise_augmentation == 0:
        # ComfyUI holds these points up to float rounding of its last step; put them back exactly.
        out = torch.lerp(out, lattice.latent(values).to(out), 1.0 - lattice.latent(noise_mask).to(out))
    final = lattice.values(out)
    views = fusion.fill(final, fusion.views(0), lattice)
    erp = lattice_to_erp(final.float(), erp_size_for_points(fusion.n, align=ERP_ALIGN))
    return GridResult(views.to(samples.dtype), erp, fusion.last_disagreement, final)


def lattice_preview(model_layout: LatentLayout, rig: Rig, fusion_settings: FusionSettings):
    """``to_preview`` for :func:`_host.sampling_progress` in the sphere space: the first
    lattice latent of the batch as a small equirect latent of the model's kind."""
    view_hw = (model_layout.height, model_layout.width)
    n = lattice_size(rig, view_hw, fusion_settings.lattice_density)
    lattice = LatticeLayout(model_layout.frames, model_layout.channels, n, model_layout.video)

    def to_preview(x0: torch.Tensor) -> torch.Tensor:
        frames = lattice_to_erp(lattice.values(x0[:lattice.items]).float(), (PREVIEW_ROWS, 2 * PREVIEW_ROWS))
        return equirect_latent(frames, model_layout.video).to(x0.dtype)

    return to_preview


def _grid_latent(model, latent: dict, rig: Rig, node_id: str) -> torch.Tensor:
    """The LATENT's samples as a view-major grid for ``rig`` (a batch of 1 is repeated per view)."""
    samples = _host.fix_empty_latent(model, latent_samples(latent, node_id, "latent"))
    if not isinstance(samples, torch.Tensor):  # 0.33: an empty latent of an audio+video model
        raise NodeInputError(node_id, "latent", "a model with image or video latents", describe(samples))
    v = rig.num_views
    if samples.ndim not in (4, 5):
        raise NodeInputError(node_id, "latent", "4-D [views*frames,C,h,w] or 5-D [views,C,T,h,w] latents",
                             describe(samples))
    if samples.shape[0] == 1 and v > 1:
        samples = samples.repeat(v, *([1] * (samples.ndim - 1)))
    try:
        LatentLayout.of(samples.shape, v)
    except ValueError as e:
        raise NodeInputError(node_id, "latent", f"a batch of the rig's {v} views (× frames for 4-D latents)",
                             f"{describe(samples)}: {e}") from None
    return samples


# ---------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------


class Pano360ViewMask(io.ComfyNode):
    """Build a view×frame mask (VideoPanda Fig. 3)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360ViewMask",
            display_name="Pano360 View Mask",
            category=CATEGORY,
            description="Which cells of the view×frame grid are given (VideoPanda Fig. 3): none (text only), "
                        "first_column (one view given as a video), first_row (first frame of every view), "
                        "first_row_and_column (autoregressive continuation) or custom.",
            inputs=[
                io.Combo.Input("regime", options=list(REGIMES), default="none",
                               tooltip="none: text only; first_column: the column_view is given for every frame; "
                                       "first_row: frame 0 of every view; first_row_and_column: both; custom: the grid below."),
                io.Int.Input("views", default=8, min=1, max=64,
                             tooltip="Number of views (8 for videopanda8); ignored when a rig is connected."),
                io.Int.Input("frames", default=16, min=1, max=4096,
                             tooltip="Frames per view: latent frames, or pixel frames of a causal video VAE "
                                     "(the sampler maps 61 pixel frames onto Wan's 16 latent frames)."),
                io.Int.Input("column_view", default=0, min=0, max=63,
                             tooltip="The view that holds the given video. View 0 of videopanda8 looks forward "
                                     "(yaw 0); VideoPanda's own results show it at longitude -90°."),
                io.String.Input("custom", default="", multiline=True,
                                tooltip="For regime 'custom': one line of 0/1 per view (1 = given), or JSON "
                                        "[[1,0,...],...], views × frames."),
                RIG.Input("rig", optional=True, tooltip="Take the number of views from this rig."),
            ],
            outputs=[
                VIEW_MASK.Output(display_name="view_mask", tooltip="[views, frames] mask, 1 = given."),
                io.Mask.Output(display_name="preview", tooltip="The mask as a 1×views×frames MASK image (white = given)."),
            ],
        )

    @classmethod
    def execute(cls, regime, views, frames, column_view, custom, rig=None) -> io.NodeOutput:
        check_widgets(cls, regime=regime, views=views, frames=frames, column_view=column_view)   # regime was blamed on column_view
        if rig is not None and not isinstance(rig, Rig):
            raise NodeInputError("Pano360ViewMask", "rig", "a PANO360_RIG (from Pano360Rig)", describe(rig))
        n = rig.num_views if rig is not None else views
        try:
            mask = build_view_mask(regime, n, frames, column_view=column_view, custom=custom)
        except ValueError as e:
            name = "custom" if regime == "custom" else "column_view"
            raise NodeInputError("Pano360ViewMask", name, "a valid mask for the regime", str(e)) from None
        return io.NodeOutput(mask, mask[None].clone())


class Pano360MultiViewSampler(io.ComfyNode):
    """Sample all views of a rig together, fused on the sphere at every step."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360MultiViewSampler",
            display_name="Pano360 Multi-View Sampler",
            category=CATEGORY,
            description="Samples every view of a rig (default videopanda8) as one batch with ComfyUI's sampler. "
                        "At each step the views' predicted clean latents are averaged on a shared equirect canvas "
                        "and warped back, so overlapping views agree; given cells (view mask) are held. "
                        "Decode with VAE Decode, stitch with Pano360 Equirect Stitcher.",
            inputs=[
                *_conditioning_inputs(),
                io.Latent.Input("latent", tooltip="The grid to sample, view-major: image models [views*frames,C,h,w] "
                                                  "(EmptyLatentImage with batch = views, or 1: repeated per view); video "
                                                  "models [views,C,T,h,w] (e.g. EmptyHunyuanLatentVideo, batch = views)."),
                *_settings_inputs(),
                RIG.Input("rig", optional=True, tooltip="The view rig; videopanda8 when not connected."),
                VIEW_MASK.Input("view_mask", optional=True,
                                tooltip="Which view×frame cells are given. Default: none, or the first column "
                                        "(view 0) when a one-view 'given' latent is connected."),
                io.Latent.Input("given", optional=True,
                                tooltip="Latents of the given cells: the whole grid, or one view's frames (e.g. the "
                                        "VAE-encoded input video) placed at the mask's column (the view given at every frame). Without it the "
                                        "given cells take their values from 'latent'."),
                *_pole_prompt_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="All views×frames, view-major, same layout as the input."),
                     *_result_outputs()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, settings=None, fusion=None, videopanda=None, rig=None,
                view_mask=None, given=None, positive_up=None, positive_down=None) -> io.NodeOutput:
        node = "Pano360MultiViewSampler"
        rig = _rig(rig, node)
        sampling, fusion_settings = _bundles(settings, fusion, videopanda is not None, node)
        adapter = None if videopanda is None else AdapterRun(videopanda, model, node)
        samples = _grid_latent(model, latent, rig, node)
        layout = LatentLayout.of(samples.shape, rig.num_views)
        mask = cls._mask(view_mask, given, layout, node)
        if given is not None:
            samples = cls._with_given(samples, given, layout, mask, node)
        if "noise_mask" in latent:
            _host.log.warning("%s: the latent's noise_mask is not used; a view mask (Pano360 View Mask) says which "
                              "cells are kept", node)
        if fusion_settings.sphere:
            progress = _host.sampling_progress(model, sampling.steps, lattice_preview(layout, rig, fusion_settings))
            result = sample_sphere(model, positive, negative, rig, samples, mask, sampling, fusion_settings, node,
                                   progress(0), up=positive_up, down=positive_down, adapter=adapter)
        else:
            cond = per_view_conditioning(positive, positive_up, positive_down, rig, layout, node)
            progress = _host.sampling_progress(model, sampling.steps)
            result = sample_canvas(model, cond, negative, rig, samples, mask, sampling, fusion_settings, progress(0),
                                   adapter=adapter)
        views = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask", "batch_index")}
        views["samples"] = result.views
        equirect = {"samples": equirect_latent(result.equirect.to(result.views.dtype), layout.video)}
        return io.NodeOutput(views, equirect, result.scores())

    @staticmethod
    def _mask(view_mask, given, layout: LatentLayout, node: str) -> torch.Tensor | None:
        if view_mask is None:
            if given is not None and isinstance(given, dict) and isinstance(given.get("samples"), torch.Tensor) \
                    and one_view_frames(given["samples"], layout) is not None:
                return build_view_mask("first_column", layout.views, layout.frames, column_view=0)
            if given is not None:
                raise NodeInputError(node, "view_mask", "a view mask saying which cells 'given' fills",
                                     "none (only a one-view 'given' defaults to the first column)")
            return None
        if not isinstance(view_mask, torch.Tensor) or view_mask.ndim != 2 or view_mask.shape[0] != layout.views:
            raise NodeInputError(node, "view_mask", f"a [views={layout.views}, frames] view mask", describe(view_mask))
        try:
            return mask_to_latent_frames(view_mask.float(), layout.frames)
        except ValueError as e:
            raise NodeInputError(node, "view_mask", f"{layout.frames} frames (the latent's)", str(e)) from None

    @staticmethod
    def _with_given(samples, given, layout: LatentLayout, mask, node: str) -> torch.Tensor:
        latent_samples(given, node, "given")
        if mask is None or not bool(mask.any()):
            raise NodeInputError(node, "view_mask", "given cells for the 'given' latents", "a mask with none")
        try:
            grid, filled = given_grid(given["samples"].to(samples), layout, mask)
        except ValueError as e:
            raise NodeInputError(node, "given", "the grid's or one view's latents for the mask's given cells",
                                 str(e)) from None
        keep = 1.0 - noise_mask_for_latent(filled, tuple(samples.shape)).to(samples)
        return torch.lerp(samples, grid, keep)  # other given cells keep their values from 'latent'


class Pano360AutoregressiveExtender(io.ComfyNode):
    """Long 360° videos window by window (VideoPanda §3.3)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360AutoregressiveExtender",
            display_name="Pano360 Autoregressive Extender",
            category=CATEGORY,
            description="Generates a long multi-view video in windows with the Multi-View Sampler: the first window "
                        "(16 frames) from text or the input video's view; each next window (15 new frames) is "
                        "conditioned on the previous window's last frame of every view and the video's next frames. "
                        "4 windows give 61 frames. Only one window is on the GPU at a time.",
            inputs=[
                *_conditioning_inputs(),
                io.Latent.Input("latent", tooltip="Any empty latent of the model's kind at the view size (e.g. "
                                                  "EmptyLatentImage, EmptyHunyuanLatentVideo); only its channels, size "
                                                  "and 4-D/5-D kind are used."),
                io.Int.Input("windows", default=PAPER_WINDOWS, min=1, max=1000,
                             tooltip="Number of windows: frames = window + (windows - 1) × (window - overlap); "
                                     "VideoPanda: 4 windows of 16 frames, 1 carried = 61 frames."),
                io.Int.Input("column_view", default=0, min=0, max=63,
                             tooltip="The view that shows the conditioning video (view 0 of videopanda8 looks forward)."),
                *_settings_inputs(),
                WINDOWS.Input("window_settings", optional=True,
                              tooltip="Frames per window and frames carried (Pano360 Window Settings). Not connected: "
                                      "VideoPanda's 16-frame windows with 1 frame carried."),
                RIG.Input("rig", optional=True, tooltip="The view rig; videopanda8 when not connected."),
                io.Latent.Input("video", optional=True,
                                tooltip="Optional conditioning video at one view: latents [T,C,h,w] (image models) or "
                                        "[1,C,T,h,w] (video models) with at least as many frames as the output."),
                *_pole_prompt_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="All views × all frames, view-major."),
                     *_result_outputs()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, windows, column_view, settings=None, fusion=None,
                videopanda=None, window_settings=None, rig=None, video=None, positive_up=None,
                positive_down=None) -> io.NodeOutput:
        node = "Pano360AutoregressiveExtender"
        check_widgets(cls, windows=windows, column_view=column_view)
        rig = _rig(rig, node)
        sampling, fusion_settings = _bundles(settings, fusion, videopanda is not None, node)
        adapter = None if videopanda is None else AdapterRun(videopanda, model, node)
        win = bundle(window_settings, WindowSettings, PAPER_WINDOWS_SETTINGS, node, "window_settings")
        window, overlap = win.window, win.overlap
        if windows > 1 and overlap == 0:
            raise NodeInputError(node, "window_settings", "overlap >= 1 for more than one window (nothing to carry)",
                                 "overlap 0")
        if not 0 <= column_view < rig.num_views:
            raise NodeInputError(node, "column_view", f"0..{rig.num_views - 1}", str(column_view))
        schedule = WindowSchedule(window, overlap, windows)
        if isinstance(latent, dict) and isinstance(latent.get("samples"), torch.Tensor):
            latent = {"samples": latent["samples"][:1]}  # only channels, size and 4-D/5-D kind are used
        template = _grid_latent(model, latent, rig, node)
        layout = LatentLayout(rig.num_views, window, template.shape[1], *template.shape[-2:], template.ndim == 5)
        frames = cls._video(video, layout, schedule, node)
        device = _host.intermediate_device()
        equirect: list[torch.Tensor] = []  # new frames of every window, raw equirect latents
        spread: list[float] = []
        if fusion_settings.sphere:
            progress = _host.sampling_progress(model, sampling.steps * windows,
                                               lattice_preview(layout, rig, fusion_settings))
            carried: list[torch.Tensor] = []  # the last window's lattice

            def sample_window(latents, mask, k):
                s = sampling.with_seed(window_seed(sampling.seed, k))
                given = mask.clone()
                if k > 0:
                    given[:, :overlap] = 0.0  # the carried frames come from the lattice itself
                result = sample_sphere(model, positive, negative, rig, latents, given, s, fusion_settings, node,
                                       progress(k * s.steps), carried=carried[0][-overlap:] if k > 0 else None,
                                       up=positive_up, down=positive_down, adapter=adapter, adapter_mask=mask)
                carried[:] = [result.lattice.to(device)]
                return cls._keep(result, k, overlap, equirect, spread, device)
        else:
            cond = per_view_conditioning(positive, positive_up, positive_down, rig, layout, node)
            progress = _host.sampling_progress(model, sampling.steps * windows)

            def sample_window(latents, mask, k):
                s = sampling.with_seed(window_seed(sampling.seed, k))
                result = sample_canvas(model, cond, negative, rig, latents, mask, s, fusion_settings,
                                       progress(k * s.steps), adapter=adapter)
                return cls._keep(result, k, overlap, equirect, spread, device)

        out = extend(sample_window, schedule, layout, video=frames, column_view=column_view if frames is not None else None,
                     device=device, offload_device=device, callback=lambda done, total: _host.check_interrupt())
        frames_erp = torch.cat(equirect)
        scores = score_panorama(frames_erp.float(), sum(spread) / len(spread) if spread else None)
        return io.NodeOutput({"samples": out}, {"samples": equirect_latent(frames_erp.to(out.dtype), layout.video)},
                             scores)

    @staticmethod
    def _keep(result: GridResult, k: int, overlap: int, equirect: list, spread: list, device) -> torch.Tensor:
        """Keep window ``k``'s new equirect frames and view spread; return its views."""
        equirect.append(result.equirect[overlap if k > 0 else 0:].to(device))
        if result.disagreement is not None:
            spread.append(result.disagreement)
        return result.views

    @staticmethod
    def _video(video, layout: LatentLayout, schedule: WindowSchedule, node: str):
        if video is None:
            return None
        s = latent_samples(video, node, "video")
        cell = (layout.channels, layout.height, layout.width)
        if layout.video and s.ndim == 5 and s.shape[0] == 1:
            s = s[0].permute(1, 0, 2, 3)
        if s.ndim != 4 or tuple(s.shape[1:]) != cell or s.shape[0] < schedule.total_frames:
            want = f"[T>={schedule.total_frames},{cell[0]},{cell[1]},{cell[2]}]"
            if layout.video:
                want = f"[1,{cell[0]},T>={schedule.total_frames},{cell[1]},{cell[2]}]"
            raise NodeInputError(node, "video", f"one view's latents {want}", describe(video["samples"]))
        return s


NODES = [Pano360MultiViewSampler, Pano360ViewMask, Pano360AutoregressiveExtender]
