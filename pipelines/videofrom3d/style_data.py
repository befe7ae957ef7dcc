"""Reference images for VideoFrom3D's distribution-alignment LoRA, prepared as the official code does.

``image_datasets/dataset.py`` (``CustomImageControlDataset2``, ``random_ratio: true``,
``img_size: 1024``): each time an image is drawn, one of four aspect choices is picked at random
-- a centred crop to 16:9, 4:3 or 1:1, or the image as it is ("default") -- the crop is resized
so its long side is 1024 (``image_resize``), then each side is rounded down to a multiple of 32;
the ControlNet's condition is the HED edge map of that crop at the same size.  Pixels go to
[-1, 1] (``/ 127.5 - 1``).  Resizing is PIL's default filter (bicubic), as the official code.

Edge maps come from the user (any HED tool, e.g. comfyui_controlnet_aux's HED node, run on the
whole image): they are resized to the image and cropped with the same box, which differs from
HED run on the crop only within HED's receptive field of the crop border.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["ASPECT_CHOICES", "IMAGE_SIZE", "SIZE_MULTIPLE", "crop_box", "prepare_pair", "ReferenceImage",
           "load_references", "IMAGE_SUFFIXES", "TextEmbedding", "flux_text_embedding", "save_text_embedding",
           "read_text_embedding"]

# dataset.py: random.choice(["16:9", "default", "1:1", "4:3"]); "default" keeps the image's own aspect.
ASPECT_CHOICES = ("16:9", "default", "1:1", "4:3")
_RATIOS = {"16:9": (16, 9), "4:3": (4, 3), "1:1": (1, 1)}
IMAGE_SIZE = 1024  # configs/distribution_alignment.yaml data_config.img_size
SIZE_MULTIPLE = 32  # dataset.py: (w // 32) * 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def crop_box(width: int, height: int, ratio: str) -> tuple[int, int, int, int]:
    """``crop_to_aspect_ratio``'s centred box (left, top, right, bottom) for ``ratio`` ("default":
    the whole image)."""
    if ratio == "default":
        return 0, 0, width, height
    if ratio not in _RATIOS:
        raise ValueError(f"aspect choice must be one of {ASPECT_CHOICES}, got {ratio!r}")
    tw, th = _RATIOS[ratio]
    if width / height > tw / th:
        new_w = int(height * tw / th)
        off = (width - new_w) // 2
        return off, 0, off + new_w, height
    new_h = int(width / (tw / th))
    off = (height - new_h) // 2
    return 0, off, width, off + new_h


def _resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``image_resize`` (long side ``size``, the other scaled and truncated), then multiples of 32."""
    if width >= height:
        w, h = size, int(size / width * height)
    else:
        w, h = int(size / height * width), size
    return w, h


def _to_tensor(img: Image.Image) -> Tensor:
    """``(3, H, W)`` float32 in [-1, 1]."""
    return torch.from_numpy(np.asarray(img, dtype=np.float64) / 127.5 - 1).permute(2, 0, 1).float()


def prepare_pair(image: Image.Image, edges: Image.Image | None, ratio: str,
                 size: int = IMAGE_SIZE) -> tuple[Tensor, Tensor | None]:
    """One draw of the dataset: ``(image, edges)`` each ``(3, H, W)`` in [-1, 1], ``H, W`` multiples
    of 32 with the long side at most ``size`` (edges None without an edge map).  ValueError when
    the crop is smaller than 32 px."""
    image = image.convert("RGB")
    box = crop_box(*image.size, ratio)
    img = image.crop(box)
    w, h = _resized_size(*img.size, size)
    img = img.resize((w, h))
    nw, nh = (w // SIZE_MULTIPLE) * SIZE_MULTIPLE, (h // SIZE_MULTIPLE) * SIZE_MULTIPLE
    if nw < SIZE_MULTIPLE or nh < SIZE_MULTIPLE:
        raise ValueError(f"image {image.size} with aspect {ratio} gives {w}x{h} pixels; need at least "
                         f"{SIZE_MULTIPLE} on each side")
    img = img.resize((nw, nh))
    if edges is None:
        return _to_tensor(img), None
    edges = edges.convert("RGB")
    if edges.size != image.size:
        edges = edges.resize(image.size, Image.BILINEAR)
    edg = edges.crop(box).resize((nw, nh))  # the official code resizes the HED output to the crop's size
    return _to_tensor(img), _to_tensor(edg)


@dataclass(frozen=True)
class ReferenceImage:
    """A reference (style) image, its edge map (None when training without the ControlNet) and the
    index of its text embedding."""

    name: str
    image: Image.Image
    edges: Image.Image | None
    text: int = 0


def _image_files(paths: list[Path]) -> list[Path]:
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"--images: {p} is neither an image file nor a folder")
    if not files:
        raise ValueError(f"--images: no images ({', '.join(IMAGE_SUFFIXES)}) in {[str(p) for p in paths]}")
    return files


