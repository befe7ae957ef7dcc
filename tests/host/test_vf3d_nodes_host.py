"""VideoFrom3D's nodes inside a real ComfyUI (both versions) on tiny random models built from
ComfyUI's own classes: preprocessing -> SAG on ComfyUI's Flux + XLabs ControlNet -> GGI.

The VAEs are stand-ins with ComfyUI's VAE interface (``encode(IMAGE)``, ``decode(latent)``;
ComfyUI's detection only builds full-size Flux/CogVideoX VAEs), so the tests cover the nodes'
plumbing and ComfyUI's sampling around the pack's samplers."""

from __future__ import annotations

import math

import pytest
import torch

FLUX = dict(in_channels=64, out_channels=16, vec_in_dim=32, context_in_dim=48, hidden_size=128, mlp_ratio=4.0,
            num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
            qkv_bias=True, guidance_embed=True)
HW = (64, 96)  # GGI test size (multiple of 16)
EDGES = (128, 192)  # edge maps / anchors: large enough that SAG's 5x5x12 hole dilation leaves carried pixels


def _run(node, **inputs):
    """Call a V3 node's ``execute`` directly (the nodes use no hidden inputs), under inference mode
    as ComfyUI's executor runs nodes."""
    with torch.inference_mode():
        return node.execute(**inputs).result


class StandInVAE:
    """ComfyUI's VAE interface: IMAGE [B,H,W,3] (images) or [T,H,W,3] (video) <-> latents."""

    def __init__(self, channels: int = 16, video: bool = False):
        g = torch.Generator().manual_seed(3)
        self.enc = torch.randn(channels, 3, generator=g) * 0.3
        self.dec = torch.randn(3, channels, generator=g) * 0.05
        self.video = video

    def encode(self, pixels):
        x = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1) * 2 - 1, 8)  # (B, 3, h, w)
        lat = torch.einsum("oc,bchw->bohw", self.enc, x)
        if not self.video:
            return lat
        first, rest = lat[:1], lat[1:]
        if rest.shape[0]:
            rest = rest.reshape(-1, 4, *rest.shape[1:]).mean(1)
        return torch.cat([first, rest]).movedim(0, 1)[None]  # (1, C, T', h, w)

    def decode(self, latent):
        if self.video:
            lat = latent[0].movedim(1, 0)  # (T', C, h, w)
            lat = torch.cat([lat[:1], lat[1:].repeat_interleave(4, 0)])
        else:
            lat = latent
        x = torch.einsum("oc,bchw->bohw", self.dec, lat)
        x = torch.nn.functional.interpolate(x, scale_factor=8, mode="nearest")
        return ((x + 1) / 2).clamp(0, 1).movedim(1, -1)


@pytest.fixture(scope="module")
def tiny_flux(comfy_in_process):
    import comfy.controlnet
    import comfy.ops
    from comfy.ldm.flux.controlnet import ControlNetFlux
    from comfy.ldm.flux.model import Flux

    from pano360.nodes import _host

    import dataclasses

    from comfy.ldm.flux.model import FluxParams

    params = dict(FLUX)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:  # ComfyUI 0.33's Flux
        params["txt_ids_dims"] = []
    torch.manual_seed(0)
    net = Flux(operations=comfy.ops.manual_cast, **params)
    if net.img_in.in_features != 64:  # newer ComfyUI counts in_channels before patching
        params["in_channels"] = 16
        net = Flux(operations=comfy.ops.manual_cast, **params)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    overrides = dict(params)
    model = _host.build_model(net.state_dict(), "Flux", unet_config_overrides=overrides, dtype=torch.float32,
                              source="tiny flux")
    cn_net = ControlNetFlux(latent_input=False, operations=comfy.ops.manual_cast, **params)
    with torch.no_grad():
        for p in cn_net.parameters():
            p.normal_(0, 0.05)
    # as comfy.controlnet.load_controlnet_flux_xlabs_mistoline wraps an XLabs ControlNet
    control = comfy.controlnet.ControlNet(cn_net, load_device=torch.device("cpu"), manual_cast_dtype=None,
                                          extra_conds=["y", "guidance"])
    g = torch.Generator().manual_seed(1)
    pos = [[torch.randn(1, 4, 48, generator=g), {"pooled_output": torch.randn(1, 32, generator=g)}]]
    neg = [[torch.randn(1, 4, 48, generator=g), {"pooled_output": torch.randn(1, 32, generator=g)}]]
    return model, control, pos, neg


