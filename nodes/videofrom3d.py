"""Pano360 nodes: VideoFrom3D, scene video from a coarse 3D scene, a camera path and a style.

The maths lives in ``pipelines/videofrom3d/`` (preprocessing, SAG, GGI), ``models/ggi_transformer.py``
and ``models/xlabs_lora.py``; these nodes convert ComfyUI's data and call them.  See docs/videofrom3d.md.
"""

from __future__ import annotations

import os

import torch

from ..models.ggi_transformer import (
    DiffusersGGI,
    comfy_unet_config,
    convert_ggi_to_comfy,
    ggi_config,
    merge_peft_lora,
    read_sharded_safetensors,
)
from ..media.atomic import next_counter_name, next_free_folder
from ..models.cogvideox_vae import cogvideox_vae_config, decode_latents, encode_frames, is_native_layout, load_cogvideox_vae
from ..models.xlabs_lora import comfy_lora_inputs, is_xlabs_lora, merge_xlabs_lora
from ..projection import Rig, erp_to_rig, rig_preset
from ..pipelines.videofrom3d.arcs import fit_path_to_arcs, read_arcs, write_arcs
from ..pipelines.videofrom3d.ggi import (
    COGVIDEOX_VAE_SCALE,
    prompt_text,
    GGI_HW,
    GGISettings,
    arc_inputs,
    chain_arcs,
    ggi_condition,
    sample_ggi,
)
from ..pipelines.videofrom3d.mesh import AXES, load_mesh
from ..pipelines.videofrom3d.preprocess import VF3D_PREPROCESS, PreprocessSettings, equirect_edges, preprocess_arcs
from ..pipelines.videofrom3d.render import EdgeSettings
from ..pipelines.videofrom3d.sag import (
    SAGSettings,
    anchor_sequence,
    anchor_size,
    latent_mask,
    sample_flow_with_replacement,
    xflux_timesteps,
)
from ..pipelines.videofrom3d.scene import procedural_town, street_camera_path
from ..pipelines.videofrom3d.style_data import flux_text_embedding, save_text_embedding
from . import _host
from ._common import ANGLE_CONVENTION, NodeInputError, check_widgets, describe, equirect_to_bchw, output_path
from ._host import io, log, progress_callback
from .cameras import CAMERA_PATH
from .multiview import DEFAULT_RIG, RIG

CATEGORY = "Pano360/videofrom3d"
MESH = io.Custom("PANO360_MESH")
ARCS = io.Custom("PANO360_VF3D_ARCS")
GGI_FOLDER = "videofrom3d"  # models/videofrom3d/<name>/ holding checkpoint-1350's transformer/
T5_TOKENS = 226  # CogVideoX: T5 embeddings padded to 226 tokens (pipe_intp2 max_sequence_length)
# The official resolutions (module constants so host tests can run the nodes at toy sizes).
EDGE_HW, CORRES_HW, NOISE = VF3D_PREPROCESS.edge_hw, VF3D_PREPROCESS.corres_hw, VF3D_PREPROCESS.noise
SCENE_SOURCES = ("bundled_street", "mesh_file")

_host.register_model_folder(GGI_FOLDER)


def _ggi_checkpoints() -> list[str]:
    """Folders under models/videofrom3d that hold a diffusers transformer (config.json + shards)."""
    found = []
    for root in _host.folder_paths_of(GGI_FOLDER):
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            for sub in ("transformer", ""):
                if os.path.isfile(os.path.join(root, name, sub, "config.json")):
                    found.append(name)
                    break
    return found


def _ggi_folder(name: str) -> str:
    for root in _host.folder_paths_of(GGI_FOLDER):
        for sub in ("transformer", ""):
            folder = os.path.join(root, name, sub)
            if os.path.isfile(os.path.join(folder, "config.json")):
                return folder
    raise NodeInputError("Pano360VF3DGGILoader", "checkpoint", f"a folder in models/{GGI_FOLDER} with "
                         "transformer/config.json and safetensors shards", repr(name))


def _check_arcs(node: str, arcs) -> list:
    if not isinstance(arcs, list) or not arcs or not all(hasattr(a, "hed") for a in arcs):
        raise NodeInputError(node, "arcs", "VideoFrom3D arcs (Preprocess Scene or Load Arcs)", describe(arcs))
    return arcs


def _anchor_edges(arcs) -> torch.Tensor:
    """The K+1 anchor edge maps: arc 0's first frame, then each arc's last (sag_generate_anchor_view.py)."""
    return torch.stack([arcs[0].hed[0]] + [a.hed[-1] for a in arcs]).float()


