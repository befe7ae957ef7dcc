"""The training-free multi-panorama loop with analytic denoisers (no ComfyUI).

The world is a procedural box room ray-cast in closed form; the "model" for panorama i is
the exact posterior mean of Gaussian data around the room seen from camera i plus a
per-panorama colour bias, so independent samples disagree on shared content by the bias
difference, and the only thing that can make them agree is the held reprojection.
Agreement is measured with the room's TRUE distances, independently of the pipeline's
propagated ones.
"""

from __future__ import annotations

import math

import pytest
import torch

from pano360.pipelines.diffpano.sequence import (
    SequenceConfig,
    fill_background_distance,
    fill_holes,
    generate_sequence,
    latent_keep_mask,
    previous_references,
)
from pano360.pipelines.diffpano.synthetic import Ball, BoxRoom, random_room, random_walk, render_room
from pano360.sampling.euler import sample_euler
from pano360.sampling.held import HeldCells
from pano360.projection.epipolar import relative_pose, reproject_equirect
from pano360.projection.geometry import rotation_matrix

F64 = torch.float64
HW = (32, 64)
DATA_STD = 0.02
BIASES = (0.3, -0.3, 0.3)  # per-panorama colour bias of the analytic "model"
# Mean disagreement on shared content below which the panoramas count as consistent
# (measured 0.011 at 32x64: panorama 2 holds content of panorama 1's generated region,
# placed with propagated, not true, distances).  The sampler here works on pixels, so no
# cell is dilated (``dilate_cells=0``); each dilated ring is generated with the 0.6 bias step.
AGREE_TOL = 0.03


