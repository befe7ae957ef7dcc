"""Widget checks (``validate_inputs``) with widgets turned into linked inputs.

ComfyUI validates a prompt before running it and does not pass the values of *linked*
inputs to ``validate_inputs`` (they are not computed yet; ``execution.get_input_data``
skips them), so a check must not judge a linked input by its Python default.  These tests
run ComfyUI's own ``execution.validate_inputs`` (the independent reference) on small
prompts where one widget comes from another node.
"""

import asyncio

import pytest

# One stub node with an output of every type the prompts below link from.
SOURCE_TYPES = ("IMAGE", "PANO360_RIG", "INT", "STRING", "FLOAT", "LATENT", "MODEL", "CONDITIONING",
                "PANO360_CAMERA_PATH", "CLIP_VISION", "VAE", "MASK", "PANO360_PANODIT",
                "PANO360_SAMPLER_SETTINGS", "PANO360_WINDOW_SETTINGS")


def _slot(kind: str) -> list:
    return ["src", SOURCE_TYPES.index(kind)]


@pytest.fixture
def validate(comfy_in_process, monkeypatch):
    import execution
    import nodes

    class Pano360TestSource:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        RETURN_TYPES = SOURCE_TYPES
        FUNCTION = "run"
        CATEGORY = "testing"

    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "Pano360TestSource", Pano360TestSource)

    def run(node_cls, inputs: dict):
        node_id = node_cls.define_schema().node_id
        monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, node_id, node_cls)
        prompt = {"src": {"class_type": "Pano360TestSource", "inputs": {}},
                  "n": {"class_type": node_id, "inputs": inputs}}
        ok, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, "n", {}))
        return ok, [e.get("details", "") for e in errors]

    return run


def test_perspective_size_check_accepts_a_linked_width(validate):
    from pano360.nodes.projection import Pano360EquirectToPerspective

    base = {"panorama": _slot("IMAGE"), "rig": _slot("PANO360_RIG"), "mode": "bilinear"}
    assert validate(Pano360EquirectToPerspective, {**base, "width": _slot("INT"), "height": 64}) == (True, [])
    ok, details = validate(Pano360EquirectToPerspective, {**base, "width": 64, "height": 0})
    assert not ok and "set both or neither" in " ".join(details)