def _resize(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """IMAGE [B,H,W,C] resized (bilinear, antialiased when shrinking), as the official code resizes with PIL."""
    if tuple(images.shape[1:3]) == tuple(hw):
        return images
    x = torch.nn.functional.interpolate(images.movedim(-1, 1), size=hw, mode="bilinear", align_corners=False,
                                        antialias=True)
    return x.movedim(1, -1).clamp(0, 1)


# ------------------------------------------------------------------------------- the scene


class Pano360VF3DLoadScene(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DLoadScene",
            display_name="VideoFrom3D Load Scene",
            category=CATEGORY,
            description="A coarse 3D scene: the bundled procedural street (no asset needed), or a mesh file "
                        "(OBJ, GLB/glTF, PLY, STL, OFF) from ComfyUI's input folder, read with trimesh.",
            inputs=[
                io.Combo.Input("source", options=list(SCENE_SOURCES), default="bundled_street",
                               tooltip="bundled_street: a small procedural street shipped with the pack; mesh_file: the "
                                       "file named below."),
                io.String.Input("mesh_file", default="",
                                tooltip="For mesh_file: a path relative to ComfyUI's input folder (subfolders allowed)."),
                io.Combo.Input("axes", options=list(AXES), default="y_up",
                               tooltip="The file's axes: y_up (glTF, Blender's OBJ/PLY export: Y up, -Z forward), z_up "
                                       "(Blender's own frame, many PLY/STL), pack (x right, y up, z forward)."),
                io.Float.Input("scale", default=1.0, min=1e-4, max=1e4, step=0.01,
                               tooltip="Multiplies every vertex (the camera path's positions are in the scaled units)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="For bundled_street: the layout's seed (house sizes, roofs, trees)."),
            ],
            outputs=[MESH.Output("mesh", tooltip="Triangle mesh, pack world axes (x right, y up, z forward).")],
        )

    @classmethod
    def execute(cls, source, mesh_file, axes, scale, seed) -> io.NodeOutput:
        check_widgets(cls, source=source, axes=axes, scale=scale, seed=seed)
        if source == "bundled_street":
            mesh = procedural_town(seed)
        else:
            try:
                path = _host.input_file(mesh_file)
            except ValueError:
                raise NodeInputError(cls.__name__, "mesh_file", "a mesh file inside ComfyUI's input folder",
                                     repr(mesh_file)) from None
            if not os.path.isfile(path):
                raise NodeInputError(cls.__name__, "mesh_file", "an existing mesh file inside ComfyUI's input folder",
                                     repr(mesh_file))
            try:
                mesh = load_mesh(path, axes)
            except ValueError as err:
                raise NodeInputError(cls.__name__, "mesh_file", "a readable triangle mesh", str(err)) from None
        return io.NodeOutput(mesh.transformed(scale) if scale != 1.0 else mesh)


class Pano360VF3DScenePath(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DScenePath",
            display_name="VideoFrom3D Arc Path",
            category=CATEGORY,
            description="A camera path cut into VideoFrom3D arcs: 45 x arcs + 1 frames (46-frame arcs sharing their "
                        "boundary frames). A connected path (Camera Path node with x, y, z keyframes) is resampled "
                        "linearly in time; without one, a dolly along the bundled street.",
            inputs=[
                io.Int.Input("arcs", default=2, min=1, max=32,
                             tooltip="Number of arcs (inbetweening intervals); one more anchor view than arcs."),
                io.Float.Input("fov_deg", default=60.0, min=10.0, max=120.0, step=0.5,
                               tooltip="Horizontal field of view in degrees of the bundled street path (a connected path "
                                       "keeps its own)."),
                CAMERA_PATH.Input("camera_path", optional=True,
                                  tooltip="A path with positions (Camera Path node: keyframes with x, y, z, or a "
                                          "RealEstate10K file)."),
            ],
            outputs=[CAMERA_PATH.Output("arc_path", tooltip="45 x arcs + 1 poses with positions.")],
        )

    @classmethod
    def execute(cls, arcs, fov_deg, camera_path=None) -> io.NodeOutput:
        check_widgets(cls, arcs=arcs, fov_deg=fov_deg)
        if camera_path is None:
            return io.NodeOutput(street_camera_path(45 * arcs + 1, fov_deg=fov_deg))
        if not hasattr(camera_path, "has_position"):
            raise NodeInputError(cls.__name__, "camera_path", "a PANO360_CAMERA_PATH", describe(camera_path))
        try:
            return io.NodeOutput(fit_path_to_arcs(camera_path, arcs))
        except ValueError as err:
            raise NodeInputError(cls.__name__, "camera_path", "a camera path with positions (x, y, z)", str(err)) from None


class Pano360VF3DPreprocess(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DPreprocess",
            display_name="VideoFrom3D Preprocess Scene",
            category=CATEGORY,
            description="What VideoFrom3D's Blender script and mk_edge/mk_noise produce, without Blender: per frame "
                        "HED-like soft edges (1080x720) of the mesh's silhouettes and creases; per arc 12 "
                        "correspondence maps (360x240), corres_end and the flow-warped noise (13x60x90x16). Optionally "
                        "saved in the official arc{k}/ layout to the output folder.",
            inputs=[
                MESH.Input("mesh", tooltip="The coarse scene (VideoFrom3D Load Scene)."),
                CAMERA_PATH.Input("camera_path", tooltip="45 x arcs + 1 poses with positions (VideoFrom3D Arc Path)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of the warped noise."),
                io.Float.Input("line_width", default=2.0, min=0.5, max=8.0, step=0.1,
                               tooltip="Edge line width in pixels at 1080 px width (scaled with the image)."),
                io.Float.Input("crease_deg", default=40.0, min=1.0, max=179.0, step=1.0,
                               tooltip="Neighbouring faces meeting at more than this angle draw a line (Blender Line "
                                       "Art's default crease: 40° between normals)."),
                io.String.Input("save_prefix", default="",
                                tooltip="Empty: keep in memory. Otherwise also write the official layout (arc0/hed, corres, "
                                        "corres_end.png, noises.npy) to output/<prefix>_NNNNN/ (a new folder)."),
            ],
            outputs=[
                ARCS.Output("arcs", tooltip="The arcs (edge maps, correspondences, warped noise)."),
                io.Image.Output("anchor_edges", tooltip="The K+1 anchor edge maps (first frame, then every arc's last)."),
                io.Image.Output("edge_frames", tooltip="Every frame's edge map, 46 per arc (boundary frames repeated)."),
            ],
        )

    @classmethod
    def execute(cls, mesh, camera_path, seed, line_width, crease_deg, save_prefix) -> io.NodeOutput:
        check_widgets(cls, seed=seed, line_width=line_width, crease_deg=crease_deg)
        if not hasattr(mesh, "faces"):
            raise NodeInputError(cls.__name__, "mesh", "a PANO360_MESH", describe(mesh))
        if not hasattr(camera_path, "has_position"):
            raise NodeInputError(cls.__name__, "camera_path", "a PANO360_CAMERA_PATH", describe(camera_path))
        target = output_path(_host.output_directory(), save_prefix, cls.__name__, "save_prefix") if save_prefix else None
        settings = PreprocessSettings(edge_hw=EDGE_HW, corres_hw=CORRES_HW, noise=NOISE,
                                      edges=EdgeSettings(crease_deg=crease_deg, width_px=line_width))
        try:
            k = (camera_path.num_frames - 1) // 45
            cb = progress_callback(max(1, k) * 58)
            arcs = preprocess_arcs(mesh, camera_path, settings, generator=torch.Generator().manual_seed(seed),
                                   device=_host.torch_device(), callback=cb)
        except ValueError as err:
            raise NodeInputError(cls.__name__, "camera_path", "45 x arcs + 1 poses with positions", str(err)) from None
        if target is not None:
            folder = next_free_folder(*os.path.split(target))
            write_arcs(folder, arcs)
            log.info("VideoFrom3D arcs written to %s", folder)
        return io.NodeOutput(arcs, _anchor_edges(arcs), torch.cat([a.hed for a in arcs]).float())


class Pano360VF3DEquirectEdges(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DEquirectEdges",
            display_name="VideoFrom3D Equirect Edges",
            category=CATEGORY,
            description="Beyond the paper: the scene's edge maps as 2:1 equirect panoramas seen from camera path frames "
                        "(the pack's sphere convention, each camera's forward at the centre column), e.g. 360° anchor "
                        "edge maps for a ControlNet through the Multi-View Sampler.",
            inputs=[
                MESH.Input("mesh", tooltip="The coarse scene."),
                CAMERA_PATH.Input("camera_path", tooltip="Poses with positions; every frame gives one panorama."),
                io.Int.Input("height", default=512, min=16, max=4096, step=8,
                             tooltip="Panorama height in pixels (width = 2 x height)."),
                io.Int.Input("every_nth", default=45, min=1, max=1000,
                             tooltip="Use frames 0, n, 2n, ... (45: the anchor frames of the arcs)."),
                io.Float.Input("line_width", default=2.0, min=0.5, max=8.0, step=0.1,
                               tooltip="Edge line width in pixels at 1080 px width (scaled with the image)."),
            ],
            outputs=[io.Image.Output("equirect_edges", tooltip="[N, H, 2H, 3] soft edges on black.")],
        )

    @classmethod
    def execute(cls, mesh, camera_path, height, every_nth, line_width) -> io.NodeOutput:
        check_widgets(cls, height=height, every_nth=every_nth, line_width=line_width)
        if not hasattr(mesh, "faces"):
            raise NodeInputError(cls.__name__, "mesh", "a PANO360_MESH", describe(mesh))
        if not getattr(camera_path, "has_position", False):
            raise NodeInputError(cls.__name__, "camera_path", "a camera path with positions", describe(camera_path))
        frames = list(range(0, camera_path.num_frames, every_nth))
        out = equirect_edges(mesh, camera_path.select(frames), (height, 2 * height), EdgeSettings(width_px=line_width),
                             device=_host.torch_device())
        return io.NodeOutput(out.float().cpu())


class Pano360VF3DControlViews(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DControlViews",
            display_name="VideoFrom3D 360° Control Views",
            category=CATEGORY,
            description="Beyond the paper, 360° scene video: splits equirect edge maps [T] into a rig's V perspective "
                        "views (view-major, V*T images), applies the ControlNet with one edge view per view and frame "
                        "to both conditionings, and gives the matching empty latent grid, so the Multi-View Sampler "
                        "samples every view of every frame under its own edges (e.g. Flux + the XLabs HED ControlNet "
                        "and the style LoRA of the anchor workflow). Stitch the decoded views back into equirect frames.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive conditioning (Flux: after FluxGuidance)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (unused by the sampler at CFG 1)."),
                io.ControlNet.Input("control_net", tooltip="The edge ControlNet (XLabs HED v3 with its LoRA)."),
                io.Vae.Input("vae", tooltip="The image model's VAE: latent channels and downscale of the empty grid "
                                            "(and the ControlNet's, when it needs one)."),
                io.Image.Input("equirect_edges", tooltip="[T, H, 2H, 3] equirect edge maps (VideoFrom3D Equirect Edges)."),
                RIG.Input("rig", optional=True, tooltip="The view rig; videopanda8 (8 views, 90° field of view) when "
                                                        "not connected. " + ANGLE_CONVENTION),
                io.Int.Input("view_size", default=512, min=0, max=4096, step=16,
                             tooltip="Side of every view in pixels (a multiple of 16 for Flux; 0 keeps the rig's sizes)."),
                io.Float.Input("strength", default=0.8, min=0.0, max=2.0, step=0.01,
                               tooltip="ControlNet strength (VideoFrom3D's anchors: 0.8)."),
            ],
            outputs=[
                io.Conditioning.Output("control_positive", display_name="positive",
                                       tooltip="Positive with the per-view ControlNet."),
                io.Conditioning.Output("control_negative", display_name="negative",
                                       tooltip="Negative with the per-view ControlNet."),
                io.Latent.Output("latent", tooltip="Empty latents [V*T, C, h, w], view-major, for the Multi-View Sampler."),
                io.Image.Output("edge_views", tooltip="The V*T edge views (view-major), for preview."),
            ],
        )

    @classmethod
    def execute(cls, positive, negative, control_net, vae, equirect_edges, view_size, strength, rig=None
                ) -> io.NodeOutput:
        node = cls.__name__
        check_widgets(cls, view_size=view_size, strength=strength)
        erp = equirect_to_bchw(equirect_edges, node, "equirect_edges")[:, :3]
        rig = rig_preset(DEFAULT_RIG) if rig is None else rig
        if not isinstance(rig, Rig):
            raise NodeInputError(node, "rig", "a PANO360_RIG (Pano360 Rig)", describe(rig))
        size = (view_size, view_size) if view_size else None
        try:
            h, w = rig.sizes(size)
        except ValueError as err:
            raise NodeInputError(node, "view_size", "a size for rigs whose views differ in size", str(err)) from None
        if not hasattr(vae, "spacial_compression_encode") or not hasattr(vae, "latent_channels"):
            raise NodeInputError(node, "vae", "a VAE (Load VAE)", describe(vae))
        f = int(vae.spacial_compression_encode())
        if h % (2 * f) or w % (2 * f):
            raise NodeInputError(node, "view_size", f"views whose sides are multiples of {2 * f} (VAE {f}x, 2x2 "
                                 "patches)", f"{w}x{h}")
        views = erp_to_rig(erp.float(), rig, size, mode="bilinear", callback=progress_callback(1))
        images = views.movedim(1, -1).clamp(0, 1).contiguous()
        pos, neg = _host.apply_controlnet(positive, negative, control_net, images, strength, vae=vae)
        latent = torch.zeros(images.shape[0], int(vae.latent_channels), h // f, w // f)
        return io.NodeOutput(pos, neg, {"samples": latent}, images)


class Pano360VF3DLoadArcs(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DLoadArcs",
            display_name="VideoFrom3D Load Arcs",
            category=CATEGORY,
            description="Reads VideoFrom3D's official preprocessed folder as it is: arc0/, arc1/, ... each with hed/NNNN.png, "
                        "corres/NNNN.png (16-bit), corres_end.png and noises.npy (e.g. the authors' assets/sampleA).",
            inputs=[
                io.String.Input("folder", default="sampleA",
                                tooltip="The folder holding arc0/, relative to ComfyUI's input folder (or 'name [output]')."),
            ],
            outputs=[
                ARCS.Output("arcs", tooltip="The arcs as read."),
                io.Image.Output("anchor_edges", tooltip="The K+1 anchor edge maps."),
            ],
        )

    @classmethod
    def execute(cls, folder) -> io.NodeOutput:
        try:
            path = _host.input_file(folder)
            arcs = read_arcs(path)
        except ValueError as err:
            raise NodeInputError(cls.__name__, "folder", "a folder with VideoFrom3D's arc0/, arc1/, ... layout",
                                 str(err)) from None
        return io.NodeOutput(arcs, _anchor_edges(arcs))


# ------------------------------------------------------------------------- SAG (Flux anchors)


class Pano360XLabsLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360XLabsLoraLoader",
            display_name="XLabs Flux LoRA Loader",
            category=CATEGORY,
            description="Applies an XLabs/x-flux format LoRA (double_blocks.N.processor.qkv_lora1..., e.g. a VideoFrom3D "
                        "style LoRA) to a Flux MODEL through ComfyUI's own LoRA patches.",
            inputs=[
                io.Model.Input("model", tooltip="A Flux MODEL (Load Diffusion Model)."),
                io.Combo.Input("lora_name", options=_host.model_file_list("loras"),
                               tooltip="An XLabs-format LoRA in models/loras (VideoFrom3D: loras/<name>/checkpoint-400/"
                                       "lora.safetensors)."),
                io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.01,
                               tooltip="W + strength x up x down. VideoFrom3D runs at 1 (its --lora_weight scales both "
                                       "factors, i.e. strength = lora_weight squared)."),
            ],
            outputs=[io.Model.Output(tooltip="The MODEL with the LoRA patches.")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength) -> io.NodeOutput:
        check_widgets(cls, strength=strength)
        sd = _host.load_torch_file(_host.model_file_path("loras", lora_name))
        if not is_xlabs_lora(sd):
            raise NodeInputError(cls.__name__, "lora_name", "an XLabs-format Flux LoRA", f"{lora_name} with keys "
                                 f"{sorted(sd)[:3]}")
        lora_sd, key_map = comfy_lora_inputs(sd, prefix="diffusion_model.")
        return io.NodeOutput(_host.lora_patched(model, lora_sd, key_map, strength))


