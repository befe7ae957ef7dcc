"""Look Beyond stage 3: SVD keyframe inbetweening with two passes per step (host-free).

From ``jeanne-wang/svd_keyframe_interpolation`` (used unchanged by Look Beyond's
``VideoDiffusion/videogen.py``; spec §1c), per denoising step:

1. **forward pass**: the base UNet on the latents, conditioned on frame 1 (CLIP embedding and
   VAE latent); the probabilities of the first temporal self-attention (``attn1`` of
   ``temporal_transformer_blocks.0``) of every spatio-temporal transformer are stored
   (``attn_ctrl/attention_control.py`` ``AttentionStoreProcessor``);
2. **backward pass**: the merged UNet on the time-reversed latents, conditioned on frame 2, its
   temporal ``attn1`` probabilities *replaced* by the stored ones flipped on both the query and
   the key axis (``AttentionFlipCtrlProcessor``: ``0 * own + 1 * flip(stored)``);
3. per-frame classifier-free guidance in each pass (unconditional branch: zero CLIP embedding
   and zero image latent), the backward prediction flipped back in time, and the two fused:
   ``w * forward + (1 - w) * backward``.

Guidance and fusion weights (``FrameInterpolationWithNoiseInjectionPipeline.__call__``):

=================  ==================================  ==========================
                   guidance g (per frame)              fusion weight w
=================  ==================================  ==========================
equal              (lin + flip(lin)) / 2               0.5
weighted           lin = linspace(min, max, T)         linspace(1, 0, T)
equal + poses      (gp + flip(gp)) / 2                 0.5
weighted + poses   gp = w_s * min + w_t * max          w_s
=================  ==================================  ==========================

with the pose-similarity weights ``w_s, w_t`` of :func:`pose_similarity_weights` (Look Beyond's
``videogen.py``).  The reference runs CFG only when ``max(g) > 1``; otherwise each pass is
conditional only.  Fusing denoised (x0) predictions equals fusing v-predictions: both passes see
the same sigma and the weights sum to one, and the skip term ``c_skip * x`` is common to both.

Noise re-injection (``pipeline_frame_interpolation_with_noise_injection.py``) is
:class:`...sampling.euler.NoiseReinjection` in the pack's one Euler loop.  The reference's patched
scheduler does not advance its step index inside ``step``; Look Beyond's ``videogen.py`` imports
diffusers' stock scheduler, whose ``step`` does, and advances it again itself, so the run crashes;
the pack's loop indexes its sigmas explicitly, once per outer step.

Nothing here imports ComfyUI: the ComfyUI side routes its temporal ``attn1`` modules through
:class:`...sampling.hooks.HookedAttention` (an object patch) and hands a
:class:`KeyframeAttentionHook` to them in ``transformer_options[KEYFRAME_HOOK_KEY]``; tests drive
diffusers' twin UNet the same way.  Docs: docs/lookbeyond_inbetween.md.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...cameras import CameraPath
from ...models.lookbeyond_pose import LookBeyondPoseConditioner
from ...projection.geometry import camera_plucker

__all__ = [
    "KEYFRAME_HOOK_KEY",
    "LOOKBEYOND_NUM_FRAMES",
    "LOOKBEYOND_STEPS",
    "LOOKBEYOND_EXPORT_FPS",
    "MIN_GUIDANCE",
    "MAX_GUIDANCE",
    "Pass",
    "InbetweenSchedule",
    "inbetween_schedule",
    "rotation_angle",
    "pose_similarity_weights",
    "select_between",
    "attention_probabilities",
    "TemporalAttentionControl",
    "KeyframeAttentionHook",
    "keyframe_denoise",
    "COND_NAMES",
    "two_pass_predictor",
    "KeyframeConditioning",
    "keyframe_conditioning",
    "InbetweenPoses",
    "inbetween_poses",
    "stored_map_bytes",
]

# transformer_options key under which the hook of the current pass travels to the UNet.
KEYFRAME_HOOK_KEY = "pano360_keyframe_attention"
# Look Beyond videogen.py defaults: --num_frames 14, --num_inference_steps 50; README --fps 24
# (the export frame rate; the model is conditioned on fps 7, i.e. fps id 6).
LOOKBEYOND_NUM_FRAMES = 14
LOOKBEYOND_STEPS = 50
LOOKBEYOND_EXPORT_FPS = 24
CONDITIONING_FPS = 7  # FrameInterpolationWithNoiseInjectionPipeline fps (the UNet sees fps - 1)
MOTION_BUCKET_ID = 127  # motion_bucket_id
NOISE_AUG_STRENGTH = 0.02  # noise_aug_strength, in [-1, 1] pixel units
# svd_keyframe_interpolation's keyframe_interpolation.sh: 5 re-injections over the first half.
REINJECT_RATIO = 0.5
# FrameInterpolationWithNoiseInjectionPipeline.__call__ defaults (min/max_guidance_scale).
MIN_GUIDANCE = 1.0
MAX_GUIDANCE = 3.0
# videogen.py pose_similarity(sigma_q=1.0, sigma_t=1.0) and its w_sum = w_s + w_t + 1e-8.
POSE_SIGMA_ROTATION = 1.0
POSE_SIGMA_TRANSLATION = 1.0
POSE_WEIGHT_EPS = 1e-8
# ComfyUI's cond_or_uncond labels: the index of the cond in the list given to calc_cond_batch.
COND, UNCOND = 0, 1


class Pass(enum.Enum):
    """The two UNet passes of a step."""

    FORWARD = "forward"  # base UNet, frame 1, stores its temporal attention maps
    BACKWARD = "backward"  # merged UNet, frame 2, time-reversed, replays the flipped maps


# ---------------------------------------------------------------- schedules and poses


@dataclass(frozen=True)
class InbetweenSchedule:
    """Per-frame guidance ``g (T,)`` (applied in each pass's own frame order, as the reference
    does) and the forward pass's fusion weight ``w (T,)`` (output frame order)."""

    guidance: Tensor
    weight: Tensor

    @property
    def classifier_free(self) -> bool:
        """Whether the unconditional branch runs (reference: ``guidance_scale.max() > 1``)."""
        return bool(self.guidance.max() > 1)


