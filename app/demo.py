"""The main job on the bundled default panorama: ``python -m pano360 demo``.

No ComfyUI and no weights.  Builds a procedural panorama (or reads ``--input``), splits it
into the ``videopanda8`` and ``lookbeyond_loop`` rigs, stitches the views back, and writes
the views, the stitched panoramas, their coverage maps and a perspective yaw sweep video.

Output layout (``--out``, default ``out/demo``)::

    panorama.png                    the input panorama
    <rig>/views/view_NN.png         each view of the rig
    <rig>/stitched.png              the views stitched back to an equirect panorama
    <rig>/coverage.png              white where some view covers the sphere
    sweep.mp4                       a 90-degree camera turning once around (H.264)
    panorama_360.png                the panorama with GPano XMP (photo viewers open it as 360°)
    panorama_360.mp4                the panorama turning once, with V1+V2 spherical metadata
"""

from __future__ import annotations

import argparse
import colorsys
import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..cameras import render_path, yaw_sweep
from ..media.gpano import GPanoFields, save_png as save_gpano_png
from ..media.images import save_png, to_uint8
from ..media.spherical_mp4 import save_360_video
from ..media.video import write_mp4
from ..projection import erp_to_rig, rig_preset, stitch_rig

log = logging.getLogger("pano360.demo")

RIGS = ("videopanda8", "lookbeyond_loop")
DEFAULT_HEIGHT = 512  # VideoPanda's output panoramas are 512x1024
SWEEP_FRAMES = 96
SWEEP_FPS = 24
SWEEP_FOV_DEG = 90.0
# The rigs' native view sizes are defined for a 512x1024 panorama; smaller --size scales
# them down by the same factor (multiples of 8, at least 16 px).
REFERENCE_HEIGHT = 512