class Pano360XLabsControlNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360XLabsControlNetLoader",
            display_name="XLabs ControlNet Loader (+LoRA)",
            category=CATEGORY,
            description="Loads an XLabs Flux ControlNet (e.g. flux-hed-controlnet-v3) with an optional XLabs-format "
                        "ControlNet LoRA merged into its weights (VideoFrom3D's controlnet.lora.safetensors).",
            inputs=[
                io.Combo.Input("control_net_name", options=_host.model_file_list("controlnet"),
                               tooltip="An XLabs Flux ControlNet file in models/controlnet (VideoFrom3D: flux-hed-controlnet-v3)."),
                io.Combo.Input("lora_name", options=["none"] + _host.model_file_list("loras"), default="none",
                               tooltip="An XLabs-format ControlNet LoRA in models/loras, or none."),
                io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.01, tooltip="LoRA strength."),
            ],
            outputs=[io.ControlNet.Output(tooltip="The ControlNet, LoRA merged.")],
        )

    @classmethod
    def execute(cls, control_net_name, lora_name, strength) -> io.NodeOutput:
        check_widgets(cls, strength=strength)
        sd = _host.load_torch_file(_host.model_file_path("controlnet", control_net_name))
        if lora_name != "none":
            lora = _host.load_torch_file(_host.model_file_path("loras", lora_name))
            try:
                sd = merge_xlabs_lora(sd, lora, strength)
            except ValueError as err:
                raise NodeInputError(cls.__name__, "lora_name", "an XLabs ControlNet LoRA for this ControlNet",
                                     str(err)) from None
        return io.NodeOutput(_host.controlnet_from_state_dict(sd))


