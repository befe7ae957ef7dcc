"""Regenerate the VideoFrom3D warped-noise golden data (run by hand, not part of the test suite).

Runs the official preprocessing chain of VideoFrom3D's ``assets/mk_noise.py`` on a tiny,
synthetic arc and saves inputs and outputs to ``vf3d_noise_golden.safetensors``:

1. correspondence colour codes (16-bit R/G/B, the format the official code reads) of a
   small zooming/panning camera with an occluded patch, made here with numpy;
2. ``colorcode2correspondence`` + ``correspondence2opticalflow`` (official) -> forward flows
   ``dx``, ``dy`` (−10000 where no pixel maps, as the official code leaves them);
3. ``NoiseWarper`` (16 channels, warped at 8× the flow resolution, ``FLOW = 2**3``) and
   ``downscale_noise`` by ``round(FRAME * FLOW) * LATENT = 32`` (official), seeded with
   ``torch.manual_seed(SEED)`` on the CPU.

The same warper is run once more from Go-with-the-Flow's own source (RyannDaGreat/CommonSource
``noise_warp.py``, the official ``NoiseWarper``), and the script checks that both agree before
saving.  Official code is imported from checkouts given on the command line, never vendored;
it needs the ``rp`` package (``pip install rp``) and OpenCV.  CommonSource's unrelated imports
(``raft``, ``background_remover``) are stubbed.

Usage::

    python tests/data/make_vf3d_noise_golden.py /path/to/VideoFrom3D /path/to/CommonSource
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import types

import numpy as np
import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
SEED = 1234
FLOW_H, FLOW_W = 8, 12  # correspondence / flow resolution (official: 240 x 360)
NUM_MAPS = 4  # correspondence maps in the arc (official: 12 per arc)
CHANNELS = 16  # mk_noise.py noise_channels
FLOW_SCALE = 8  # mk_noise.py FLOW = 2**3
DOWNSCALE = 32  # mk_noise.py round(FRAME * FLOW) * LATENT = round(0.5 * 8) * 8
CODE_MAX = 65535  # 16-bit colour code


def synthetic_colour_codes() -> np.ndarray:
    """(NUM_MAPS, FLOW_H, FLOW_W, 3) uint16 RGB colour codes: map k sends pixel (x, y) of view k+1 to
    the continuous position ``(a·(x+.5) + bx, c·(y+.5) + by)`` of view k (a zoom in and a pan), with an
    occluded rectangle and everything that lands outside view k marked invalid (B = 0)."""
    codes = np.zeros((NUM_MAPS, FLOW_H, FLOW_W, 3), np.uint16)
    yy, xx = np.meshgrid(np.arange(FLOW_H), np.arange(FLOW_W), indexing="ij")
    for k in range(NUM_MAPS):
        a, c = 0.9 - 0.05 * k, 0.93
        bx, by = 0.9 + 0.3 * k, 0.6 - 0.2 * k
        xr = a * (xx + 0.5) + bx
        yr = c * (yy + 0.5) + by
        valid = (xr >= 0) & (xr < FLOW_W) & (yr >= 0) & (yr < FLOW_H)
        valid &= ~((xx >= 2 + k) & (xx < 5 + k) & (yy >= 3) & (yy < 6))  # an occluder
        r = np.round(xr / FLOW_W * CODE_MAX)
        g = np.round((1.0 - yr / FLOW_H) * CODE_MAX)
        codes[k, ..., 0] = np.where(valid, np.clip(r, 0, CODE_MAX), 0)
        codes[k, ..., 1] = np.where(valid, np.clip(g, 0, CODE_MAX), 0)
        codes[k, ..., 2] = np.where(valid, CODE_MAX, 0)
    return codes


def _import_file(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_chain(mk, warper_cls, codes: np.ndarray):
    """mk_noise.py main()'s loop for one arc, at the tiny size."""
    torch.manual_seed(SEED)
    warper = warper_cls(c=CHANNELS, h=FLOW_SCALE * FLOW_H, w=FLOW_SCALE * FLOW_W, device="cpu",
                        post_noise_alpha=0, progressive_noise_alpha=0, warp_kwargs={})
    full = [warper.noise.clone()]
    noises = [mk.downscale_noise(warper.noise, DOWNSCALE)]
    dxs, dys = [], []
    for code in codes:
        x_1, y_1, x_2, y_2 = mk.colorcode2correspondence(code.astype(np.int64))
        dx, dy = mk.correspondence2opticalflow(x_1, y_1, x_2, y_2, FLOW_W, FLOW_H)
        dxs.append(torch.from_numpy(dx.astype(np.float32)))
        dys.append(torch.from_numpy(dy.astype(np.float32)))
        noise = warper(torch.from_numpy(dx), torch.from_numpy(dy)).noise
        full.append(noise.clone())
        noises.append(mk.downscale_noise(noise, DOWNSCALE))
    return torch.stack(dxs), torch.stack(dys), torch.stack(full), torch.stack(noises)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("videofrom3d", type=pathlib.Path, help="checkout of ant-arktis/VideoFrom3D")
    p.add_argument("commonsource", type=pathlib.Path, help="checkout of RyannDaGreat/CommonSource")
    args = p.parse_args()

    mk = _import_file("vf3d_mk_noise", args.videofrom3d / "assets" / "mk_noise.py")
    for stub in ("raft", "background_remover"):
        sys.modules.setdefault(stub, types.ModuleType(stub))
    sys.modules["background_remover"].BackgroundRemover = None
    gwtf = _import_file("gwtf_noise_warp", args.commonsource / "noise_warp.py")

    codes = synthetic_colour_codes()
    dx, dy, full, noises = run_chain(mk, mk.NoiseWarper, codes)
    _, _, full_gwtf, noises_gwtf = run_chain(mk, gwtf.NoiseWarper, codes)
    if not (torch.allclose(full, full_gwtf, atol=1e-6) and torch.allclose(noises, noises_gwtf, atol=1e-6)):
        raise SystemExit("VideoFrom3D's mk_noise.NoiseWarper and Go-with-the-Flow's NoiseWarper disagree")

    out = HERE / "vf3d_noise_golden.safetensors"
    save_file(
        {
            "colour_codes": torch.from_numpy(codes.astype(np.int32)),  # (K, h, w, 3) RGB, 16-bit values
            "dx": dx,  # (K, h, w) forward flow of view k -> k+1, at the flow resolution
            "dy": dy,
            "noise_full_last": full[-1],  # (C, 8h, 8w) NoiseWarper.noise after all K warps
            "noise_latent": noises,  # (K+1, C, 8h/32, 8w/32) downscale_noise(..., 32)
        },
        str(out),
        metadata={"seed": str(SEED), "flow_scale": str(FLOW_SCALE), "downscale": str(DOWNSCALE)},
    )
    print(f"{out}: noise_full {tuple(full.shape)}, noise_latent {tuple(noises.shape)}")  # noqa: T201


if __name__ == "__main__":
    main()
