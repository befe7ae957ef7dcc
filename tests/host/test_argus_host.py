"""Argus inside a real ComfyUI: the UNet loader against diffusers, and the bundled workflow.

Reference for the loader: diffusers' own ``UNetSpatioTemporalConditionModel`` with the same
random weights and inputs.  ComfyUI's detection matches only the full-size SVD config, so the
loader always builds ComfyUI's ``SVD_img2vid`` from the detected sizes (nodes/_host.py); this
is how the tiny configuration below loads.
"""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch

TINY_SVD_CONFIG = dict(
    sample_size=8,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 64),
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=24,
    layers_per_block=1,
    cross_attention_dim=16,
    transformer_layers_per_block=1,
    num_attention_heads=(2, 4),
    num_frames=3,
)
OUTPUT_TOL = 1e-4  # float32, same maths in a different operation order
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNetSpatioTemporalConditionModel(**TINY_SVD_CONFIG).eval()
    with torch.no_grad():  # diffusers zero-initialises some layers; make every weight matter
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path_factory.mktemp("argus") / "argus-tiny"
    unet.save_pretrained(folder / "unet")
    return unet, folder


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding, cos first (SGM's and diffusers' flip_sin_to_cos convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


def test_tiny_diffusers_unet_loads_through_argus_loader_and_matches_diffusers(comfy_in_process, tiny_unet):
    from pano360.models.argus_unet import read_unet_source
    from pano360.nodes.argus import load_argus_unet

    unet, folder = tiny_unet
    weights, config = read_unet_source(str(folder))
    patcher = load_argus_unet(weights, config, dtype=torch.float32)
    comfy_unet = patcher.model.diffusion_model
    assert type(patcher.model).__name__ == "SVD_img2vid"

    T, h, w = 3, 8, 16
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(1, T, 8, h, w, generator=g)
    tokens = torch.randn(1, T, 16, generator=g)  # Argus: T CLIP tokens as the context
    ids = torch.tensor([[4.0, 127.0, 0.02]])
    t = torch.tensor(0.7)
    with torch.no_grad():
        ref = unet(sample, t, encoder_hidden_states=tokens, added_time_ids=ids).sample[0]
        y = _timestep_embedding(ids[0], 8).reshape(1, -1).expand(T, -1)
        out = comfy_unet(
            sample[0], timesteps=t.expand(T), context=tokens.expand(T, -1, -1), y=y,
            num_video_frames=T, image_only_indicator=torch.zeros(1, T),
        )
    assert out.shape == ref.shape == (T, 4, h, w)
    assert (out - ref).abs().max().item() < OUTPUT_TOL * max(1.0, ref.abs().max().item())


def test_unet_file_with_a_missing_key_is_refused_by_name(comfy_in_process, tiny_unet, tmp_path):
    from safetensors.torch import load_file, save_file

    from pano360.nodes._common import NodeInputError
    from pano360.nodes.argus import load_argus_unet

    _, folder = tiny_unet
    sd = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    gone = "up_blocks.1.attentions.0.temporal_transformer_blocks.0.ff.net.2.weight"
    del sd[gone]
    broken = tmp_path / "broken.safetensors"
    save_file(sd, str(broken))
    with pytest.raises(NodeInputError, match=gone.replace(".", r"\.")):
        load_argus_unet(str(broken), json.loads((folder / "unet" / "config.json").read_text()))


def test_argus_workflow_validates_against_object_info(comfy_server):
    info = comfy_server.object_info()
    prompt = json.loads((ROOT / "workflows" / "api" / "argus_video_to_360.json").read_text())
    for node_id, node in prompt.items():
        cls = node["class_type"]
        assert cls in info, f"node {node_id}: {cls} is not a registered node"
        spec = info[cls]["input"]
        names = set(spec.get("required", {})) | set(spec.get("optional", {}))
        for name, value in node["inputs"].items():
            assert name in names, f"node {node_id} ({cls}): no input {name!r}; has {sorted(names)}"
            if isinstance(value, list):
                assert value[0] in prompt, f"node {node_id}: input {name} links to missing node {value[0]}"
        missing = set(spec.get("required", {})) - set(node["inputs"])
        assert not missing, f"node {node_id} ({cls}): required inputs not set: {sorted(missing)}"