class Pano360VF3DAnchors(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DAnchors",
            display_name="VideoFrom3D Anchor Views (SAG)",
            category=CATEGORY,
            description="Sparse appearance-guided sampling: every anchor view with Flux + the HED ControlNet from the "
                        "same noise; from the second on, the previous anchor warped into the view (corres_end) pins "
                        "the latent outside the holes during the first steps. x-flux's schedule (explicit sigmas), "
                        "true CFG from step 1.",
            inputs=[
                io.Model.Input("model", tooltip="Flux-dev MODEL, usually with the style LoRA (XLabs Flux LoRA Loader)."),
                io.ControlNet.Input("control_net", tooltip="XLabs HED ControlNet v3 (with its LoRA)."),
                io.Vae.Input("vae", tooltip="Flux VAE (ae.safetensors)."),
                io.Conditioning.Input("positive", tooltip="Flux text conditioning (VideoFrom3D: an empty prompt)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning for true CFG (VideoFrom3D: empty)."),
                ARCS.Input("arcs", tooltip="The arcs (their first/last edge maps and corres_end)."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="One seed: every anchor starts from the same noise."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="Sampling steps (VideoFrom3D: 25)."),
                io.Int.Input("num_replacement", default=12, min=0, max=200,
                             tooltip="Steps during which the warped previous anchor is pinned (VideoFrom3D: 12 of 25)."),
                io.Float.Input("guidance", default=4.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Flux distilled guidance, set on both conditionings (VideoFrom3D: 4)."),
                io.Float.Input("true_cfg", default=3.5, min=1.0, max=30.0, step=0.1,
                               tooltip="CFG against the negative from step 1 (VideoFrom3D: 3.5; with equal prompts it does nothing)."),
                io.Float.Input("control_strength", default=0.8, min=0.0, max=2.0, step=0.01,
                               tooltip="HED ControlNet weight (VideoFrom3D: 0.8)."),
            ],
            outputs=[io.Image.Output("anchors", tooltip="The K+1 anchor views, 1072x720 for the official 1080x720 maps.")],
        )

    @classmethod
    def execute(cls, model, control_net, vae, positive, negative, arcs, seed, steps, num_replacement, guidance,
                true_cfg, control_strength) -> io.NodeOutput:
        check_widgets(cls, seed=seed, steps=steps, num_replacement=num_replacement, guidance=guidance,
                      true_cfg=true_cfg, control_strength=control_strength)
        arcs = _check_arcs(cls.__name__, arcs)
        if num_replacement > steps:
            raise NodeInputError(cls.__name__, "num_replacement", f"at most steps ({steps})", str(num_replacement))
        settings = SAGSettings(steps=steps, num_replacement=num_replacement, guidance=guidance, true_cfg=true_cfg,
                               control_strength=control_strength)
        hed = _anchor_edges(arcs)
        w, h = anchor_size(hed.shape[2], hed.shape[1])
        hed = _resize(hed, (h, w))
        sigmas = xflux_timesteps(steps, w, h).float()
        pos = _host.with_values(positive, guidance=guidance)
        neg = _host.with_values(negative, guidance=guidance)
        bar = progress_callback(hed.shape[0] * steps)
        done = [0]

        def sample(i, hed_i, warped, mask):
            p, n = _host.apply_controlnet(pos, neg, control_net, hed_i[None], control_strength, vae=vae)
            empty = torch.zeros(1, 16, h // 8, w // 8)
            noise = _host.prepare_noise(empty, seed)
            warped_latent = lat_mask = None
            if warped is not None:
                warped_latent = _host.latent_to_model_space(model, _host.vae_encode(vae, warped[None]))
                lat_mask = latent_mask(mask.numpy(), (h // 8, w // 8))

            def sampler_function(model_k, x, sig, extra_args=None, callback=None, disable=None):
                s_in = x.new_ones(x.shape[0])

                def denoise(xx, sigma, step):
                    return model_k(xx, sigma * s_in, **(extra_args or {}))

                def report(d, total):
                    done[0] += 1
                    bar(done[0], hed.shape[0] * steps)

                wl = None if warped_latent is None else warped_latent.to(x)
                return sample_flow_with_replacement(denoise, x, sig, warped=wl, mask=lat_mask,
                                                    num_replacement=num_replacement, callback=report)

            latent = _host.sample_with_sampler_function(model, noise, sigmas, p, n, true_cfg, empty, sampler_function,
                                                        seed=seed, cfg_from_step=settings.cfg_start_step)
            return _host.vae_decode(vae, latent)[0, ..., :3].float().cpu()

        corres = [a.corres_end for a in arcs]
        return io.NodeOutput(anchor_sequence(hed, corres, sample, settings))


class Pano360VF3DSaveTextEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DSaveTextEmbedding",
            display_name="VideoFrom3D Save Text Embedding",
            category=CATEGORY,
            description="Saves a Flux text conditioning (T5 tokens and CLIP pooled vector) as a safetensors file in "
                        "the output folder, for the style-LoRA trainer (python -m pano360 train-videofrom3d-lora "
                        "--text-embedding FILE). VideoFrom3D trains with an empty prompt: CLIP Text Encode with an "
                        "empty text on DualCLIPLoader (t5xxl + clip_l, type flux).",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="Flux conditioning of one prompt (CLIP Text Encode on a flux "
                                                              "DualCLIPLoader)."),
                io.String.Input("filename_prefix", default="vf3d_text_embedding",
                                tooltip="File name prefix inside the output folder (subfolders allowed); ComfyUI's "
                                        "numbering is appended (_00001_.safetensors)."),
            ],
            outputs=[io.String.Output("path", tooltip="The written file's full path (give it to --text-embedding).")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, conditioning, filename_prefix) -> io.NodeOutput:
        try:
            txt, vec = flux_text_embedding(conditioning)
        except ValueError as err:
            raise NodeInputError(cls.__name__, "conditioning", "one Flux conditioning (T5 tokens + pooled_output)",
                                 str(err)) from None
        output_path(_host.output_directory(), filename_prefix, cls.__name__, "filename_prefix")
        folder, name, counter, _, _ = _host.save_image_path(filename_prefix, _host.output_directory())
        target = os.path.join(folder, f"{name}_{counter:05}_.safetensors")
        path = save_text_embedding(target, txt, vec, next_free=next_counter_name)
        log.info("VideoFrom3D text embedding written to %s", path)
        return io.NodeOutput(path, ui={"text": [path]})


# ------------------------------------------------------------------------ GGI (inbetweening)


class Pano360VF3DGGILoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DGGILoader",
            display_name="VideoFrom3D GGI Loader",
            category=CATEGORY,
            description="Loads GGI's checkpoint-1350 (a 48-channel CogVideoX-5B-I2V with a PEFT LoRA r=2048, sharded "
                        "safetensors) and merges the LoRA. ComfyUI 0.33+: ComfyUI's native CogVideoX model (keys "
                        "converted, rotary kept, positions unscaled as in the official pipeline); 0.3.64: diffusers' "
                        "CogVideoXTransformer3DModel behind a MODEL wrapper.",
            inputs=[
                io.Combo.Input("checkpoint", options=_ggi_checkpoints(),
                               tooltip=f"A folder in models/{GGI_FOLDER} holding transformer/config.json and the "
                                       "*.safetensors shards (e.g. checkpoint-1350)."),
                io.Combo.Input("weight_dtype", options=["default", "bf16", "fp16", "fp32"], default="default",
                               tooltip="Weights' dtype on the device (default: ComfyUI's choice; the authors ran bf16)."),
            ],
            outputs=[io.Model.Output(tooltip="The GGI transformer as a MODEL (for VideoFrom3D Inbetween).")],
        )

    @classmethod
    def execute(cls, checkpoint, weight_dtype) -> io.NodeOutput:
        check_widgets(cls, weight_dtype=weight_dtype)
        folder = _ggi_folder(checkpoint)
        dtype = {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[weight_dtype]
        try:
            cfg = ggi_config(os.path.join(folder, "config.json"))
            sd = merge_peft_lora(read_sharded_safetensors(folder))
        except ValueError as err:
            raise NodeInputError(cls.__name__, "checkpoint", "GGI's transformer folder", str(err)) from None
        return io.NodeOutput(load_ggi_model(cfg, sd, dtype, source=folder))


def load_ggi_model(cfg: dict, sd: dict, dtype=None, source: str = "ggi"):
    """The merged GGI state dict (diffusers keys) as a MODEL on this host."""
    if _host.has_native_cogvideox():
        overrides = {k: v for k, v in comfy_unet_config(cfg).items() if k != "image_model"}
        return _host.build_model(convert_ggi_to_comfy(sd), "CogVideoX_Inpaint", unet_config_overrides=overrides,
                                 dtype=dtype, source=source)
    return _host.wrap_module(DiffusersGGI.from_state_dict(cfg, sd, dtype))


VAE_BACKENDS = ("auto", "diffusers")


def load_cogvideox_vae_for_host(sd: dict, tiling: bool = True, backend: str = "auto", source: str = "vae"):
    """A CogVideoX VAE (diffusers-key state dict) as a ComfyUI VAE on this host.  backend "auto":
    ComfyUI's native one where it has it and builds this layout (0.33+, CogVideoX-5B/2B sizes), else
    diffusers' ``AutoencoderKLCogVideoX`` behind ComfyUI's VAE interface (0.3.64, other layouts);
    "diffusers": diffusers on any host (the official pipeline's VAE, its frame chunking)."""
    config = cogvideox_vae_config(sd)
    if backend == "auto" and _host.has_native_cogvideox() and is_native_layout(config):
        return _host.native_vae(sd)
    vae = load_cogvideox_vae(sd, _host.vae_dtype(), tiling=tiling, source=source)
    reason = ("asked for" if backend == "diffusers" else "ComfyUI has no native CogVideoX"
              if not _host.has_native_cogvideox() else "a layout ComfyUI does not build")
    log.info("CogVideoX VAE %s through diffusers (%s)", source, reason)
    return _host.ModuleVideoVAE(vae, encode_frames, decode_latents, config["latent_channels"])


class Pano360VF3DCogVideoXVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DCogVideoXVAELoader",
            display_name="VideoFrom3D CogVideoX VAE Loader",
            category=CATEGORY,
            description="Loads CogVideoX's VAE (vae/diffusion_pytorch_model.safetensors of CogVideoX-5b-I2V, copied "
                        "into models/vae) on any ComfyUI: 0.33+ builds its native CogVideoX VAE (as Load VAE does); "
                        "0.3.64, which has none, runs diffusers' AutoencoderKLCogVideoX behind ComfyUI's VAE "
                        "interface (works with VAE Encode / VAE Decode and the GGI Inbetween node).",
            inputs=[
                io.Combo.Input("vae_name", options=_host.model_file_list("vae"),
                               tooltip="The CogVideoX VAE file in models/vae (diffusers keys, e.g. renamed "
                                       "cogvideox_5b_i2v_vae.safetensors)."),
                io.Boolean.Input("tiling", default=True,
                                 tooltip="diffusers backend only: tiled, sliced encode/decode as ggi.py runs it (less "
                                         "memory; ComfyUI's native VAE manages memory itself)."),
                io.Combo.Input("backend", options=list(VAE_BACKENDS), default="auto",
                               tooltip="auto: ComfyUI's native CogVideoX VAE where it exists (0.33+), diffusers on "
                                       "0.3.64. diffusers: the official pipeline's implementation on any host (0.33's "
                                       "native VAE encodes 49-frame clips in other frame chunks and decodes "
                                       "rolling, which changes the latents slightly; see docs/videofrom3d.md)."),
            ],
            outputs=[io.Vae.Output(tooltip="A VAE for VideoFrom3D Inbetween, VAE Encode and VAE Decode.")],
        )

    @classmethod
    def execute(cls, vae_name, tiling, backend="auto") -> io.NodeOutput:
        check_widgets(cls, backend=backend)
        try:
            path = _host.model_file_path("vae", vae_name)
        except FileNotFoundError:
            raise NodeInputError(cls.__name__, "vae_name", "a file in models/vae", repr(vae_name)) from None
        sd = _host.load_torch_file(path)
        try:
            return io.NodeOutput(load_cogvideox_vae_for_host(sd, bool(tiling), backend, source=vae_name))
        except ValueError as err:
            raise NodeInputError(cls.__name__, "vae_name", "CogVideoX's VAE (diffusers keys)", str(err)) from None


def _velocity(model, context: torch.Tensor):
    """``velocity(x (2B, 48, T, h, w), t (2B,))`` for a GGI MODEL, native or diffusers."""
    _host.load_models([model])
    device = _host.torch_device()
    module = model.model
    if isinstance(module, DiffusersGGI):
        def run(x, t):
            return module(x.to(device), t.to(device), context.to(device)).float()
    else:
        net, dtype = module.diffusion_model, module.get_dtype()

        def run(x, t):
            return net(x.to(device, dtype), t.to(device), context.to(device, dtype)).float()
    return run


class Pano360VF3DTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DTextEncode",
            display_name="VideoFrom3D Text Encode (T5, 226 tokens)",
            category=CATEGORY,
            description="Encodes text with a T5-XXL CLIP padded to exactly 226 tokens, as CogVideoX was trained "
                        "(whatever the loader's own padding, so it works with any T5 loader). VideoFrom3D prompts GGI "
                        "with a BLIP-2 caption of the first anchor: connect a caption (e.g. ComfyUI 0.33's Generate "
                        "Text on the first anchor) to 'caption', or type a description in 'text'.",
            inputs=[
                io.Clip.Input("clip", tooltip="T5-XXL (Load CLIP: type cogvideox, or ltxv/sd3/mochi with the T5 file)."),
                io.String.Input("text", default="", multiline=True,
                                tooltip="The prompt when no caption is connected (VideoFrom3D: a caption of the first "
                                        "anchor; empty for the negative)."),
                io.String.Input("caption", optional=True, force_input=True,
                                tooltip="Optional: a caption of the first anchor from a captioning node (ComfyUI 0.33+: "
                                        "Generate Text with a vision-language text encoder); replaces 'text' when "
                                        "connected."),
            ],
            outputs=[io.Conditioning.Output(tooltip="(1, 226, 4096) T5 embeddings.")],
        )

    @classmethod
    def execute(cls, clip, text, caption=None) -> io.NodeOutput:
        if caption is not None and not isinstance(caption, str):
            raise NodeInputError(cls.__name__, "caption", "a STRING", describe(caption))
        prompt = prompt_text(text, caption)
        try:
            out = _host.padded_text_conditioning(clip, prompt, T5_TOKENS)
        except ValueError as err:
            raise NodeInputError(cls.__name__, "caption" if caption is not None else "text",
                                 f"at most {T5_TOKENS} T5 tokens", str(err)) from None
        cond = out[0] if isinstance(out, tuple) else out
        return io.NodeOutput([[cond, {}]])


