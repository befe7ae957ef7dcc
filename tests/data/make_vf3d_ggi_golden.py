"""Regenerate the VideoFrom3D GGI golden data (run by hand, not part of the test suite).

Runs the official inbetweening pipeline (``mypipes/pipe_intp2.py`` ``CogVideoXImageToVideoPipeline``,
driven the way ``ggi.py`` drives it) on a tiny case and saves ``vf3d_ggi_golden.safetensors``:

- a tiny diffusers ``CogVideoXTransformer3DModel`` with 48 input channels, learned positional
  embedding and rotary embedding (the 5B-I2V layout at toy size), seeded weights (saved);
- a stand-in VAE (average-pool by 8, a fixed 3->16 channel map, first frame alone then groups of 4,
  as CogVideoX's causal VAE groups frames; a diagonal Gaussian with log-variance -3) so the
  pipeline's ``latent_dist.sample(generator)`` and scaling run as in the real one;
- ``ggi.py``'s inputs: start/end anchors, a HED clip of 9 frames (6 frames + 3 copies of the last),
  warped noise mixed at degradation 0.5, CogVideoX's DDIM from the 5B scheduler configuration,
  4 steps, CFG 6, text embeddings given directly (no T5);
- outputs: the pipeline's ``image_latents`` layout (``prepare_latents``) and the final latents.

Usage (needs diffusers; the official module is imported from the checkout; its unused ``skimage``
import is stubbed when scikit-image is not installed)::

    python tests/data/make_vf3d_ggi_golden.py /path/to/VideoFrom3D
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import types

import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
TINY_CONFIG = dict(num_attention_heads=3, attention_head_dim=16, in_channels=48, out_channels=16, num_layers=2,
                   time_embed_dim=16, text_embed_dim=8, sample_width=12, sample_height=8, sample_frames=9,
                   patch_size=2, max_text_seq_length=4, use_learned_positional_embeddings=True,
                   use_rotary_positional_embeddings=True)
# THUDM/CogVideoX-5b-I2V scheduler/scheduler_config.json
SCHEDULER_5B = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
                    clip_sample_range=1.0, num_train_timesteps=1000, prediction_type="v_prediction",
                    rescale_betas_zero_snr=True, sample_max_value=1.0, set_alpha_to_one=True, snr_shift_scale=1.0,
                    steps_offset=0, timestep_spacing="trailing")
FRAMES, HEIGHT, WIDTH, STEPS, CFG, DEGRADATION, SEED = 9, 64, 96, 4, 6.0, 0.5, 43
STANDIN_LOGVAR = -3.0
CHANNEL_MAP_SEED = 5


def standin_mean(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> (B, 16, 1 + (F-1)//4, H/8, W/8): the stand-in VAE's mean."""
    g = torch.Generator().manual_seed(CHANNEL_MAP_SEED)
    cmap = torch.randn(16, 3, generator=g) * 0.5
    pooled = torch.nn.functional.avg_pool3d(video.float(), (1, 8, 8))
    first, rest = pooled[:, :, :1], pooled[:, :, 1:]
    if rest.shape[2]:
        rest = rest.reshape(*rest.shape[:2], -1, 4, *rest.shape[3:]).mean(3)
    grouped = torch.cat([first, rest], 2)
    return torch.einsum("oc,bcfhw->bofhw", cmap, grouped)


def make_standin_vae():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    class StandInVAE(torch.nn.Module):
        config = types.SimpleNamespace(block_out_channels=[1, 1, 1, 1], temporal_compression_ratio=4,
                                       scaling_factor=0.7, invert_scale_latents=False)
        dtype = torch.float32
        device = torch.device("cpu")

        def encode(self, x):
            mean = standin_mean(x)
            params = torch.cat([mean, torch.full_like(mean, STANDIN_LOGVAR)], 1)
            return types.SimpleNamespace(latent_dist=DiagonalGaussianDistribution(params))

    return StandInVAE()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("videofrom3d", type=pathlib.Path)
    args = p.parse_args()
    sys.path.insert(0, str(args.videofrom3d))
    try:  # pipe_intp2 imports skimage.transform.resize without using it on this path
        import skimage.transform  # noqa: F401
    except ImportError:
        sys.modules["skimage"] = types.ModuleType("skimage")
        sys.modules["skimage.transform"] = types.ModuleType("skimage.transform")
        sys.modules["skimage.transform"].resize = None
    from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from mypipes.pipe_intp2 import CogVideoXImageToVideoPipeline  # the official pipeline

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(**TINY_CONFIG).eval()
    with torch.no_grad():
        for prm in transformer.parameters():
            prm.normal_(0, 0.15)
    pipe = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=make_standin_vae(),
                                         transformer=transformer, scheduler=CogVideoXDDIMScheduler(**SCHEDULER_5B))

    g = torch.Generator().manual_seed(1)
    start = torch.rand(3, HEIGHT, WIDTH, generator=g)  # anchors in [0, 1]
    end = torch.rand(3, HEIGHT, WIDTH, generator=g)
    hed = (torch.rand(FRAMES, 3, HEIGHT, WIDTH, generator=g) > 0.8).float() * 2 - 1  # ggi.py: ToTensor()*2-1
    warped = torch.randn(3, HEIGHT // 8, WIDTH // 8, 16, generator=g)  # noises.npy, F H W C

    # ggi.py: cond latents (sampled, x scaling factor), noise mixing (global RNG), then the pipeline
    torch.manual_seed(123)
    cond = hed[None].permute(0, 2, 1, 3, 4)  # [B, C, F, H, W]
    cond_latents = (pipe.vae.encode(cond).latent_dist.sample() * 0.7).permute(0, 2, 1, 3, 4)
    noise = warped.permute(0, 3, 1, 2)[None]
    fresh = torch.randn_like(noise)
    mixed = (fresh * DEGRADATION + noise * (1 - DEGRADATION)) / (DEGRADATION**2 + (1 - DEGRADATION) ** 2) ** 0.5

    pos = torch.randn(1, 4, 8, generator=g)
    neg = torch.randn(1, 4, 8, generator=g)
    images = [start[None], end[None]]  # VideoProcessor.preprocess accepts tensors in [0, 1]

    image_latents = pipe.prepare_latents(
        pipe.video_processor.preprocess(images, height=HEIGHT, width=WIDTH), 1, 16, FRAMES, HEIGHT, WIDTH,
        torch.float32, "cpu", torch.Generator().manual_seed(SEED), mixed)[1]
    out = pipe(image=images, cat_conditions=cond_latents, prompt_embeds=pos, negative_prompt_embeds=neg,
               height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=CFG,
               latents=mixed, generator=torch.Generator().manual_seed(SEED), output_type="latent").frames

    tensors = {f"transformer.{k}": v.contiguous() for k, v in transformer.state_dict().items()}
    tensors.update(start=start, end=end, hed=hed.to(torch.int8), cond_latents=cond_latents, mixed=mixed, pos=pos, neg=neg,
                   image_latents=image_latents, result=out)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(HERE / "vf3d_ggi_golden.safetensors"),
              metadata={"seed": str(SEED), "steps": str(STEPS), "cfg": str(CFG), "frames": str(FRAMES),
                        "standin_logvar": str(STANDIN_LOGVAR), "channel_map_seed": str(CHANNEL_MAP_SEED)})
    print("wrote", HERE / "vf3d_ggi_golden.safetensors", tuple(out.shape))  # noqa: T201


if __name__ == "__main__":
    main()
