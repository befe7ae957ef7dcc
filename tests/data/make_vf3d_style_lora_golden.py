"""Regenerate the style-LoRA training golden data (run by hand, not part of the test suite).

Runs VideoFrom3D's own training arithmetic (``sag_distribution_alignment.py``) on a tiny x-flux
Flux + XLabs ControlNet (``src/flux/model.py``, ``controlnet.py``) with the official LoRA
processors (``DoubleStreamBlockLoraProcessor``, ``SingleStreamBlockLoraProcessor``) on the
official blocks (all double blocks, single blocks 1-4, both ControlNet double blocks), and saves
``vf3d_style_lora_golden.safetensors``:

- the models' weights (BFL / XLabs keys) and the LoRAs in the official file layout (what the
  script saves as ``lora.safetensors`` / ``controlnet.lora.safetensors``);
- one training step's inputs (``x_1`` latent, ``x_0`` noise, ``t``, text, pooled text, HED
  control in [-1, 1]), the prediction, the loss ``MSE(pred, x_0 - x_1)`` and the gradients of
  every LoRA weight;
- the 1000 training times ``get_schedule(999, 4096)`` (``src/flux/sampling.py``);
- the key and shape lists of the official flux-dev ``Flux`` and ``ControlNetFlux(controlnet_depth=2)``
  (built on the meta device with ``src/flux/util.py``'s flux-dev params) in ``vf3d_flux_keys.json``;
- ``image_datasets/dataset.py``'s prepared image for each aspect choice of two synthetic images
  (``CustomImageControlDataset2.__getitem__`` with its ``random.choice`` pinned, and the image
  itself as the "HED" map, so the control path is checked too).

The official single-block processor hard-codes ``proj_lora``'s 15360 inputs (Flux-dev's
3072 + 12288) and both processors are built with ``dim=3072`` by the script; at toy size they are
built with the toy sizes.  Everything runs in float32.

Usage::

    python tests/data/make_vf3d_style_lora_golden.py /path/to/VideoFrom3D   (a checkout or an export)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import types

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
HIDDEN, HEADS, MLP_RATIO, RANK = 32, 2, 4.0, 4
AXES_DIM = [4, 6, 6]  # sums to the head dim 16, as Flux's [16, 56, 56] sums to 128
DEPTH, DEPTH_SINGLE, CN_DEPTH = 3, 6, 2
SINGLE_LORA = (1, 2, 3, 4)  # configs/distribution_alignment.yaml single_blocks "1,2,3,4"
VEC, CONTEXT, TXT_TOKENS = 8, 12, 5
LATENT_HW = (4, 6)  # latent h, w (even); the control image is 8x that
T_INDEX = 437  # the training time drawn: timesteps[437] of the 1000
IMAGES = {"wide": (300, 200), "tall": (90, 170)}  # synthetic reference images (w, h)
IMAGE_SIZE = 64  # the dataset's img_size at toy scale (the official 1024)


def _stub_unused_imports() -> None:
    """image_datasets/dataset.py imports pandas (unused) and controlnet_aux (the HED detector is
    passed in) at module level; give absent ones stand-ins so the module imports."""
    import importlib.machinery
    import importlib.util

    for name, attrs in (("controlnet_aux", {"HEDdetector": None}), ("pandas", {})):
        if importlib.util.find_spec(name) is None:
            mod = types.ModuleType(name)
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
            mod.__dict__.update(attrs)
            sys.modules[name] = mod


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("videofrom3d", type=pathlib.Path)
    args = p.parse_args()
    sys.path.insert(0, str(args.videofrom3d))
    _stub_unused_imports()
    from image_datasets import dataset as official_dataset
    from src.flux.controlnet import ControlNetFlux
    from src.flux.model import Flux, FluxParams
    from src.flux.modules.layers import DoubleStreamBlockLoraProcessor, LoRALinearLayer, SingleStreamBlockLoraProcessor
    from src.flux.sampling import get_schedule

    params = FluxParams(in_channels=64, vec_in_dim=VEC, context_in_dim=CONTEXT, hidden_size=HIDDEN, mlp_ratio=MLP_RATIO,
                        num_heads=HEADS, depth=DEPTH, depth_single_blocks=DEPTH_SINGLE, axes_dim=AXES_DIM, theta=10_000,
                        qkv_bias=True, guidance_embed=True)
    torch.manual_seed(0)
    dit = Flux(params)
    controlnet = ControlNetFlux(params, controlnet_depth=CN_DEPTH)
    with torch.no_grad():  # random weights everywhere (the ControlNet's zero-initialised layers included)
        for prm in list(dit.parameters()) + list(controlnet.parameters()):
            prm.normal_(0, 0.08)

    def processors(model, double_idx, single_idx):
        procs = {}
        for name, proc in model.attn_processors.items():
            i = int(name.split(".")[1])
            if name.startswith("double_blocks") and i in double_idx:
                procs[name] = DoubleStreamBlockLoraProcessor(dim=HIDDEN, rank=RANK)
            elif name.startswith("single_blocks") and i in single_idx:
                sp = SingleStreamBlockLoraProcessor(dim=HIDDEN, rank=RANK)
                sp.proj_lora = LoRALinearLayer(HIDDEN + int(HIDDEN * MLP_RATIO), HIDDEN, RANK)
                procs[name] = sp
            else:
                procs[name] = proc
        model.set_attn_processor(procs)

    processors(dit, range(DEPTH), SINGLE_LORA)
    processors(controlnet, range(CN_DEPTH), SINGLE_LORA)
    base_dit = {k: v.clone() for k, v in dit.state_dict().items() if "_lora" not in k}
    base_cn = {k: v.clone() for k, v in controlnet.state_dict().items() if "_lora" not in k}
    with torch.no_grad():  # a LoRA part-way through training: up no longer zero
        for n, prm in list(dit.named_parameters()) + list(controlnet.named_parameters()):
            if "_lora" in n:
                prm.normal_(0, 0.1)
    for m in (dit, controlnet):
        m.train()
        for n, prm in m.named_parameters():
            prm.requires_grad = "_lora" in n

    g = torch.Generator().manual_seed(1)
    h, w = LATENT_HW
    x_1_latent = torch.randn(1, 16, h, w, generator=g)
    txt = torch.randn(1, TXT_TOKENS, CONTEXT, generator=g)
    vec = torch.randn(1, VEC, generator=g)
    control = torch.rand(1, 3, 8 * h, 8 * w, generator=g) * 2 - 1
    from einops import rearrange

    x_1 = rearrange(x_1_latent, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)
    img_ids = torch.zeros(h // 2, w // 2, 3)
    img_ids[..., 1] += torch.arange(h // 2)[:, None]
    img_ids[..., 2] += torch.arange(w // 2)[None, :]
    img_ids = img_ids.reshape(1, -1, 3)
    txt_ids = torch.zeros(1, TXT_TOKENS, 3)
    timesteps = get_schedule(999, (1024 // 8) * (1024 // 8) // 4, shift=True)
    t = torch.tensor([timesteps[T_INDEX]])
    x_0 = torch.randn(x_1.shape, generator=g)
    x_t = (1 - t) * x_1 + t * x_0
    guidance = torch.full((1,), 1.0)
    res = controlnet(img=x_t, img_ids=img_ids, txt=txt, controlnet_cond=control, txt_ids=txt_ids, y=vec, timesteps=t,
                     guidance=guidance)
    pred = dit(img=x_t, img_ids=img_ids, txt=txt, txt_ids=txt_ids, y=vec, timesteps=t, guidance=guidance,
               block_controlnet_hidden_states=res)
    loss = torch.nn.functional.mse_loss(pred.float(), (x_0 - x_1).float(), reduction="mean")
    loss.backward()

    tensors = {f"flux.{k}": v for k, v in base_dit.items()} | {f"controlnet.{k}": v for k, v in base_cn.items()}
    tensors |= {f"lora.{k}": v.detach().clone() for k, v in dit.state_dict().items() if "_lora" in k}
    tensors |= {f"cnlora.{k}": v.detach().clone() for k, v in controlnet.state_dict().items() if "_lora" in k}
    # parameters the loss does not reach (the last ControlNet block's text-stream proj) have no
    # gradient: stored as zeros
    grad = lambda prm: torch.zeros_like(prm) if prm.grad is None else prm.grad.clone()  # noqa: E731
    tensors |= {f"grad.lora.{n}": grad(prm) for n, prm in dit.named_parameters() if "_lora" in n}
    tensors |= {f"grad.cnlora.{n}": grad(prm) for n, prm in controlnet.named_parameters() if "_lora" in n}
    tensors |= dict(x_1_latent=x_1_latent, x_0=x_0, t=t, txt=txt, vec=vec, control=control, pred=pred.detach(),
                    loss=loss.detach().reshape(1), timesteps=torch.tensor(timesteps, dtype=torch.float64))

    # the dataset's preparation of two synthetic images at each aspect choice
    for name, (iw, ih) in IMAGES.items():
        rng = np.random.default_rng(len(name))
        pixels = rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)
        path = HERE / f".golden_{name}.png"
        Image.fromarray(pixels).save(path)
        try:
            ds = official_dataset.CustomImageControlDataset2([str(path)], [""], img_size=IMAGE_SIZE, random_ratio=True,
                                                              aux=lambda im: im)
            for ratio in ("16:9", "default", "1:1", "4:3"):
                official_dataset.random.choice = lambda seq, r=ratio: r
                img, _, ctrl = ds[0]
                tensors[f"data.{name}.image"] = torch.from_numpy(pixels)
                tensors[f"data.{name}.{ratio}.img"] = img.float()
                tensors[f"data.{name}.{ratio}.control"] = ctrl.float()
        finally:
            path.unlink()
    meta = {"hidden": str(HIDDEN), "heads": str(HEADS), "mlp_ratio": str(MLP_RATIO), "rank": str(RANK),
            "axes_dim": ",".join(map(str, AXES_DIM)), "image_size": str(IMAGE_SIZE)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(HERE / "vf3d_style_lora_golden.safetensors"),
              metadata=meta)
    print("wrote", HERE / "vf3d_style_lora_golden.safetensors", "loss", float(loss.detach()))  # noqa: T201

    # src/flux/util.py configs["flux-dev"].params (util.py itself needs optimum, unused here)
    dev = FluxParams(in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
                     num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10_000,
                     qkv_bias=True, guidance_embed=True)
    with torch.device("meta"):
        full = Flux(dev)
        full_cn = ControlNetFlux(dev, controlnet_depth=CN_DEPTH)
    keys = {"flux": {k: list(v.shape) for k, v in full.state_dict().items()},
            "controlnet": {k: list(v.shape) for k, v in full_cn.state_dict().items()}}
    (HERE / "vf3d_flux_keys.json").write_text(json.dumps(keys, indent=0, sort_keys=True) + "\n")
    print("wrote", HERE / "vf3d_flux_keys.json")  # noqa: T201


if __name__ == "__main__":
    main()
