"""Regenerate the VideoFrom3D SAG golden data (run by hand, not part of the test suite).

Runs the official anchor-sampling arithmetic on tiny inputs and saves ``vf3d_sag_golden.safetensors``:

- ``get_schedule`` (x-flux, ``src/flux/sampling.py``) for 25 steps at 1072×720 and 6 steps at 48×32;
- ``Warp`` (``sag_generate_anchor_view.py``): a 64×96 previous anchor carried through a 12×18
  ``corres_end`` colour code with holes, with the default hole dilation (5×5, 12 times) and a small
  one (3×3, twice), and the small one's mask resized to the 8×12 latent grid with the lines of the
  official ``forward`` (OpenCV nearest);
- ``denoise_controlnet`` (``src/flux/sampling.py``, the loop with the sparse replacement) for 6
  steps, 3 replacements, true CFG 3.5 from step 1 and control weight 0.8, with a toy flow model and
  toy ControlNet standing in for Flux (elementwise in the latent, so packing does not matter):
  ``v = 0.3·x − 0.5·t + 0.05·sin(3x) + 0.2·mean(txt) + 0.1·mean(control residual)``.

``Warp`` is taken from the official file's source (the module itself imports the whole x-flux
pipeline); ``sampling`` is imported from the checkout.  Nothing is vendored.

Usage::

    python tests/data/make_vf3d_sag_golden.py /path/to/VideoFrom3D
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

import numpy as np
import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
IMG_H, IMG_W = 64, 96
SMALL_DILATION = (3, 2)  # Warp(mask_dilation=...): the default (5, 12) swallows a tiny image
CODE_H, CODE_W = 12, 18
STEPS, NUM_REPLACEMENT = 6, 3
TRUE_GS, CONTROL_GS, START_CFG = 3.5, 0.8, 1


def official_warp(videofrom3d: pathlib.Path):
    src = (videofrom3d / "sag_generate_anchor_view.py").read_text()
    tree = ast.parse(src)
    wanted = {"Warp", "resize_colorcode", "colorcode2correspondence", "get_coord_mapper"}
    code = "\n\n".join(ast.get_source_segment(src, n) for n in tree.body
                       if isinstance(n, ast.FunctionDef) and n.name in wanted)
    import cv2

    ns = {"np": np, "cv2": cv2}
    exec(compile(code, str(videofrom3d / "sag_generate_anchor_view.py"), "exec"), ns)  # noqa: S102
    return ns["Warp"]


def synthetic_inputs():
    g = np.random.default_rng(7)
    previous = g.integers(0, 256, (IMG_H, IMG_W, 3), dtype=np.uint8)
    yy, xx = np.meshgrid(np.arange(CODE_H), np.arange(CODE_W), indexing="ij")
    xr = 0.92 * (xx + 0.5) + 1.1
    yr = 0.95 * (yy + 0.5) + 0.4
    valid = (xr < CODE_W) & (yr < CODE_H) & ~((xx >= 5) & (xx < 9) & (yy >= 3) & (yy < 6))
    code = np.zeros((CODE_H, CODE_W, 3), np.uint16)  # RGB
    code[..., 0] = np.where(valid, np.round(xr / CODE_W * 65535), 0)
    code[..., 1] = np.where(valid, np.round((1 - yr / CODE_H) * 65535), 0)
    code[..., 2] = np.where(valid, 65535, 0)
    return previous, code


class ToyFlux:
    """Stands in for x-flux's Flux: the attributes denoise_controlnet touches, an elementwise velocity."""

    def __init__(self):
        self.double_blocks = [type("B", (), {})() for _ in range(2)]
        self.single_blocks = [type("B", (), {})() for _ in range(2)]

    def __call__(self, img, img_ids, txt, txt_ids, y, timesteps, guidance, block_controlnet_hidden_states=None,
                 image_proj=None, ip_scale=1.0):
        t = timesteps[:, None, None]
        v = 0.3 * img - 0.5 * t + 0.05 * torch.sin(3 * img) + 0.2 * txt.mean()
        if block_controlnet_hidden_states:
            v = v + 0.1 * torch.stack([h.mean() for h in block_controlnet_hidden_states]).mean()
        return v