@pytest.fixture(scope="module")
def tiny_arcs(comfy_in_process):
    import pano360.nodes.videofrom3d as vf
    from pano360.pipelines.videofrom3d.noise_warp import NoiseWarpSettings

    env = comfy_in_process
    old = vf.EDGE_HW, vf.CORRES_HW, vf.NOISE
    vf.EDGE_HW, vf.CORRES_HW, vf.NOISE = EDGES, (16, 24), NoiseWarpSettings(channels=16, flow_scale=2, downscale=4)
    try:
        mesh = _run(vf.Pano360VF3DLoadScene, source="bundled_street", mesh_file="", axes="y_up", scale=1.0,
                            seed=0)[0]
        path = _run(vf.Pano360VF3DScenePath, arcs=1, fov_deg=60.0)[0]
        out = _run(vf.Pano360VF3DPreprocess, mesh=mesh, camera_path=path, seed=0, line_width=2.0,
                           crease_deg=40.0, save_prefix="vf3d_test")
    finally:
        vf.EDGE_HW, vf.CORRES_HW, vf.NOISE = old
    return out


def test_preprocess_node_outputs_and_official_folder(comfy_in_process, tiny_arcs):
    from pano360.pipelines.videofrom3d.arcs import read_arcs

    arcs, anchor_edges, frames = tiny_arcs
    assert len(arcs) == 1 and anchor_edges.shape == (2, *EDGES, 3) and frames.shape == (46, *EDGES, 3)
    assert float((arcs[0].corres_end[..., 2] >= 100).float().mean()) > 0.05  # the end sees part of the start
    out = comfy_in_process.folder_paths.get_output_directory()
    back = read_arcs(f"{out}/vf3d_test_00001")
    assert torch.equal(back[0].corres, arcs[0].corres) and back[0].noises.shape == (13, 8, 12, 16)


def test_sag_node_runs_on_comfyui_flux_and_controlnet(comfy_in_process, tiny_flux, tiny_arcs):
    import pano360.nodes.videofrom3d as vf

    model, control, pos, neg = tiny_flux
    arcs = tiny_arcs[0]
    vae = StandInVAE()
    run = lambda n: _run(  # noqa: E731
        vf.Pano360VF3DAnchors, model=model, control_net=control, vae=vae, positive=pos, negative=neg, arcs=arcs,
        seed=5, steps=4, num_replacement=n, guidance=4.0, true_cfg=3.5, control_strength=0.8)[0]
    with_rep, without = run(2), run(0)
    assert with_rep.shape == (2, *EDGES, 3) and torch.isfinite(with_rep).all()
    torch.testing.assert_close(with_rep[0], without[0])  # the first anchor has nothing to carry
    assert float((with_rep[1] - without[1]).abs().max()) > 1e-3  # later anchors carry the previous one