def karras_sigmas(n: int, lo: float = 0.02, hi: float = 10.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, Eq. 5, plus the final 0."""
    ramp = torch.linspace(0, 1, n)
    s = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


ROOM = BoxRoom(half=(3.0, 1.5, 4.0), balls=(Ball((0.8, -0.4, 1.6), 0.6),),
               freqs=((1.3, 0.7, 0.0), (-0.9, 0.0, 1.1), (0.0, 0.8, 0.6)), phases=(0.0, 0.5, 1.0))
ROTATIONS = torch.stack([rotation_matrix(torch.tensor(a, dtype=F64), 0.0, 0.0) for a in (0.0, 0.4, -0.3)])
POSITIONS = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.05, 0.4], [0.9, 0.1, -0.2]], dtype=F64)


def renders():
    return [render_room(ROOM, ROTATIONS[i], POSITIONS[i], HW) for i in range(3)]


def analytic_sampler(targets, steps: int = 10):
    sigmas = karras_sigmas(steps)

    def sample(i, held):
        means = targets[i] + BIASES[i]
        g = torch.Generator().manual_seed(100 + i)
        noise = torch.randn(1, *means.shape, generator=g)

        def denoise(x, sigma):
            a = DATA_STD**2 / (DATA_STD**2 + sigma**2)
            return means + a * (x - means)

        hold = None
        if held is not None:
            hold = HeldCells(latent=held.image[None], keep=held.keep[None], noise=noise)
        return sample_euler(denoise, noise * sigmas[0], sigmas, hold=hold)[0]

    return sample


def disagreement(images) -> float:
    """Mean |pano_i - pano_{i-1} seen from camera i| over pixels the TRUE geometry says are shared."""
    errs = []
    for i in range(1, len(images)):
        _, dist_prev = render_room(ROOM, ROTATIONS[i - 1], POSITIONS[i - 1], HW)
        R, t = relative_pose(ROTATIONS[i - 1], POSITIONS[i - 1], ROTATIONS[i], POSITIONS[i])
        rep = reproject_equirect(images[i - 1][None], dist_prev[None], R, t)
        vis = rep.visible[0, 0]
        errs.append((images[i] - rep.image[0]).abs().mean(0)[vis].mean())
    return float(torch.stack(errs).mean())


def test_sequential_panoramas_agree_on_shared_content_where_independent_ones_do_not():
    views = renders()
    targets = [img for img, _ in views]
    sample = analytic_sampler(targets)

    def depth(i, image, held):  # user-given distance for panorama 0, then propagated
        return views[0][1] if held is None else held.distance

    done = []
    result = generate_sequence(3, sample, depth, ROTATIONS, POSITIONS, SequenceConfig(num_refs=2, latent_factor=1, dilate_cells=0),
                               callback=lambda k, n: done.append((k, n)))
    independent = torch.stack([sample(i, None) for i in range(3)])
    seq, ind = disagreement(result.images), disagreement(independent)
    assert ind > 0.5  # the biases differ by 0.6
    assert seq < AGREE_TOL
    assert done == [(1, 3), (2, 3), (3, 3)]
    # held pixels are exactly the reprojected content the sampler was given
    assert not bool(result.held[0].any()) and float(result.held[1].float().mean()) > 0.5
    # panorama 0 is the model's own sample (bias +0.3 on the true room)
    assert (result.images[0] - targets[0] - BIASES[0]).abs().mean() < 2 * DATA_STD  # a sample: spread DATA_STD


def test_held_cells_are_kept_exactly_and_the_rest_is_generated():
    views = renders()
    sample = analytic_sampler([img for img, _ in views])
    captured = {}

    def spy(i, held):
        out = sample(i, held)
        captured[i] = (held, out)
        return out

    generate_sequence(2, spy, lambda i, img, held: views[0][1] if held is None else held.distance,
                      ROTATIONS[:2], POSITIONS[:2], SequenceConfig(latent_factor=1))
    held, out = captured[1]
    keep = held.keep.bool()
    assert torch.equal(out[:, keep[0]], held.image[:, keep[0]])
    assert ((out - views[1][0] - BIASES[1]).abs().mean(0)[~keep[0]]).mean() < 2 * DATA_STD


def test_latent_keep_mask_holds_only_fully_visible_cells_and_grows_the_hole():
    vis = torch.ones(1, 16, 32, dtype=torch.bool)
    vis[0, 5, 9] = False  # one hidden pixel in cell (1, 2) of 4x4 cells
    keep = latent_keep_mask(vis, 4, 0)
    assert keep.shape == (1, 4, 8) and keep[0, 1, 2] == 0 and keep.sum() == 31
    grown = latent_keep_mask(vis, 4, 1)
    assert grown[0, 0:3, 1:4].sum() == 0 and grown.sum() == 32 - 9
    seam = torch.ones(1, 16, 32, dtype=torch.bool)
    seam[0, 8, 0] = False  # left border cell: the hole grows across the seam
    assert latent_keep_mask(seam, 4, 1)[0, 2, 7] == 0
    with pytest.raises(ValueError, match="latent factor"):
        latent_keep_mask(torch.ones(1, 10, 20, dtype=torch.bool), 8, 0)


def test_fills():
    img = torch.arange(2 * 8 * 16, dtype=torch.float32).view(2, 8, 16)
    known = torch.rand(1, 8, 16, generator=torch.Generator().manual_seed(0)) > 0.5
    filled = fill_holes(img, known)
    assert torch.equal(filled[:, known[0]], img[:, known[0]]) and torch.isfinite(filled).all()
    dist = torch.full((1, 8, 16), 2.0)
    dist[0, :, 8:] = 5.0
    known = torch.ones(1, 8, 16, dtype=torch.bool)
    known[0, 3:5, 6:10] = False  # a hole across a depth edge takes the far side
    out = fill_background_distance(dist, known)
    assert torch.equal(out[0, 3:5, 6:10], torch.full((2, 4), 5.0))


def test_previous_references_are_the_nearest_earlier_cameras():
    pos = torch.tensor([[0.0, 0, 0], [5.0, 0, 0], [1.0, 0, 0], [4.0, 0, 0]])
    assert previous_references(pos, 0, 2) == ()
    assert previous_references(pos, 3, 2) == (1, 2)
    assert previous_references(pos, 2, 1) == (0,)


def test_room_renderer_matches_closed_form_distances():
    room = BoxRoom(half=(3.0, 1.5, 4.0), balls=(), freqs=((1, 0, 0),) * 3, phases=(0, 0, 0))
    img, dist = render_room(room, torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64), (64, 128))
    # the two centre columns on the horizon rows look (almost) straight ahead at the far wall z = 4
    lat = (0.5 - 31.5 / 64) * math.pi
    lon = (0.5 / 128) * 2 * math.pi
    assert float(dist[0, 31, 64]) == pytest.approx(4.0 / (math.cos(lat) * math.cos(lon)), rel=1e-6)
    # the top row hits the ceiling y = 1.5
    lat0 = (0.5 - 0.5 / 64) * math.pi
    assert float(dist[0, 0, 10]) == pytest.approx(1.5 / math.sin(lat0), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    room = random_room(g)
    rots, pos = random_walk(room, 4, 0.5, g)
    assert all(room.free(p) for p in pos) and torch.allclose((pos[1:] - pos[:-1]).norm(dim=-1),
                                                             torch.full((3,), 0.5, dtype=F64))


# --------------------------------------------------------------------------- latent sampler


def test_latent_step_sampler_batches_the_held_target_with_its_references():
    from pano360.pipelines.diffpano.sequence import LatentStepSampler, depth_source

    factor = 4
    encode = lambda img: torch.nn.functional.avg_pool2d(img, factor)  # noqa: E731  (1,3,H,W) -> (1,3,h,w)
    decode = lambda lat: torch.nn.functional.interpolate(lat, scale_factor=factor, mode="nearest")  # noqa: E731
    calls = []

    def denoise(samples, mask, views, index):
        calls.append((samples.clone(), None if mask is None else mask.clone(), views, index))
        out = samples.clone()
        if mask is not None:  # "generate" = fill with the panorama's index
            out = torch.where(mask > 0.5, torch.full_like(out, 0.1 * index), out)
        return out

    views = renders()
    first = views[0][0]
    empty = torch.zeros(1, 3, HW[0] // factor, HW[1] // factor)
    sampler = LatentStepSampler(encode, decode, denoise, empty, ROTATIONS, POSITIONS, epipolar=True, first_image=first)
    depth = depth_source("propagate", radius=3.0, first_distance=views[0][1])
    result = generate_sequence(3, sampler, depth, ROTATIONS, POSITIONS, SequenceConfig(num_refs=2, latent_factor=factor))
    assert torch.equal(result.images[0], first) and len(calls) == 2  # panorama 0 was given, not sampled
    samples, mask, v, index = calls[1]  # panorama 2: target + its 2 references (1, then 0: nearest first)
    assert index == 2 and samples.shape == (3, 3, *empty.shape[-2:])
    assert torch.equal(samples[1], sampler.latents[1][0]) and torch.equal(samples[2], sampler.latents[0][0])
    assert mask.shape == (3, 1, *empty.shape[-2:]) and float(mask[1:].abs().max()) == 0.0  # references held
    assert 0.0 < float(mask[0].mean()) < 1.0
    assert v.references.tolist() == [[1, 2], [-1, -1], [-1, -1]]
    assert torch.equal(v.positions, POSITIONS[[2, 1, 0]]) and torch.equal(v.rotations, ROTATIONS[[2, 1, 0]])
    assert set(sampler.latents) == {0, 1, 2}


def test_depth_sources():
    from pano360.pipelines.diffpano.sequence import HeldView, depth_source

    img = torch.rand(3, 8, 16)
    est = lambda image: torch.full((1, 8, 16), 2.0) + image[:1]  # noqa: E731
    d0 = depth_source("estimate", radius=5.0, estimate=est)(0, img, None)
    assert float(d0.median()) == pytest.approx(5.0)
    vis = torch.zeros(1, 8, 16, dtype=torch.bool)
    vis[..., :8] = True
    held = HeldView(1, img, vis, torch.ones(1, 2, 4), torch.full((1, 8, 16), 7.0), (0,))
    d1 = depth_source("estimate", radius=5.0, estimate=lambda image: torch.full((1, 8, 16), 2.0))(1, img, held)
    assert torch.equal(d1, torch.full((1, 8, 16), 7.0))  # scaled to the reprojected distances, kept where seen
    assert torch.equal(depth_source("constant", radius=3.0)(1, img, held), torch.full((1, 8, 16), 3.0))
    assert torch.equal(depth_source("propagate", radius=3.0)(1, img, held), held.distance)
    with pytest.raises(ValueError, match="needs an estimator"):
        depth_source("estimate", radius=1.0)
