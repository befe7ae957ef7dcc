"""GGI's prompt: VideoFrom3D captions the first anchor with BLIP-2 when no prompt is given; the pack's
Text Encode takes such a caption from any captioning node (ComfyUI 0.33's Generate Text) on its
optional 'caption' input, else the typed text.  A stub T5 CLIP records what gets tokenized."""

from __future__ import annotations

import pytest
import torch


class RecordingT5:
    """ComfyUI's CLIP interface for a T5 tokenizer: one token per word, pad 0 (records the texts)."""

    class _Tok:
        pad_token = 0

    def __init__(self):
        self.texts = []
        self.tokenizer = type("Tokenizers", (), {"t5xxl": self._Tok()})()

    def tokenize(self, text):
        self.texts.append(text)
        return {"t5xxl": [[(i + 1, 1.0) for i, _ in enumerate(text.split())] + [(0, 1.0)] * 3]}

    def encode_from_tokens(self, tokens):
        row = tokens["t5xxl"][0]
        return torch.tensor([[float(t) for t, _ in row]])[..., None].expand(1, len(row), 8)


def test_caption_replaces_the_typed_text_and_is_stripped(comfy_in_process):
    from pano360.nodes import videofrom3d as vf

    clip = RecordingT5()
    typed = vf.Pano360VF3DTextEncode.execute(clip=clip, text="a quiet street")[0]
    captioned = vf.Pano360VF3DTextEncode.execute(clip=clip, text="a quiet street",
                                                 caption="  a row of houses with red roofs \n")[0]
    assert clip.texts == ["a quiet street", "a row of houses with red roofs"]
    assert typed[0][0].shape == captioned[0][0].shape == (1, vf.T5_TOKENS, 8)  # padded to CogVideoX's 226
    assert int((captioned[0][0][0, :, 0] > 0).sum()) == 7


def test_caption_must_be_text(comfy_in_process):
    from pano360.nodes import videofrom3d as vf
    from pano360.nodes._common import NodeInputError

    with pytest.raises(NodeInputError, match="caption"):
        vf.Pano360VF3DTextEncode.execute(clip=RecordingT5(), text="", caption=torch.zeros(3))
