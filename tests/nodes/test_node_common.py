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
