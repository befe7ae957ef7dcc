"""What differs between ComfyUI 0.3.64 and 0.33 where the pack itself must be right (see
the docstring of nodes/_host.py): patchers for dynamic VRAM, the seam-roll wrapper under
0.33's multi-GPU work units, audio+video (nested) latents.  Tests of 0.33-only features are
deselected on 0.3.64 (marker ``comfy_min_version``)."""

from __future__ import annotations

import pytest
import torch


def test_model_patcher_is_the_one_comfyui_loaders_use(comfy_in_process, monkeypatch):
    """ComfyUI-built models get ``CoreModelPatcher`` where the host has it (0.33 swaps in
    ModelPatcherDynamic for dynamic VRAM), plain modules the legacy ModelPatcher."""
    import comfy.model_patcher as mp
    from pano360.nodes import _host

    made = []

    class Recording(mp.ModelPatcher):
        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, **kwargs)

    has_core = hasattr(mp, "CoreModelPatcher")
    assert has_core == (comfy_in_process.version >= (0, 33)) or has_core  # 0.33 has it
    if has_core:
        monkeypatch.setattr(mp, "CoreModelPatcher", Recording)
    module = torch.nn.Linear(2, 2)
    comfy_built = _host.model_patcher(module)
    plain = _host.model_patcher(module, comfy_built=False)
    assert type(plain) is mp.ModelPatcher
    if has_core:
        assert made == [comfy_built]
    else:
        assert type(comfy_built) is mp.ModelPatcher and made == []
    assert comfy_built.load_device == _host.torch_device() and comfy_built.offload_device == _host.offload_device()


@pytest.fixture(scope="module")
def sd15_in_process(comfy_in_process, sd15_checkpoint_path):
    import comfy.sd

    model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(str(sd15_checkpoint_path))
    encode = lambda text: clip.encode_from_tokens_scheduled(clip.tokenize(text))  # noqa: E731
    return model, encode("a panorama"), encode("")


@pytest.mark.comfy_min_version((0, 33))
def test_seam_roll_wrapper_under_multi_gpu_work_units(comfy_in_process, sd15_in_process, monkeypatch):
    """ComfyUI 0.33's multi-GPU work units (``create_multigpu_deepclones``) on two CPU
    "devices": the sampler calls the pack's UNet wrapper once per device clone, from one
    worker thread each (cond on one, uncond on the other), and the result equals the
    one-device run: the wrapper keeps no per-device state."""
    import comfy.model_management as mm
    import comfy.multigpu
    import comfy.sample
    from pano360.nodes.seam import Pano360SeamRollPatch

    model, positive, negative = sd15_in_process
    calls = []

    def run(base):
        patched = comfy_in_process.run_node(Pano360SeamRollPatch, model=base, enable=True, roll_fraction=0.25,
                                            every_k_steps=1).result[0]
        wrapper = patched.model_options["model_function_wrapper"]

        def recording(apply_model, args):
            calls.append((args["input"].device, tuple(args["cond_or_uncond"])))
            return wrapper(apply_model, args)

        patched.set_model_unet_function_wrapper(recording)
        latent = torch.zeros(1, 4, 8, 16)
        noise = comfy.sample.prepare_noise(latent, 3)
        return comfy.sample.sample(patched, noise, 3, 4.0, "euler", "normal", positive, negative, latent, seed=3)

    single = run(model)
    assert [c for _, c in calls] == [(1, 0)] * 3  # cond and uncond batched, one call per step
    calls.clear()
    devices = [torch.device("cpu"), torch.device("cpu", 0)]
    monkeypatch.setattr(mm, "get_all_torch_devices", lambda exclude_current=False: devices)
    work_units = comfy.multigpu.create_multigpu_deepclones(model, 2)
    assert [m.load_device for m in work_units.get_additional_models_with_key("multigpu")] == devices[1:]
    multi = run(work_units)
    assert sorted(c for _, c in calls) == [(0,)] * 3 + [(1,)] * 3  # once per device clone and step
    assert {d for d, _ in calls} == {torch.device("cpu")}
    scale = single.abs().max()
    assert (multi - single).abs().max() <= 1e-4 * scale  # batched vs split fp16 UNet calls


def test_nodes_name_the_input_for_a_nested_latent(comfy_in_process):
    """An audio+video latent (0.33's NestedTensor) is refused by input name, not with a
    TypeError deep inside (0.3.64 has no nested latents: the same check on its types)."""
    from pano360.nodes._common import NodeInputError
    from pano360.nodes.seam import Pano360SeamBlendedVAEDecode

    if comfy_in_process.version >= (0, 33):
        from comfy.nested_tensor import NestedTensor

        samples = NestedTensor([torch.zeros(1, 16, 2, 8, 16), torch.zeros(1, 8, 2, 4)])
        expected = "separate an audio.video latent first"
    else:
        samples = [torch.zeros(1, 4, 8, 16)]
        expected = "a LATENT"
    with pytest.raises(NodeInputError, match=f"Pano360SeamBlendedVAEDecode: input 'samples': expected .*{expected}"):
        comfy_in_process.run_node(Pano360SeamBlendedVAEDecode, samples={"samples": samples}, vae=None,
                                  blend_ratio=16.0, batch_chunk=0)


@pytest.mark.comfy_min_version((0, 33))
def test_an_empty_latent_that_becomes_nested_is_refused_by_the_sampler(comfy_in_process):
    """0.33's fix_empty_latent_channels turns an empty latent of an audio+video model into
    a NestedTensor (here MiniMax H3 AV's latent format, ComfyUI's own class)."""
    from comfy import latent_formats
    from pano360.nodes._common import NodeInputError
    from pano360.nodes.multiview import _grid_latent
    from pano360.projection import rig_preset

    class Model:
        def get_model_object(self, name):
            assert name == "latent_format"
            return latent_formats.MiniMaxH3AV()

    latent = {"samples": torch.zeros(1, latent_formats.MiniMaxH3AV.latent_channels, 2, 8, 8)}
    with pytest.raises(NodeInputError, match="input 'latent': expected a model with image or video latents, got an audio"):
        _grid_latent(Model(), latent, rig_preset("horizontal_n", n=3, size=64), "Pano360MultiViewSampler")