def toy_controlnet(img, img_ids, controlnet_cond, txt, txt_ids, y, timesteps, guidance):
    return [controlnet_cond.mean() * torch.ones(1) + timesteps, 0.5 * torch.ones(1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("videofrom3d", type=pathlib.Path)
    args = p.parse_args()
    sys.path.insert(0, str(args.videofrom3d))
    from src.flux import sampling  # the official sampler module

    out = {
        "timesteps_1072x720": torch.tensor(sampling.get_schedule(25, (1072 // 8) * (720 // 8) // 256, shift=True),
                                           dtype=torch.float64),
        "timesteps_tiny": torch.tensor(sampling.get_schedule(STEPS, (IMG_W // 8) * (IMG_H // 8) // 256, shift=True),
                                       dtype=torch.float64),
    }
    warp = official_warp(args.videofrom3d)
    previous, code = synthetic_inputs()
    _, mask_default = warp(previous, code[..., ::-1].copy())  # the official reader gives BGR
    warped, mask = warp(previous, code[..., ::-1].copy(), mask_dilation=SMALL_DILATION)
    import cv2

    lat_h, lat_w = IMG_H // 8, IMG_W // 8
    small = cv2.resize(mask.astype(np.float32), (lat_w, lat_h), interpolation=cv2.INTER_NEAREST)  # forward()
    out.update(previous=torch.from_numpy(previous), corres_end=torch.from_numpy(code.astype(np.int32)),
               warped=torch.from_numpy(warped), mask=torch.from_numpy(np.ascontiguousarray(mask[..., 0])).float(),
               mask_default=torch.from_numpy(np.ascontiguousarray(mask_default[..., 0])).float(),
               latent_mask=torch.from_numpy(np.ascontiguousarray(small)).float())

    gen = torch.Generator().manual_seed(11)
    x0 = torch.randn(1, 16, lat_h, lat_w, generator=gen)
    x1 = torch.randn(1, 16, lat_h, lat_w, generator=gen)  # stands for ae.encode(warped)
    txt, neg_txt = torch.full((1, 3, 8), 0.3), torch.full((1, 3, 8), -0.2)
    cond = torch.full((1, 3, IMG_H, IMG_W), 0.25)
    m = torch.from_numpy(np.ascontiguousarray(small))[None, None].expand(-1, 16, -1, -1)

    class Owner:  # ``self`` of denoise_controlnet: prepare() needs t5 and clip
        t5 = staticmethod(lambda prompt: txt)
        clip = staticmethod(lambda prompt: torch.zeros(1, 4))

    timesteps = sampling.get_schedule(STEPS, (IMG_W // 8) * (IMG_H // 8) // 256, shift=True)
    inp = sampling.prepare(t5=Owner.t5, clip=Owner.clip, img=x0, prompt="")
    for name, paint in (("result_first_anchor", False), ("result_replaced", True)):
        img = sampling.denoise_controlnet(
            Owner(), x0 if paint else None, x1 if paint else None, m if paint else None, "", IMG_H, IMG_W,
            ToyFlux(), toy_controlnet, img=inp["img"], img_ids=inp["img_ids"], txt=txt, txt_ids=inp["txt_ids"],
            vec=inp["vec"], neg_txt=neg_txt, neg_txt_ids=inp["txt_ids"], neg_vec=inp["vec"], controlnet_cond=cond,
            timesteps=timesteps, guidance=4.0, true_gs=TRUE_GS, controlnet_gs=CONTROL_GS,
            timestep_to_start_cfg=START_CFG, num_replacement=NUM_REPLACEMENT)
        out[name] = sampling.unpack(img, IMG_H, IMG_W)
    out.update(x0=x0, x1=x1)
    save_file({k: v.contiguous() for k, v in out.items()}, str(HERE / "vf3d_sag_golden.safetensors"),
              metadata={"steps": str(STEPS), "num_replacement": str(NUM_REPLACEMENT), "true_gs": str(TRUE_GS),
                        "control_gs": str(CONTROL_GS), "start_cfg": str(START_CFG)})
    print("wrote", HERE / "vf3d_sag_golden.safetensors")  # noqa: T201


if __name__ == "__main__":
    main()