def test_rig_custom_json_check_accepts_linked_text(validate):
    from pano360.nodes.projection import Pano360Rig

    widgets = {"preset": "custom_json", "size": 0, "count": 8, "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "fov": 90.0}
    assert validate(Pano360Rig, {**widgets, "custom_json": _slot("STRING")}) == (True, [])
    ok, details = validate(Pano360Rig, {**widgets, "custom_json": '[{"fov": 200}]'})
    assert not ok and "custom_json" in " ".join(details)


def test_window_overlap_check_accepts_a_linked_window(validate):
    from pano360.nodes.settings import Pano360WindowSettings

    inputs = {"window": _slot("INT"), "overlap": 20}
    assert validate(Pano360WindowSettings, inputs) == (True, [])  # window may be 32 at run time
    ok, details = validate(Pano360WindowSettings, {**inputs, "window": 16})
    assert not ok and "overlap" in " ".join(details)


def test_fusion_sync_check_accepts_a_linked_sync_end(validate):
    from pano360.nodes.settings import Pano360FusionSettings

    inputs = {"sync_strength": 1.0, "sync_start": 0.5, "sync_end": _slot("FLOAT"), "noise_augmentation": 0.0}
    assert validate(Pano360FusionSettings, inputs) == (True, [])
    ok, details = validate(Pano360FusionSettings, {**inputs, "sync_end": 0.2})
    assert not ok and "sync_start" in " ".join(details)


def test_lookbeyond_prefix_check_accepts_a_linked_prefix(validate):
    from pano360.nodes.lookbeyond import Pano360LookBeyondPerspectiveLoop

    inputs = {"panorama": _slot("IMAGE"), "num_frames": 12, "fov": 90.0, "size": 64, "cameras_between": 0,
              "folder_prefix": _slot("STRING"), "save": True}
    assert validate(Pano360LookBeyondPerspectiveLoop, inputs) == (True, [])
    ok, details = validate(Pano360LookBeyondPerspectiveLoop, {**inputs, "folder_prefix": "../escape"})
    assert not ok and "folder_prefix" in " ".join(details)


def test_values_skipped_by_validation_are_checked_when_the_node_runs(comfy_in_process):
    import torch

    from pano360.nodes._common import NodeInputError
    from pano360.nodes.projection import Pano360EquirectToPerspective, Pano360Rig

    run = comfy_in_process.run_node
    widgets = {"preset": "custom_json", "size": 0, "count": 8, "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "fov": 90.0}
    with pytest.raises(NodeInputError, match=r"Pano360Rig: input 'custom_json'.*200"):
        run(Pano360Rig, **widgets, custom_json='[{"fov": 200}]')
    rig = run(Pano360Rig, **widgets, custom_json='[{"width": 16, "height": 16}]').result[0]
    with pytest.raises(NodeInputError, match=r"Pano360EquirectToPerspective: input 'width/height'"):
        run(Pano360EquirectToPerspective, panorama=torch.zeros(1, 8, 16, 3), rig=rig, mode="bilinear",
            width=32, height=0)


def test_perspective_to_equirect_accepts_linked_sizes_and_range_checks_named_ones(validate):
    from pano360.nodes.argus import Pano360PerspectiveToEquirect

    base = {"frames": _slot("IMAGE"), "camera_path": _slot("PANO360_CAMERA_PATH"), "input_long_side": 512}
    assert validate(Pano360PerspectiveToEquirect, {**base, "width": _slot("INT"), "height": 512}) == (True, [])
    assert validate(Pano360PerspectiveToEquirect, {**base, "width": 1024, "height": _slot("INT")}) == (True, [])
    ok, details = validate(Pano360PerspectiveToEquirect, {**base, "width": 1000, "height": 512})
    assert not ok and "2 × height" in " ".join(details)
    ok, details = validate(Pano360PerspectiveToEquirect, {**base, "width": 16384, "height": 8192})
    assert not ok and "'width'" in " ".join(details)   # ComfyUI's own max, re-checked for a named input


def test_argus_long_video_accepts_linked_settings(validate):
    from pano360.nodes.argus import Pano360ArgusLongVideo

    inputs = {
        "model": _slot("MODEL"), "clip_vision": _slot("CLIP_VISION"), "vae": _slot("VAE"),
        "equirect": _slot("IMAGE"), "mask": _slot("MASK"), "frames": _slot("IMAGE"),
        "settings": _slot("PANO360_SAMPLER_SETTINGS"), "window_settings": _slot("PANO360_WINDOW_SETTINGS"),
        "fps": 5, "motion_bucket_id": 127, "noise_aug": 0.02, "blend_ratio": 16.0,
    }
    assert validate(Pano360ArgusLongVideo, inputs) == (True, [])
    ok, details = validate(Pano360ArgusLongVideo, {**inputs, "fps": 0})
    assert not ok and "fps" in " ".join(details)


def test_panodit_string_checks_accept_linked_text(validate):
    from pano360.nodes.panodit import Pano360PanoDiTSampler, Pano360TextFeatureFromNpy

    inputs = {"panodit": _slot("PANO360_PANODIT"), "text": _slot("CONDITIONING"), "steps": 10, "seed": 0,
              "seam_rolls": True, "roll_at": _slot("STRING"), "roll_width": 0.25, "output_orientation": "input"}
    assert validate(Pano360PanoDiTSampler, inputs) == (True, [])
    ok, _ = validate(Pano360PanoDiTSampler, {**inputs, "roll_at": "0.5, banana"})
    assert not ok
    assert validate(Pano360TextFeatureFromNpy, {"path": _slot("STRING")}) == (True, [])


def test_named_inputs_keep_comfyui_range_checks(validate):
    from pano360.nodes.lookbeyond import Pano360LookBeyondPerspectiveLoop
    from pano360.nodes.projection import Pano360EquirectToPerspective
    from pano360.nodes.settings import Pano360FusionSettings

    base = {"panorama": _slot("IMAGE"), "rig": _slot("PANO360_RIG"), "mode": "bilinear"}
    ok, details = validate(Pano360EquirectToPerspective, {**base, "width": 10**6, "height": 10**6})
    assert not ok and "at most" in " ".join(details)
    loop = {"panorama": _slot("IMAGE"), "num_frames": 12, "fov": 500.0, "size": 64, "cameras_between": 0,
            "folder_prefix": "lookbeyond/loop", "save": False}
    ok, _ = validate(Pano360LookBeyondPerspectiveLoop, loop)   # fov 500 > max: ComfyUI's own check runs
    assert not ok
    schema = Pano360FusionSettings.define_schema()
    assert Pano360FusionSettings.validate_inputs(sync_start=-1.0, sync_end=1.0) != True  # noqa: E712
    assert schema.node_id in Pano360FusionSettings.validate_inputs(sync_start=2.0, sync_end=3.0)
