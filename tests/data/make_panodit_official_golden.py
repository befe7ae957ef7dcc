"""Write ``panodit_official_golden.safetensors``: outputs of the OFFICIAL Look Beyond code
for a tiny seeded PanoDiT, so tests can compare Pano360 against it without the original.

Needs a checkout of YiGuYT/LookBeyond (commit ea00c7b) and ``timm``; not run by the tests:

    python tests/data/make_panodit_official_golden.py /path/to/LookBeyond/PanoDiT

It builds the official ``DiT`` (hidden 32, depth 2, heads 2, patch 8, 64x64 canvas),
perturbs its weights with a fixed seed (so no layer is zero), and records: the weights,
one forward pass, and ``sample_with_text.process_image``'s latent (before VAE decoding)
for 1000 steps (seam rolls at 750/500/250) and for 20 respaced steps, seed 0.
"""

import pathlib
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

CFG = dict(input_size=64, patch_size=8, hidden_size=32, depth=2, num_heads=2)


def load_official(root: pathlib.Path):
    sys.path.insert(0, str(root))
    from diffusion import create_diffusion  # the repo's diffusion/ package (sample_with_text's diffusion_warp)
    from models.DiT_with_text import DiT

    return DiT, create_diffusion


def official_sample(model, create_diffusion, steps, features, text):
    """sample_with_text.process_image up to (not including) the VAE decode."""
    diffusion = create_diffusion(str(steps))
    feats = torch.roll(features, shifts=-(features.shape[3] // 4), dims=3)
    mask = torch.zeros_like(feats, dtype=torch.bool)
    mask[:, :, 0:32, 16:48] = True
    padded = F.pad(mask, (0, 0, 16, 16))
    torch.manual_seed(0)
    z = torch.randn(1, 4, 64, 64)
    z[padded] = feats[mask]
    with torch.no_grad():
        out = diffusion.p_sample_loop(model.forward, z.shape, z, padded, clip_denoised=False,
                                      model_kwargs=dict(text=text.unsqueeze(0)), progress=False, device="cpu")
    return torch.roll(out, shifts=out.shape[3] // 4, dims=3)[:, :, 16:48, :]


def main(root: str) -> None:
    DiT, create_diffusion = load_official(pathlib.Path(root))
    torch.manual_seed(0)
    model = DiT(**CFG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(1)
    features = torch.randn(1, 4, 32, 64, generator=g)  # a scaled latent band, as extract_features.py writes
    text = torch.randn(1, 1024, generator=g)  # a (1, 1024) text feature
    x = torch.randn(2, 4, 64, 64, generator=g)
    t = torch.tensor([3, 777])
    with torch.no_grad():
        forward = model(x, t, text.expand(2, 1024)[:, None])
    tensors = {f"weights.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors |= {
        "features": features, "text": text, "forward.x": x, "forward.t": t, "forward.out": forward,
        "sample_1000": official_sample(model, create_diffusion, 1000, features, text),
        "sample_20": official_sample(model, create_diffusion, 20, features, text),
    }
    out = pathlib.Path(__file__).with_name("panodit_official_golden.safetensors")
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out), metadata={"source": "YiGuYT/LookBeyond@ea00c7b PanoDiT", "config": str(CFG)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
