"""Host-free helpers of nodes/_common.py (importable without ComfyUI)."""

from types import SimpleNamespace

import pytest
import torch

from pano360.nodes._common import NodeInputError, image_to_bchw, known, widget_errors


def _schema():
    inputs = [
        SimpleNamespace(id="width", min=64, max=4096),
        SimpleNamespace(id="mode", options=["bilinear", "bicubic"]),
        SimpleNamespace(id="text"),
    ]
    return SimpleNamespace(node_id="Pano360Test", inputs=inputs)


def test_widget_errors_reapplies_range_and_choice_checks():
    schema = _schema()
    assert widget_errors(schema, width=64, mode="bicubic", text="x") is None
    assert widget_errors(schema, width=63) == "Pano360Test: input 'width': expected at least 64, got 63"
    assert "expected at most 4096, got 5000" in widget_errors(schema, width=5000)
    assert "expected one of ['bilinear', 'bicubic'], got 'lanczos'" in widget_errors(schema, mode="lanczos")


def test_widget_errors_skips_linked_inputs():
    assert widget_errors(_schema(), width=None, mode=None) is None
    assert known(1, 0.0, "") and not known(1, None)


def test_image_to_bchw_names_node_and_input():
    with pytest.raises(NodeInputError, match=r"^Pano360Test: input 'panorama': expected an IMAGE \[B,H,W,C\]"):
        image_to_bchw(torch.zeros(4, 4), "Pano360Test", "panorama")
    image = torch.rand(2, 8, 16, 3)
    assert torch.equal(image_to_bchw(image, "n", "i"), image.permute(0, 3, 1, 2))


class _Nested:
    """The attributes of ComfyUI 0.33's comfy.nested_tensor.NestedTensor the check reads
    (the real class is tested in tests/host/test_host_versions.py)."""

    is_nested = True

    def __init__(self, tensors):
        self.tensors = list(tensors)


def test_latent_samples_names_the_input_and_refuses_nested_latents():
    from pano360.nodes._common import NodeInputError, latent_samples

    x = torch.zeros(1, 4, 8, 8)
    assert latent_samples({"samples": x}, "Pano360X", "latent") is x
    with pytest.raises(NodeInputError, match=r"Pano360X: input 'latent': expected a LATENT, got dict"):
        latent_samples({"noise_mask": x}, "Pano360X", "latent")
    with pytest.raises(NodeInputError, match=r"separate an audio\+video latent first.*2 streams \[1, 4, 8, 8\], \[1, 2\]"):
        latent_samples({"samples": _Nested([x, torch.zeros(1, 2)])}, "Pano360X", "latent")
    assert not torch.zeros(2).is_nested  # torch tensors carry is_nested=False: never mistaken


def test_errors_name_the_node_not_the_executors_class_clone():
    from pano360.nodes._common import NodeInputError, node_name

    assert node_name("Pano360SeamBlendedVAEDecodeClone") == "Pano360SeamBlendedVAEDecode"
    assert node_name("Pano360Rig") == "Pano360Rig" and node_name("OtherClone") == "OtherClone"
    assert str(NodeInputError("Pano360RigClone", "size", "a size", "0")).startswith("Pano360Rig: input 'size'")
