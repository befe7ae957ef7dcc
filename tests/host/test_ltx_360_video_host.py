"""The LTX-2.3 360° video workflow runs end to end on a tiny random checkpoint (ComfyUI 0.33+).

``workflows/api/ltx_360_video.json`` runs node by node with ComfyUI's own node code
(tests/host/api_graph.py).  Real, from files: ``CheckpointLoaderSimple`` detects and loads the
AV transformer and the video VAE, and ``LTXVAudioVAELoader`` the audio VAE and vocoder, from one
tiny LTX-2-layout checkpoint of ComfyUI's own classes with random weights
(tests/host/tiny_ltx.py); both ``LoraLoaderModelOnly`` nodes load real LoRA files onto it; the
LTX-2 conditioning, empty video/audio latents, AV concat/split, ``SamplerCustomAdvanced`` with
the workflow's own ``ManualSigmas`` schedule, the pack's circular decode and Save 360 Video run
as they are.  Replaced in process: only ``LTXAVTextEncoderLoader``, whose Gemma-3-12B text
encoder ComfyUI builds at a fixed size whatever the file holds (comfy/text_encoders/llama.py
``Gemma3_12B_Config``: 48 layers of width 3840, a 262k vocabulary; its tokenizer pads to 1024
tokens), gives a CLIP stand-in
returning seeded random Gemma-like features of the tiny model's caption width, which the
model's own caption projection and embedding connectors then process.  Cut down: the video
to 64x128 and 9 frames (the audio latent to match).
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

import api_graph
import tiny_comfy
import tiny_ltx

pytestmark = pytest.mark.comfy_min_version((0, 33))

ROOT = pathlib.Path(__file__).resolve().parents[2]
WIDTH, HEIGHT, FRAMES = 128, 64, 9


def _folder(fp, monkeypatch, tmp_path, name: str) -> pathlib.Path:
    """A temporary first ``name`` model folder; ComfyUI's folder table is restored afterwards."""
    folder = tmp_path / name
    folder.mkdir()
    paths, extensions = fp.folder_names_and_paths[name]
    monkeypatch.setitem(fp.folder_names_and_paths, name, ([str(folder), *paths], extensions))
    monkeypatch.setattr(fp, "filename_list_cache", {})
    return folder


def test_ltx_360_video_runs_end_to_end_on_a_tiny_ltx23_checkpoint(comfy_in_process, monkeypatch, tmp_path):
    import av

    fp = comfy_in_process.folder_paths
    api = json.loads((ROOT / "workflows" / "api" / "ltx_360_video.json").read_text(encoding="utf-8"))
    by_type = {n["class_type"]: nid for nid, n in api.items() if n["class_type"] != "LoraLoaderModelOnly"}
    lora_nodes = [nid for nid, n in api.items() if n["class_type"] == "LoraLoaderModelOnly"]
    assert len(lora_nodes) == 2  # the distilled LoRA, then the equirect LoRA

    checkpoints = _folder(fp, monkeypatch, tmp_path, "checkpoints")
    ckpt_name = api[by_type["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"]
    assert api[by_type["LTXVAudioVAELoader"]]["inputs"]["ckpt_name"] == ckpt_name
    tiny_ltx.write_checkpoint(checkpoints / ckpt_name)
    loras = _folder(fp, monkeypatch, tmp_path, "loras")
    reference = tiny_ltx.av_model()  # the same module names as the checkpoint's transformer
    lora_keys = {}
    for nid, targets in zip(lora_nodes, (("attn1.to_q", "ff.net.0.proj"), ("attn2.to_k", "audio_attn1.to_v"))):
        lora_keys[nid] = tiny_comfy.lora_for(reference, loras / api[nid]["inputs"]["lora_name"], targets)

    api[by_type["EmptyLTXVLatentVideo"]]["inputs"].update(width=WIDTH, height=HEIGHT, length=FRAMES)
    api[by_type["LTXVEmptyLatentAudio"]]["inputs"]["frames_number"] = FRAMES
    caption = tiny_comfy.StubClip(tiny_ltx.TRANSFORMER["caption_channels"])
    results = api_graph.run(api, list(api), given={by_type["LTXAVTextEncoderLoader"]: (caption,)})

    model = results[by_type["CheckpointLoaderSimple"]][0]
    assert type(model.model).__name__ == "LTXAV"  # detected from the file as ComfyUI's LTX-2 AV model
    for nid in lora_nodes:  # each stock loader mapped every key of its LoRA
        patched = results[nid][0].patches
        assert set(lora_keys[nid]) <= {k for k in patched if patched[k]}
    audio = results[by_type["LTXVEmptyLatentAudio"]][0]["samples"]
    assert audio.shape[1:] == (8, round(FRAMES / 24 * 16000 / 160 / 4), 16)
    video, sampled_audio = results[by_type["LTXVSeparateAVLatent"]][:2]
    assert video["samples"].shape == (1, 128, (FRAMES - 1) // 8 + 1, HEIGHT // 32, WIDTH // 32)
    assert sampled_audio["samples"].shape == audio.shape
    assert bool(torch.isfinite(video["samples"]).all()) and float(video["samples"].std()) > 0  # it sampled
    frames = results[by_type["Pano360CircularVAEDecode"]][0]
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and bool(torch.isfinite(frames).all())
    path = pathlib.Path(results[by_type["Pano360Save360Video"]][0])
    assert path.is_file() and path.suffix == ".mp4"
    assert path.resolve().is_relative_to(pathlib.Path(fp.get_output_directory()).resolve())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = sum(1 for _ in container.decode(stream))
        assert (stream.width, stream.height, decoded) == (WIDTH, HEIGHT, FRAMES)
        assert float(stream.average_rate) == api[by_type["Pano360Save360Video"]]["inputs"]["fps"]