def load_references(images: list[Path], edges: Path | None, texts: int = 1) -> list[ReferenceImage]:
    """The reference images (files or folders) with their edge maps from the folder ``edges``
    (same file stem, any image suffix; None: no edge maps).  ``texts``: the number of text
    embeddings -- 1 (one for all) or one per image, in image order.  ValueError naming a missing
    edge map."""
    files = _image_files(images)
    if texts not in (1, len(files)):
        raise ValueError(f"--text-embedding: give one file for all images or one per image ({len(files)}), got {texts}")
    if edges is not None and not edges.is_dir():
        raise ValueError(f"--edges: {edges} is not a folder")
    out = []
    for i, f in enumerate(files):
        edge_map = None
        if edges is not None:
            matches = [e for e in sorted(edges.glob(f"{f.stem}.*")) if e.suffix.lower() in IMAGE_SUFFIXES]
            if not matches:
                raise ValueError(f"--edges: no edge map {f.stem}.png (or .jpg, ...) in {edges} for {f.name}")
            with Image.open(matches[0]) as em:
                edge_map = em.convert("RGB")
        try:
            with Image.open(f) as im:
                image = im.convert("RGB")
        except OSError as err:
            raise ValueError(f"--images: cannot read {f}: {err}") from None
        out.append(ReferenceImage(f.name, image, edge_map, i if texts > 1 else 0))
    return out


# ------------------------------------------------------------------------------ text embeddings


@dataclass(frozen=True)
class TextEmbedding:
    """Flux's text conditioning of one prompt: T5 tokens ``txt (S, 4096)``, CLIP pooled ``vec (768,)``.

    On disk (``save_text_embedding``): a safetensors file with exactly these two tensors."""

    txt: Tensor
    vec: Tensor


def flux_text_embedding(conditioning) -> tuple[Tensor, Tensor]:
    """``(txt (S, D), vec (P,))`` of a ComfyUI Flux CONDITIONING with one entry of batch 1
    (``[[cond (1, S, D), {"pooled_output": (1, P), ...}]]``).  ValueError otherwise."""
    if not isinstance(conditioning, list) or len(conditioning) != 1:
        raise ValueError(f"expected one conditioning entry, got {type(conditioning).__name__} of "
                         f"{len(conditioning) if isinstance(conditioning, list) else '?'}")
    cond, extra = conditioning[0][0], conditioning[0][1]
    pooled = extra.get("pooled_output") if isinstance(extra, dict) else None
    if not isinstance(cond, Tensor) or cond.ndim != 3 or cond.shape[0] != 1:
        raise ValueError(f"expected text tokens (1, tokens, dim), got {getattr(cond, 'shape', type(cond).__name__)}")
    if not isinstance(pooled, Tensor) or pooled.ndim != 2 or pooled.shape[0] != 1:
        raise ValueError("expected a pooled_output (1, dim) as Flux's text encoders give (DualCLIPLoader, type flux)")
    return cond[0].float().cpu().contiguous(), pooled[0].float().cpu().contiguous()


def save_text_embedding(path: str | os.PathLike, txt: Tensor, vec: Tensor, *, next_free=None) -> str:
    """Write ``txt`` and ``vec`` atomically (never over an existing file; ``next_free`` picks the next
    name).  Returns the path written."""
    from safetensors.torch import save_file

    from ...media.atomic import atomic_path

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with (target := atomic_path(path, ".partial.safetensors", next_free=next_free)) as tmp:
        save_file({"txt": txt.contiguous(), "vec": vec.contiguous()}, tmp,
                  metadata={"pano360": "flux text embedding (txt: T5 tokens, vec: CLIP pooled)"})
    return target.path


def read_text_embedding(path: str | os.PathLike) -> TextEmbedding:
    """ValueError naming the file when it is not one :func:`save_text_embedding` wrote."""
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
    except (OSError, ValueError) as err:
        raise ValueError(f"--text-embedding: cannot read {path}: {err}") from None
    if set(sd) != {"txt", "vec"} or sd["txt"].ndim != 2 or sd["vec"].ndim != 1:
        raise ValueError(f"--text-embedding: {path} needs exactly the tensors txt (tokens, dim) and vec (dim,), got "
                         f"{ {k: tuple(v.shape) for k, v in sd.items()} }")
    return TextEmbedding(sd["txt"].float(), sd["vec"].float())