def inbetween_schedule(num_frames: int, weighted: bool, min_guidance: float = MIN_GUIDANCE,
                       max_guidance: float = MAX_GUIDANCE,
                       pose_weights: tuple[Tensor, Tensor] | None = None) -> InbetweenSchedule:
    """Guidance and fusion weights of the table in the module docstring, float64.

    pose_weights: ``(w_source, w_target)``, each ``(T,)``, from :func:`pose_similarity_weights`;
    None uses the frame index (linspace).
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 for inbetweening, got {num_frames}")
    if pose_weights is None:
        g = torch.linspace(min_guidance, max_guidance, num_frames, dtype=torch.float64)
        w = torch.linspace(1.0, 0.0, num_frames, dtype=torch.float64)
    else:
        w_s, w_t = (p.to(torch.float64) for p in pose_weights)
        if w_s.shape != (num_frames,) or w_t.shape != (num_frames,):
            raise ValueError(f"pose_weights: expected two ({num_frames},) tensors, got {tuple(w_s.shape)}, {tuple(w_t.shape)}")
        g = w_s * min_guidance + w_t * max_guidance
        w = w_s
    if weighted:
        return InbetweenSchedule(g, w)
    return InbetweenSchedule((g + g.flip(0)) * 0.5, torch.full((num_frames,), 0.5, dtype=torch.float64))


def rotation_angle(r_a: Tensor, r_b: Tensor) -> Tensor:
    """Geodesic angle (radians, ``[0, pi]``) between rotations ``(..., 3, 3)``.

    Equals videogen.py's ``2 acos |q_a . q_b|`` of the two rotations' unit quaternions; computed
    as ``atan2(|axis|, cos)`` of the relative rotation, which stays accurate near 0 and pi.
    """
    rel = r_a.transpose(-1, -2) @ r_b
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) * 0.5
    axis = torch.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]], -1)
    return torch.atan2(axis.norm(dim=-1) * 0.5, cos)


def pose_similarity_weights(c2w: Tensor, source: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Look Beyond's per-frame weights of the two keyframes (``videogen.py`` ``pose_similarity``).

    c2w: ``(T, 3|4, 4)`` camera-to-world of the inbetween frames; source, target: ``(3|4, 4)``
    of keyframes 1 and 2.  ``w_k = exp(-angle(R, R_k) / 1) * exp(-|t - t_k| / 1)``, normalised
    to ``w_s + w_t = 1`` (up to the reference's 1e-8).  Returns ``(w_source, w_target)``, ``(T,)``.
    """
    c2w, source, target = (p.to(torch.float64) for p in (c2w, source, target))
    rot, pos = c2w[..., :3, :3], c2w[..., :3, 3]

    def weight(key: Tensor) -> Tensor:
        w_rot = torch.exp(-rotation_angle(rot, key[:3, :3].expand_as(rot)) / POSE_SIGMA_ROTATION)
        w_pos = torch.exp(-(pos - key[:3, 3]).norm(dim=-1) / POSE_SIGMA_TRANSLATION)
        return w_rot * w_pos

    w_s, w_t = weight(source), weight(target)
    total = w_s + w_t + POSE_WEIGHT_EPS
    return w_s / total, w_t / total


