"""Regenerate the XLabs LoRA golden data (run by hand, not part of the test suite).

Runs VideoFrom3D's vendored x-flux blocks with its LoRA attention processors
(``src/flux/modules/layers.py``: ``DoubleStreamBlockLoraProcessor``, ``SingleStreamBlockLoraProcessor``,
``LoRALinearLayer``) on a tiny Flux block pair (hidden 32, 2 heads) with random LoRA weights and
saves ``vf3d_xlabs_lora_golden.safetensors``: the blocks' weights, the LoRA in XLabs key format
(``double_blocks.0.processor.*``, ``single_blocks.0.processor.*``), the inputs and the outputs.
The official single-block processor hard-codes ``proj_lora``'s 15360 input features (Flux-dev's
3072 + 12288); at toy size that layer is rebuilt with the official ``LoRALinearLayer`` at 32 + 128.

Usage::

    python tests/data/make_vf3d_xlabs_lora_golden.py /path/to/VideoFrom3D
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
HIDDEN, HEADS, MLP_RATIO, RANK = 32, 2, 4.0, 4
AXES_DIM = [4, 6, 6]  # sums to the head dim 16, as Flux's [16, 56, 56] sums to 128
IMG_TOKENS, TXT_TOKENS = 6, 3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("videofrom3d", type=pathlib.Path)
    args = p.parse_args()
    sys.path.insert(0, str(args.videofrom3d))
    from src.flux.modules.layers import (  # the official blocks and processors
        DoubleStreamBlock,
        DoubleStreamBlockLoraProcessor,
        EmbedND,
        LoRALinearLayer,
        SingleStreamBlock,
        SingleStreamBlockLoraProcessor,
    )

    torch.manual_seed(0)
    double = DoubleStreamBlock(HIDDEN, HEADS, MLP_RATIO, qkv_bias=True).eval()
    single = SingleStreamBlock(HIDDEN, HEADS, MLP_RATIO).eval()
    dproc = DoubleStreamBlockLoraProcessor(dim=HIDDEN, rank=RANK)
    sproc = SingleStreamBlockLoraProcessor(dim=HIDDEN, rank=RANK)
    sproc.proj_lora = LoRALinearLayer(HIDDEN + int(HIDDEN * MLP_RATIO), HIDDEN, RANK)
    with torch.no_grad():
        for prm in list(dproc.parameters()) + list(sproc.parameters()):
            prm.normal_(0, 0.2)  # the up weights start at zero; a trained LoRA is not
    double.set_processor(dproc)
    single.set_processor(sproc)

    g = torch.Generator().manual_seed(1)
    img = torch.randn(1, IMG_TOKENS, HIDDEN, generator=g)
    txt = torch.randn(1, TXT_TOKENS, HIDDEN, generator=g)
    vec = torch.randn(1, HIDDEN, generator=g)
    ids = torch.randint(0, 8, (1, TXT_TOKENS + IMG_TOKENS, 3), generator=g).float()
    pe = EmbedND(dim=HIDDEN // HEADS, theta=10000, axes_dim=AXES_DIM)(ids)
    with torch.no_grad():
        img_out, txt_out = double(img, txt, vec, pe)
        single_out = single(torch.cat([txt_out, img_out], 1), vec, pe)

    tensors = {f"double.{k}": v for k, v in double.state_dict().items() if "processor" not in k}
    tensors |= {f"single.{k}": v for k, v in single.state_dict().items() if "processor" not in k}
    tensors |= {f"lora.double_blocks.0.processor.{k}": v for k, v in dproc.state_dict().items()}
    tensors |= {f"lora.single_blocks.0.processor.{k}": v for k, v in sproc.state_dict().items()}
    tensors |= dict(img=img, txt=txt, vec=vec, pe=pe, img_out=img_out, txt_out=txt_out, single_out=single_out)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(HERE / "vf3d_xlabs_lora_golden.safetensors"),
              metadata={"hidden": str(HIDDEN), "heads": str(HEADS), "mlp_ratio": str(MLP_RATIO)})
    print("wrote", HERE / "vf3d_xlabs_lora_golden.safetensors")  # noqa: T201


if __name__ == "__main__":
    main()