class Pano360VF3DInbetween(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360VF3DInbetween",
            display_name="VideoFrom3D Inbetween (GGI)",
            category=CATEGORY,
            description="Geometry-guided generative inbetweening: each arc between two anchors with the 48-channel "
                        "CogVideoX at 480x720x49 (anchors in latent frames 0 and 12, the arc's HED video, warped noise "
                        "mixed at degradation), CogVideoX DDIM with CFG; arcs chained (46 frames each, the last "
                        "generated frame starts the next arc).",
            inputs=[
                io.Model.Input("model", tooltip="VideoFrom3D GGI Loader."),
                io.Vae.Input("vae", tooltip="CogVideoX-5B-I2V's VAE."),
                io.Conditioning.Input("positive", tooltip="VideoFrom3D Text Encode of the prompt."),
                io.Conditioning.Input("negative", tooltip="VideoFrom3D Text Encode of an empty text."),
                io.Image.Input("anchors", tooltip="The K+1 anchor views (VideoFrom3D Anchor Views)."),
                ARCS.Input("arcs", tooltip="The K arcs (edge maps and warped noise)."),
                io.Int.Input("seed", default=43, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="Seed of the fresh noise mixed into the warped noise (VideoFrom3D: 43)."),
                io.Int.Input("steps", default=30, min=1, max=200, tooltip="DDIM steps (VideoFrom3D: 30)."),
                io.Float.Input("cfg", default=6.0, min=1.0, max=30.0, step=0.1, tooltip="CFG (VideoFrom3D: 6)."),
                io.Float.Input("degradation", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Fresh-noise share of the initial latents (0: warped noise only; VideoFrom3D: 0.5)."),
            ],
            outputs=[io.Image.Output("frames", tooltip="46 frames per arc, 720x480.")],
        )

    @classmethod
    def execute(cls, model, vae, positive, negative, anchors, arcs, seed, steps, cfg, degradation) -> io.NodeOutput:
        check_widgets(cls, seed=seed, steps=steps, cfg=cfg, degradation=degradation)
        arcs = _check_arcs(cls.__name__, arcs)
        if anchors.shape[0] != len(arcs) + 1:
            raise NodeInputError(cls.__name__, "anchors", f"{len(arcs) + 1} images (one more than arcs)",
                                 describe(anchors))
        settings = GGISettings(steps=steps, guidance=cfg, degradation=degradation)
        ctx = torch.cat([negative[0][0], positive[0][0]])
        velocity = _velocity(model, ctx)
        hw = GGI_HW
        latent_hw = (hw[0] // 8, hw[1] // 8)
        anchors = _resize(anchors[..., :3].float(), hw)
        gen = torch.Generator().manual_seed(seed)
        bar = progress_callback(len(arcs) * steps)

        def encode(frames):
            return _host.vae_encode(vae, frames).float() * COGVIDEOX_VAE_SCALE

        def run_arc(k, start, end):
            clip, latents = arc_inputs(_resize(arcs[k].hed.float(), hw), arcs[k].noises, settings, gen, latent_hw)
            cond = ggi_condition(encode(start[None]), encode(end[None]), encode(clip))

            def report(done, total):
                bar(k * steps + done, len(arcs) * steps)

            out = sample_ggi(velocity, latents.to(cond), cond, settings, callback=report)
            return _host.vae_decode(vae, out / COGVIDEOX_VAE_SCALE)[..., :3].float().cpu()

        return io.NodeOutput(chain_arcs(run_arc, list(anchors)))


NODES = [
    Pano360VF3DLoadScene,
    Pano360VF3DScenePath,
    Pano360VF3DPreprocess,
    Pano360VF3DEquirectEdges,
    Pano360VF3DControlViews,
    Pano360VF3DLoadArcs,
    Pano360XLabsLoraLoader,
    Pano360XLabsControlNetLoader,
    Pano360VF3DAnchors,
    Pano360VF3DSaveTextEmbedding,
    Pano360VF3DGGILoader,
    Pano360VF3DCogVideoXVAELoader,
    Pano360VF3DTextEncode,
    Pano360VF3DInbetween,
]