# --------------------------------------------------------------------------- the default panorama


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def default_panorama(height: int = DEFAULT_HEIGHT) -> np.ndarray:
    """A procedural, orientation-revealing equirect panorama, float32 ``[H, 2H, 3]`` in 0..1.

    Sky gradient above the horizon, a longitude colour wheel around the horizon (red at
    0 deg = forward, hue increasing to the right), a warm sun at yaw +45 / pitch +30, dark
    meridians every 30 deg (a white one at 0 deg), faint latitude circles every 30 deg, and
    labels: each meridian's longitude and FRONT / RIGHT / BACK / LEFT.
    """
    from PIL import Image, ImageDraw, ImageFont

    h, w = int(height), 2 * int(height)
    lon = ((np.arange(w) + 0.5) / w - 0.5) * 2 * np.pi
    lat = (0.5 - (np.arange(h) + 0.5) / h) * np.pi
    lon, lat = np.meshgrid(lon, lat)
    hue = (np.degrees(lon) % 360.0) / 360.0
    wheel = np.stack(np.vectorize(colorsys.hsv_to_rgb, otypes=[float] * 3)(hue, 0.75, 0.95), -1)
    sky = np.stack([0.25 + 0.45 * (1 - np.sin(lat)), 0.45 + 0.4 * (1 - np.sin(lat)), np.full_like(lat, 0.95)], -1)
    ground = wheel * (0.35 + 0.35 * (1 + np.sin(lat)))[..., None] + 0.1
    band = _smoothstep(np.radians(12), np.radians(4), np.abs(lat))[..., None]
    img = np.where((lat > 0)[..., None], sky, ground)
    img = img * (1 - band) + wheel * band
    # sun at yaw +45, pitch +30 (a disc of 8 deg radius with a soft edge)
    d = np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], -1)
    sun_dir = np.array([math.cos(math.radians(30)) * math.sin(math.radians(45)), math.sin(math.radians(30)),
                        math.cos(math.radians(30)) * math.cos(math.radians(45))])
    sun = _smoothstep(math.cos(math.radians(9)), math.cos(math.radians(7)), d @ sun_dir)[..., None]
    img = img * (1 - sun) + np.array([1.0, 0.85, 0.3]) * sun
    # meridians every 30 deg (dark), forward white; faint latitude circles every 30 deg
    px = 2 * np.pi / w
    for k in range(-6, 6):
        dist = np.abs(np.angle(np.exp(1j * (lon - np.radians(30 * k))))) * np.cos(lat)
        line = _smoothstep(1.5 * px, 0.5 * px, dist)[..., None] * (np.abs(lat) < np.radians(75))[..., None]
        colour = np.array([1.0, 1.0, 1.0]) if k == 0 else np.array([0.1, 0.1, 0.1])
        img = img * (1 - line) + colour * line
    for k in (-2, -1, 1, 2):
        line = 0.5 * _smoothstep(1.5 * px, 0.5 * px, np.abs(lat - np.radians(30 * k)))[..., None]
        img = img * (1 - line) + 0.9 * line
    # labels
    canvas = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(8, h // 24))
    big = ImageFont.load_default(size=max(10, h // 14))

    def label(text, lon_deg, lat_deg, f, fill):
        x = (lon_deg / 360.0 + 0.5) * w
        y = (0.5 - lat_deg / 180.0) * h
        for dx in (-w, 0, w):  # labels that straddle the seam appear on both sides
            draw.text((x + dx, y), text, font=f, fill=fill, anchor="mm", stroke_width=max(1, h // 256),
                      stroke_fill=(0, 0, 0))

    for k in range(-6, 7):
        label(f"{30 * k:+d}°" if k else "0°", 30 * k, 18, font, (255, 255, 255))
    for name, lon_deg in (("FRONT", 0), ("RIGHT", 90), ("BACK", 180), ("LEFT", -90)):
        label(name, lon_deg + 15, -25, big, (255, 255, 255))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _save(array: np.ndarray, path: Path) -> None:
    """The demo's own output folder: rewrite files of an earlier run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(array, path, replace=True)


def _load_panorama(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    if arr.shape[1] != 2 * arr.shape[0]:
        raise ValueError(f"--input: an equirect panorama must be 2:1 (width == 2 * height), got "
                         f"{arr.shape[1]}x{arr.shape[0]} (WxH) in {path}")
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def _scaled(size: int, height: int) -> int:
    return max(16, int(round(size * height / REFERENCE_HEIGHT / 8)) * 8)


def sweep_frames(erp: torch.Tensor, frames: int, out_hw: tuple[int, int], fov_deg: float = SWEEP_FOV_DEG) -> torch.Tensor:
    """``(1, C, H, W)`` panorama -> ``(frames, C, h, w)``: a camera turning once to the right."""
    return render_path(erp, yaw_sweep(frames, 0.0, 360.0, 0.0, fov_deg), out_hw)


def round_trip_errors(erp: torch.Tensor, stitched: torch.Tensor, coverage: torch.Tensor) -> tuple[float, float]:
    """Mean absolute error and PSNR (dB) of the stitched panorama over covered pixels."""
    covered = coverage[:, 0] > 0
    diff = (stitched - erp).movedim(1, -1)[covered]
    mae = float(diff.abs().mean())
    mse = float((diff ** 2).mean())
    return mae, (10 * math.log10(1.0 / mse) if mse > 0 else float("inf"))


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    parser.add_argument("--size", type=int, default=DEFAULT_HEIGHT,
                        help="panorama height in pixels (width = 2 x height; default 512); views scale with it")
    parser.add_argument("--input", type=Path, default=None,
                        help="use this 2:1 equirect image instead of the procedural default panorama")
    parser.add_argument("--mode", choices=("bilinear", "bicubic", "nearest"), default="bilinear",
                        help="interpolation (default bilinear)")
    parser.add_argument("--weight", choices=("uniform", "feather"), default="uniform",
                        help="stitch weighting (default uniform: VideoPanda's plain average)")
    parser.add_argument("--sweep-frames", type=int, default=SWEEP_FRAMES, help="frames of the yaw sweep video")


def run(args: argparse.Namespace) -> int:
    if args.size < 16 or args.size % 2:
        raise ValueError(f"--size: expected an even panorama height >= 16, got {args.size}")
    if args.sweep_frames < 1:
        raise ValueError(f"--sweep-frames: expected at least 1, got {args.sweep_frames}")
    out = Path(args.out)
    if args.input is not None:
        erp = _load_panorama(args.input)
        erp = torch.nn.functional.interpolate(erp, size=(args.size, 2 * args.size), mode="area") \
            if erp.shape[-2] > args.size else erp
    else:
        erp = torch.from_numpy(default_panorama(args.size)).permute(2, 0, 1)[None]
    h, w = erp.shape[-2:]
    _save(to_uint8(erp[0], channels_last=False), out / "panorama.png")
    log.info("panorama %dx%d -> %s", w, h, out / "panorama.png")
    for name in RIGS:
        native = rig_preset(name)
        rig = rig_preset(name, size=_scaled(native.views[0].width, h))
        views = erp_to_rig(erp, rig, mode=args.mode)
        for i, image in enumerate(to_uint8(views, channels_last=False)):
            _save(image, out / name / "views" / f"view_{i:02d}.png")
        stitched, coverage = stitch_rig(views, rig, (h, w), weight=args.weight, mode=args.mode)
        _save(to_uint8(stitched[0], channels_last=False), out / name / "stitched.png")
        _save(to_uint8(coverage[0], channels_last=False), out / name / "coverage.png")
        mae, psnr = round_trip_errors(erp, stitched, coverage)
        log.info("%s: %d views of %dx%d -> %s/views/; stitched back (%s) -> %s (covers %.1f%%, "
                 "mean abs error %.4f, PSNR %.1f dB)", name, rig.num_views, rig.views[0].width,
                 rig.views[0].height, out / name, args.weight, out / name / "stitched.png",
                 100 * float(coverage.mean()), mae, psnr)
    sweep_hw = (_scaled(288, h), _scaled(512, h))  # 16:9
    frames = to_uint8(sweep_frames(erp, args.sweep_frames, sweep_hw), channels_last=False)
    video = write_mp4(frames, out / "sweep.mp4", fps=SWEEP_FPS, replace=True)
    log.info("yaw sweep: %d frames %dx%d at %d fps -> %s", len(frames), sweep_hw[1], sweep_hw[0], SWEEP_FPS, video)
    _save_360_outputs(to_uint8(erp[0], channels_last=False), out, args.sweep_frames)
    log.info("done: outputs in %s", out.resolve())
    return 0


def _save_360_outputs(pano: np.ndarray, out: Path, frames: int) -> None:
    """360° files that players recognise (docs/output.md): a GPano PNG and a spherically
    tagged MP4 of the world turning once (frame i is rolled i/frames of a turn)."""
    h, w = pano.shape[:2]
    save_gpano_png(pano, out / "panorama_360.png", GPanoFields(w, h), replace=True)
    turn = np.stack([np.roll(pano, -round(i * w / frames), axis=1) for i in range(frames)])
    save_360_video(turn, out / "panorama_360.mp4", SWEEP_FPS, 18, replace=True)
    log.info("360° outputs: %s (GPano XMP), %s (%d frames, spherical V1+V2)", out / "panorama_360.png",
             out / "panorama_360.mp4", frames)