def select_between(num_rows: int, num_frames: int, first: int = 0, last: int | None = None) -> list[int]:
    """Indices of ``num_frames`` cameras among rows ``first..last`` (inclusive), spread as
    ``videogen.py`` ``select_between_frames`` does (``np.linspace(..., dtype=int)``), ordered
    from ``first`` to ``last`` (descending when ``first > last``).  ValueError when the range
    holds fewer rows than frames."""
    last = num_rows - 1 if last is None else last
    if not (0 <= first < num_rows and 0 <= last < num_rows):
        raise ValueError(f"rows {first}..{last} outside the camera path's 0..{num_rows - 1}")
    lo, hi = min(first, last), max(first, last)
    count = hi - lo + 1
    if count < num_frames:
        raise ValueError(f"{count} cameras between rows {lo} and {hi}, need at least {num_frames} (one per frame)")
    rows = [lo + int(i) for i in np.linspace(0, count - 1, num_frames, dtype=int)]
    return rows if first <= last else rows[::-1]


# ---------------------------------------------------------------- attention control


def attention_probabilities(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """``softmax(q k^T / sqrt(d_head))`` per head: ``(N, T, C)`` x2 -> ``(N, heads, T, T)``.

    Computed in at least float32 (fp16/bf16 inputs are upcast), returned in ``q``'s dtype.
    """
    n, t, c = q.shape
    dtype = torch.promote_types(q.dtype, torch.float32)
    qh = q.reshape(n, t, heads, c // heads).transpose(1, 2).to(dtype)
    kh = k.reshape(n, k.shape[1], heads, c // heads).transpose(1, 2).to(dtype)
    scores = (qh @ kh.transpose(-1, -2)) * (c // heads) ** -0.5
    return scores.softmax(-1).to(q.dtype)


def _apply_probabilities(probs: Tensor, v: Tensor) -> Tensor:
    """``(N, heads, T, T)`` x ``(N, T, C)`` -> ``(N, T, C)``."""
    n, t, c = v.shape
    heads = probs.shape[1]
    vh = v.reshape(n, t, heads, c // heads).transpose(1, 2)
    return (probs.to(v.dtype) @ vh).transpose(1, 2).reshape(n, t, c)


class TemporalAttentionControl:
    """The temporal ``attn1`` maps of one step, shared by the two passes of that step.

    The forward pass stores ``(layer, label) -> (S, heads, T, T)`` (``label``: ComfyUI's
    ``cond_or_uncond`` entry of the chunk, so a batched or split cond/uncond call pairs up the
    same way in both passes); the backward pass replays them flipped.  One object per
    sampling run; a new forward pass overwrites the previous step's maps.
    """

    def __init__(self) -> None:
        self._maps: dict[tuple[str, int], Tensor] = {}

    def hook(self, pass_: Pass) -> "KeyframeAttentionHook":
        return KeyframeAttentionHook(self, pass_)

    def store(self, layer: str, labels: Sequence[int], probs: Tensor) -> None:
        for label, chunk in zip(labels, probs.chunk(len(labels))):
            self._maps[(layer, int(label))] = chunk

    def replay(self, layer: str, labels: Sequence[int]) -> Tensor:
        """The stored maps of ``labels`` (batch order), flipped on the query and key axes."""
        try:
            chunks = [self._maps[(layer, int(label))] for label in labels]
        except KeyError:
            raise RuntimeError(f"keyframe inbetweening: the backward pass reached {layer} before the forward "
                               "pass stored its attention maps") from None
        return torch.cat(chunks).flip(-2, -1)

    def clear(self) -> None:
        self._maps.clear()

    def nbytes(self) -> int:
        return sum(m.numel() * m.element_size() for m in self._maps.values())


class KeyframeAttentionHook:
    """Computes one temporal ``attn1`` call of a pass (the value put into
    ``transformer_options[KEYFRAME_HOOK_KEY]``).

    ``attention`` is any module with ``to_q``, ``to_k``, ``to_v``, ``to_out[0]`` and ``heads``
    (ComfyUI's ``CrossAttention``, diffusers' ``Attention``).  ``alternate``: the backward pass's
    own ``to_v.weight``, ``to_out.0.weight``, ``to_out.0.bias`` where they differ from
    ``attention``'s (the ``temporal_attn_delta`` merge); None uses ``attention``'s.
    """

    def __init__(self, control: TemporalAttentionControl, pass_: Pass):
        self.control = control
        self.pass_ = pass_

    def __call__(self, attention: nn.Module, layer: str, x: Tensor, labels: Sequence[int] = (COND,),
                 alternate: Mapping[str, Tensor] | None = None) -> Tensor:
        """x: ``(N, T, C)`` with ``N = len(labels) * S`` (chunk-major).  Returns ``(N, T, C)``."""
        if x.shape[0] % len(labels):
            raise ValueError(f"{layer}: batch {x.shape[0]} is not a multiple of {len(labels)} chunks")
        if self.pass_ is Pass.FORWARD:
            probs = attention_probabilities(attention.to_q(x), attention.to_k(x), attention.heads)
            self.control.store(layer, labels, probs)
            return attention.to_out[0](_apply_probabilities(probs, attention.to_v(x)))
        probs = self.control.replay(layer, labels)  # the own maps get weight 0: q and k are not needed
        if alternate is None:
            return attention.to_out[0](_apply_probabilities(probs, attention.to_v(x)))
        v = F.linear(x, alternate["to_v.weight"].to(x))
        return F.linear(_apply_probabilities(probs, v), alternate["to_out.0.weight"].to(x), alternate["to_out.0.bias"].to(x))


# ---------------------------------------------------------------- the two-pass step and the loop


PassRunner = Callable[[KeyframeAttentionHook, Tensor, bool], tuple[Tensor, Tensor | None]]


def keyframe_denoise(run_pass: PassRunner, x: Tensor, schedule: InbetweenSchedule,
                     control: TemporalAttentionControl) -> Tensor:
    """One two-pass prediction.

    run_pass(hook, x_pass, with_uncond) -> (cond, uncond or None): the model's prediction
    (denoised, or v) of ``x_pass (T, C, h, w)`` in that pass's frame order, with the hook active
    in the temporal ``attn1`` layers; the forward hook comes first.  x: ``(T, C, h, w)``.
    Returns the fused prediction ``(T, C, h, w)`` in output frame order.
    """
    t = x.shape[0]
    if schedule.guidance.shape != (t,):
        raise ValueError(f"schedule: built for {schedule.guidance.shape[0]} frames, latents have {t}")
    cfg = schedule.classifier_free
    g = schedule.guidance.to(x)[:, None, None, None]
    w = schedule.weight.to(x)[:, None, None, None]

    def guided(hook: KeyframeAttentionHook, x_pass: Tensor) -> Tensor:
        cond, uncond = run_pass(hook, x_pass, cfg)
        return uncond + g * (cond - uncond) if cfg else cond

    try:
        forward = guided(control.hook(Pass.FORWARD), x)
        backward = guided(control.hook(Pass.BACKWARD), x.flip(0)).flip(0)
    finally:
        control.clear()
    return w * forward + (1.0 - w) * backward


def stored_map_bytes(latent_hw: tuple[int, int], num_frames: int, levels: Sequence[tuple[int, int, int]],
                     chunks: int = 2, bytes_per_value: int = 2) -> int:
    """Analytic memory of one step's stored maps: ``sum over temporal attn1 layers of
    chunks * (h/2^l * w/2^l) * heads_l * T^2 * bytes``.

    levels: ``(downscale exponent l, heads, number of layers)`` per resolution level.
    """
    h, w = latent_hw
    total = 0
    for exponent, heads, layers in levels:
        s = math.ceil(h / 2**exponent) * math.ceil(w / 2**exponent)
        total += layers * chunks * s * heads * num_frames**2 * bytes_per_value
    return total


# The conditioning lists a host keeps per pass: (conditional, unconditional).
COND_NAMES = {Pass.FORWARD: ("positive1", "negative1"), Pass.BACKWARD: ("positive2", "negative2")}
# evaluate(model_key, cond_names, x, transformer_options) -> one prediction per cond name
Evaluate = Callable[[str | None, Sequence[str], Tensor, Mapping], Sequence[Tensor]]


def two_pass_predictor(schedule: InbetweenSchedule, backward_model: str | None = None
                       ) -> Callable[[Evaluate, Tensor, Tensor], Tensor]:
    """The prediction of a host guider: ``predict(evaluate, x, timestep) -> x0`` runs
    :func:`keyframe_denoise` with each pass evaluated by the host on the conds of
    :data:`COND_NAMES`, with the pass's hook in ``transformer_options[KEYFRAME_HOOK_KEY]``.
    backward_model: the host's key of a separate backward-pass model (``full`` weights), or None
    (both passes on the main model).  A fresh :class:`TemporalAttentionControl` per prediction."""

    def predict(evaluate: Evaluate, x: Tensor, timestep: Tensor) -> Tensor:
        def run_pass(hook: KeyframeAttentionHook, x_pass: Tensor, with_uncond: bool):
            names = COND_NAMES[hook.pass_] if with_uncond else COND_NAMES[hook.pass_][:1]
            model = backward_model if hook.pass_ is Pass.BACKWARD else None
            out = evaluate(model, names, x_pass, {KEYFRAME_HOOK_KEY: hook})
            return out[0], (out[1] if with_uncond else None)

        return keyframe_denoise(run_pass, x, schedule, TemporalAttentionControl())

    return predict


# ---------------------------------------------------------------- conditioning and poses


@dataclass(frozen=True)
class KeyframeConditioning:
    """What the two passes are conditioned on (SVD's conditioning, per pass).

    clip: the CLIP image embeddings ``(1, D)`` of keyframe 1 (forward pass) and keyframe 2
    (backward pass).  concat / uncond_concat: the image-condition latents ``(T or 1, 4, h, w)`` of
    the conditional and unconditional branch of each pass, in that pass's frame order (``1`` =
    one latent for every frame); without pose conditioning the unconditional ones are zeros.
    """

    clip: tuple[Tensor, Tensor]
    concat: tuple[Tensor, Tensor]
    uncond_concat: tuple[Tensor, Tensor]


def keyframe_conditioning(encode_image: Callable[[Tensor], Tensor], encode_latent: Callable[[Tensor], Tensor],
                          first: Tensor, last: Tensor, *, noise_aug: float, generator: torch.Generator,
                          pose: tuple[LookBeyondPoseConditioner, Tensor] | None = None) -> KeyframeConditioning:
    """SVD conditioning of both passes, as the reference pipelines build it.

    first, last: ``(1, 3, H, W)`` keyframes in 0..1.  encode_image: ``(B, 3, H, W) -> (B, D)`` CLIP
    image embeddings of the clean frames; encode_latent: ``(B, 3, H, W) -> (B, 4, H/8, W/8)`` VAE
    latents (mode, unscaled) of the noise-augmented frames.  Noise augmentation: one Gaussian
    draw of std ``noise_aug`` in [-1, 1] pixel units (``noise_aug / 2`` in 0..1), the same draw for
    both frames (reference: ``image1 + s * noise``, ``image2 + s * noise``).  pose: Look Beyond's
    conditioner and the Plücker rays ``(T, 6, H, W)`` of the inbetween frames: the embedding is
    added (then fused) to both CFG branches of the forward pass and, time-flipped, of the backward
    pass.
    """
    if first.shape != last.shape:
        raise ValueError(f"keyframes differ in size: {tuple(first.shape)} vs {tuple(last.shape)}")
    noise = torch.randn(first.shape, generator=generator, dtype=torch.float32).to(first)
    augmented = [frame + noise * (noise_aug * 0.5) for frame in (first, last)]
    clip = tuple(encode_image(frame) for frame in (first, last))
    latents = tuple(encode_latent(frame) for frame in augmented)  # (1, 4, h, w) each
    if pose is None:
        return KeyframeConditioning(clip, latents, tuple(torch.zeros_like(z) for z in latents))
    conditioner, rays = pose
    weight = next(conditioner.parameters())
    with torch.no_grad():
        embedding = conditioner.embed(rays.to(weight))  # (T, 4, h, w)
        embeddings = (embedding, embedding.flip(0))
        concat = tuple(conditioner.fuse(z.to(weight), e).to(z) for z, e in zip(latents, embeddings))
        uncond = tuple(conditioner.fuse(torch.zeros_like(e), e).to(z) for z, e in zip(latents, embeddings))
    if concat[0].shape[-2:] != latents[0].shape[-2:]:
        raise ValueError(f"pose embedding {tuple(concat[0].shape[-2:])} and image latent "
                         f"{tuple(latents[0].shape[-2:])} differ in size")
    return KeyframeConditioning(clip, concat, uncond)


@dataclass(frozen=True)
class InbetweenPoses:
    """The cameras of the inbetween frames: ``c2w (T, 4, 4)`` OpenCV axes, pixel intrinsics
    ``(T, 4)`` (fx, fy, cx, cy) of the ``(H, W)`` frames, and the two keyframes' ``c2w``."""

    c2w: Tensor
    intrinsics: Tensor
    source: Tensor
    target: Tensor

    def rays(self, hw: tuple[int, int]) -> Tensor:
        """Plücker rays ``(T, 6, H, W)`` (Look Beyond's ``ray_condition``)."""
        return camera_plucker(self.c2w, self.intrinsics, hw)

    def similarity(self) -> tuple[Tensor, Tensor]:
        return pose_similarity_weights(self.c2w, self.source, self.target)


def inbetween_poses(path: CameraPath, num_frames: int, hw: tuple[int, int], first: int = 0,
                    last: int | None = None) -> InbetweenPoses:
    """The ``num_frames`` cameras between rows ``first`` and ``last`` of ``path`` (spread as
    :func:`select_between`), as Look Beyond reads them from its pose file.

    The path's poses are used as they are (Look Beyond uses the file's absolute poses: read the
    file with ``relative_to_first`` off to match it).  Intrinsics are those of a centred pinhole
    with square pixels and the path's horizontal FOV (a :class:`CameraPath` keeps no principal
    point), in pixels of ``hw``.
    """
    last = path.num_frames - 1 if last is None else last
    rows = select_between(path.num_frames, num_frames, first, last)
    c2w_all = path.camera_to_world(dtype=torch.float64, opencv=True)
    h, w = hw
    fov = torch.tensor(path.fov_x, dtype=torch.float64)[rows]
    focal = 0.5 * w / torch.tan(fov / 2)
    intrinsics = torch.stack([focal, focal, torch.full_like(focal, w / 2), torch.full_like(focal, h / 2)], -1)
    return InbetweenPoses(c2w_all[rows], intrinsics, c2w_all[first], c2w_all[last])