def test_pack_sampler_equals_comfyui_euler_without_replacement(comfy_in_process, tiny_flux):
    import comfy.sample
    import comfy.samplers

    from pano360.nodes import _host
    from pano360.pipelines.videofrom3d.sag import sample_flow_with_replacement, xflux_timesteps

    model, control, pos, neg = tiny_flux
    sigmas = xflux_timesteps(5, HW[1], HW[0]).float()
    empty = torch.zeros(1, 16, HW[0] // 8, HW[1] // 8)
    noise = _host.prepare_noise(empty, 7)

    def ours(model_k, x, sig, extra_args=None, callback=None, disable=None):
        s_in = x.new_ones(x.shape[0])
        return sample_flow_with_replacement(lambda xx, s, i: model_k(xx, s * s_in, **extra_args), x, sig)

    with torch.no_grad():  # (a global set_grad_enabled(False) here used to leak into later test files)
        a = _host.sample_with_sampler_function(model, noise, sigmas, pos, neg, 2.0, empty, ours, seed=7)
        b = comfy.sample.sample_custom(model, noise, 2.0, comfy.samplers.sampler_object("euler"), sigmas, pos, neg,
                                       empty, seed=7)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_ggi_nodes_on_this_host(comfy_in_process, tiny_arcs, monkeypatch):
    import pano360.nodes.videofrom3d as vf
    from pano360.models.ggi_transformer import ggi_config

    cfg = dict(ggi_config(), num_attention_heads=3, attention_head_dim=16, num_layers=1, time_embed_dim=16,
               text_embed_dim=8, sample_width=HW[1] // 8, sample_height=HW[0] // 8, max_text_seq_length=4)
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    ref = CogVideoXTransformer3DModel(**cfg)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.1)
    model = vf.load_ggi_model(cfg, ref.state_dict(), torch.float32)
    arcs = tiny_arcs[0]
    monkeypatch.setattr(vf, "GGI_HW", HW)
    g = torch.Generator().manual_seed(2)
    pos, neg = [[torch.randn(1, 4, 8, generator=g), {}]], [[torch.randn(1, 4, 8, generator=g), {}]]
    anchors = torch.rand(2, *HW, 3, generator=g)
    frames = _run(vf.Pano360VF3DInbetween, model=model, vae=StandInVAE(video=True), positive=pos,
                                       negative=neg, anchors=anchors, arcs=arcs, seed=1, steps=2, cfg=6.0,
                                       degradation=0.5)[0]
    assert frames.shape == (46, *HW, 3) and torch.isfinite(frames).all()
    assert math.isfinite(float(frames.mean()))


def test_equirect_edges_node(comfy_in_process):
    import pano360.nodes.videofrom3d as vf

    mesh = _run(vf.Pano360VF3DLoadScene, source="bundled_street", mesh_file="", axes="y_up", scale=1.0, seed=0)[0]
    path = _run(vf.Pano360VF3DScenePath, arcs=1, fov_deg=60.0)[0]
    pano = _run(vf.Pano360VF3DEquirectEdges, mesh=mesh, camera_path=path, height=32, every_nth=45, line_width=2.0)[0]
    assert pano.shape == (2, 32, 64, 3) and float(pano.max()) > 0.5


def test_bad_inputs_name_the_node_and_input(comfy_in_process):
    import pano360.nodes.videofrom3d as vf
    from pano360.cameras import constant_path
    from pano360.nodes._common import NodeInputError

    mesh = _run(vf.Pano360VF3DLoadScene, source="bundled_street", mesh_file="", axes="y_up", scale=1.0, seed=0)[0]
    path = _run(vf.Pano360VF3DScenePath, arcs=1, fov_deg=60.0)[0]
    with pytest.raises(NodeInputError, match="Pano360VF3DPreprocess: input 'save_prefix'"):
        _run(vf.Pano360VF3DPreprocess, mesh=mesh, camera_path=path, seed=0, line_width=2.0, crease_deg=40.0,
             save_prefix="../outside")
    with pytest.raises(NodeInputError, match="Pano360VF3DScenePath: input 'camera_path'"):
        _run(vf.Pano360VF3DScenePath, arcs=1, fov_deg=60.0, camera_path=constant_path(10))  # no positions
    with pytest.raises(NodeInputError, match="Pano360VF3DLoadScene: input 'mesh_file'"):
        _run(vf.Pano360VF3DLoadScene, source="mesh_file", mesh_file="missing.obj", axes="y_up", scale=1.0, seed=0)
    with pytest.raises(NodeInputError, match="Pano360VF3DAnchors: input 'arcs'"):
        _run(vf.Pano360VF3DAnchors, model=None, control_net=None, vae=None, positive=[], negative=[], arcs="nope",
             seed=0, steps=25, num_replacement=12, guidance=4.0, true_cfg=3.5, control_strength=0.8)
    with pytest.raises(NodeInputError, match="Pano360VF3DLoadArcs: input 'folder'"):
        _run(vf.Pano360VF3DLoadArcs, folder="no_such_folder")
