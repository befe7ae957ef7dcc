"""Load PanoDiT weights: official Look Beyond training checkpoints and safetensors.

Official checkpoints (``PanoDiT/train_with_text.py``) are ``torch.save`` dicts
``{"model", "ema", "opt", "args"}`` where ``args`` is a pickled ``argparse.Namespace``
(the ``torch.save`` call in ``train_with_text.py``).  They are read with ``torch.load(weights_only=True)`` plus an explicit
allow-list of the extra globals such a file needs, so no arbitrary object is ever
unpickled; anything else is refused with an error naming the forbidden global.

Model configuration is never taken from ``args``: it is detected from tensor shapes
(``detect_config``) through one table, ``_VARIANT_BY_SHAPE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
import zipfile
from dataclasses import asdict

import torch
from torch import Tensor

from ..media.atomic import atomic_path
from .pano_dit import VARIANTS, PanoDiT, PanoDiTConfig

__all__ = [
    "CHECKPOINT_KEYS",
    "ALLOWED_GLOBALS",
    "ForbiddenPickleError",
    "read_checkpoint",
    "load_state_dict",
    "convert_official_keys",
    "detect_config",
    "load_panodit",
    "convert_to_safetensors",
]

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("ema", "model")  # preference order: fast-DiT download.find_model returns "ema" first
SAFETENSORS_EXT = ".safetensors"
# Read as safetensors; ".sft" is the short form ComfyUI lists (folder_paths.supported_pt_extensions).
SAFETENSORS_EXTS = (SAFETENSORS_EXT, ".sft")
# What torch.load raises on a file that is not a torch checkpoint at all (truncated, empty, text,
# a bare pickle without torch's header): KeyError / EOFError from the legacy reader,
# RuntimeError "Invalid magic number", UnpicklingError "invalid load key".
_UNREADABLE_ERRORS = (KeyError, EOFError, RuntimeError, pickle.UnpicklingError)

# Extra globals (beyond torch's weights-only defaults: tensors, storages, OrderedDict,
# primitive containers) that an official checkpoint pickles.
ALLOWED_GLOBALS: tuple = (argparse.Namespace,)

# (depth, hidden_size, patch_size, num_heads) -> variant name in pano_dit.VARIANTS, for naming.
_VARIANT_BY_SHAPE: dict[tuple[int, int, int, int], str] = {
    (c.depth, c.hidden_size, c.patch_size, c.num_heads): name for name, c in VARIANTS.items()
}
# The number of attention heads is the one size no tensor shape tells.  In order: an override,
# the config a converted safetensors file stores, the official training args' model name (when
# its sizes match the weights), the head count of a DiT of the same width (fast-DiT models.py:
# XL 1152/16, L 1024/16, B 768/12, S 384/6; the pack's test size 32/2), else heads of
# DEFAULT_HEAD_DIM channels (the head width of DiT-L/B/S).
_HEADS_BY_HIDDEN: dict[int, int] = {c.hidden_size: c.num_heads for c in VARIANTS.values()}
DEFAULT_HEAD_DIM = 64
STORED_CONFIG_KEY = "pano360.config"  # safetensors metadata written by convert_to_safetensors

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


class ForbiddenPickleError(pickle.UnpicklingError):
    """A checkpoint pickles an object outside the allow-list; nothing was executed."""


def _torch_load_restricted(path: str) -> object:
    """torch.load with the allow-list.  Zip-format files (torch >= 1.6) are memory-mapped, so
    only the weights that are used (e.g. ``ema``, not ``model`` and ``opt``) are read."""
    mmap = zipfile.is_zipfile(path)
    if not mmap:
        log.info("%s: legacy (non-zip) torch file, reading it whole", path)
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except _UNREADABLE_ERRORS as exc:
        if not (isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc)):
            raise ValueError(
                f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {str(exc)[:200] or 'no detail'})"
            ) from None
        found = _GLOBAL_RE.findall(str(exc))
        name = found[0] if found else "an unsupported object"
        allowed = ", ".join(f"{g.__module__}.{g.__qualname__}" for g in ALLOWED_GLOBALS)
        raise ForbiddenPickleError(
            f"{path}: refused to load: the file pickles {name}, which is not allowed in a PanoDiT "
            f"checkpoint (allowed beyond tensors and plain containers: {allowed}). The file was not "
            f"executed. Convert trusted checkpoints with 'python -m pano360 convert-panodit'."
        ) from None


def read_checkpoint(path: str) -> dict:
    """The whole checkpoint as a dict (safetensors: the tensors; ``.pt``: the pickled dict).

    Raises ``ForbiddenPickleError`` for a pickle outside the allow-list and ``ValueError``
    for a file that is not a dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PanoDiT checkpoint not found: {path}")
    if path.lower().endswith(SAFETENSORS_EXTS):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except SafetensorError as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    obj = _torch_load_restricted(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def convert_official_keys(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official keys need no renaming; only a DataParallel/DDP ``module.`` prefix is removed."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def load_state_dict(path: str, key: str = "auto") -> tuple[dict[str, Tensor], str, dict]:
    """Read the network weights of a checkpoint.

    key: "auto" (``ema`` if present, else ``model``, else the file is a bare state dict),
    "ema" or "model".  Returns (state_dict, key used, hints): hints holds the training args
    of an official checkpoint (``"args"``) and the config a converted safetensors file stores
    (``"config"``), each a dict or absent.
    """
    if key not in ("auto",) + CHECKPOINT_KEYS:
        raise ValueError(f"key must be one of {('auto',) + CHECKPOINT_KEYS}, got {key!r}")
    ckpt = read_checkpoint(path)
    hints: dict = {}
    if isinstance(ckpt.get("args"), argparse.Namespace):
        hints["args"] = vars(ckpt["args"])
    stored = _stored_config(path)
    if stored is not None:
        hints["config"] = stored
    nested = [k for k in CHECKPOINT_KEYS if isinstance(ckpt.get(k), dict)]
    if key == "auto":
        used = nested[0] if nested else "state_dict"
    elif key in nested:
        used = key
    elif not nested:
        raise ValueError(f"{path}: key {key!r} not in checkpoint; it is a plain state dict (one set of weights): use 'auto'")
    else:
        raise ValueError(f"{path}: key {key!r} not in checkpoint; it has {nested}")
    sd = ckpt[used] if used in CHECKPOINT_KEYS else ckpt
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{path}: entries of '{used}' are not tensors: {bad[:5]}")
    # clone: own memory instead of pages mapped from the file
    return convert_official_keys({k: v.clone() for k, v in sd.items()}), used, hints


def _stored_config(path: str) -> dict | None:
    """The PanoDiTConfig a converted safetensors file stores in its metadata, or None."""
    if not path.lower().endswith(SAFETENSORS_EXTS):
        return None
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        text = (f.metadata() or {}).get(STORED_CONFIG_KEY)
    if not text:
        return None
    try:
        stored = json.loads(text)
    except ValueError:
        raise ValueError(f"{path}: metadata {STORED_CONFIG_KEY!r} is not JSON") from None
    return stored if isinstance(stored, dict) else None


def _heads(hidden: int, depth: int, patch: int, num_heads: int | None, hints: dict, where: str) -> tuple[int, str]:
    """(num_heads, where it came from); see the comment at _HEADS_BY_HIDDEN."""
    if num_heads:
        return int(num_heads), "given"
    stored = (hints or {}).get("config") or {}
    if stored.get("num_heads"):
        return int(stored["num_heads"]), "stored config"
    named = VARIANTS.get(str((hints or {}).get("args", {}).get("model", "")))
    if named is not None and (named.depth, named.hidden_size, named.patch_size) == (depth, hidden, patch):
        return named.num_heads, f"training args model {hints['args']['model']}"
    if hidden in _HEADS_BY_HIDDEN:
        return _HEADS_BY_HIDDEN[hidden], f"DiT of width {hidden}"
    if hidden % DEFAULT_HEAD_DIM == 0:
        return hidden // DEFAULT_HEAD_DIM, f"{DEFAULT_HEAD_DIM}-channel heads"
    raise ValueError(
        f"{where}: cannot tell the number of attention heads of a PanoDiT of width {hidden} (no stored config, "
        f"not a multiple of {DEFAULT_HEAD_DIM}); give num_heads"
    )


def detect_config(sd: dict[str, Tensor], where: str = "state dict", *, num_heads: int | None = None,
                  hints: dict | None = None) -> tuple[str, PanoDiTConfig]:
    """Name and config of a PanoDiT state dict: every size from tensor shapes (depth from the
    block count, width, patch, channels, canvas, text width, MLP ratio), the head count from
    ``num_heads``, ``hints`` (:func:`load_state_dict`) or the defaults above.  The name is the
    matching entry of ``VARIANTS`` or ``custom (...)``."""
    try:
        hidden, in_ch, patch, _ = sd["x_embedder.proj.weight"].shape
        num_patches = sd["x_pos_embed"].shape[1]
        text_dim = sd["text_embedder.mlp.0.weight"].shape[1]
        freq_dim = sd["t_embedder.mlp.0.weight"].shape[1]
        mlp_hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
        out_dim = sd["final_layer.linear.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(f"{where}: not a PanoDiT state dict (missing {exc.args[0]!r})") from None
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    depth = len(blocks)
    if blocks != set(range(depth)):
        raise ValueError(f"{where}: PanoDiT blocks must be numbered 0..{depth - 1}, got {sorted(blocks)[:10]}")
    grid = round(num_patches**0.5)
    out_channels = out_dim // (patch * patch)
    if grid * grid != num_patches or out_channels not in (in_ch, 2 * in_ch) or out_dim % (patch * patch):
        raise ValueError(f"{where}: inconsistent shapes (patches {num_patches}, output {out_dim}, in {in_ch})")
    heads, source = _heads(hidden, depth, patch, num_heads, hints or {}, where)
    try:
        cfg = PanoDiTConfig(
            input_size=grid * patch, patch_size=patch, in_channels=in_ch, hidden_size=hidden, depth=depth,
            num_heads=heads, mlp_ratio=mlp_hidden / hidden, learn_sigma=out_channels == 2 * in_ch,
            text_dim=text_dim, frequency_embedding_size=freq_dim,
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc} (heads from {source})") from None
    name = _VARIANT_BY_SHAPE.get((depth, hidden, patch, heads))
    if name is None:
        name = f"custom (depth {depth}, hidden {hidden}, patch {patch}, heads {heads})"
        log.info("%s: PanoDiT of no standard size: %s; heads from %s", where, name, source)
    return name, cfg


def load_panodit(path: str, key: str = "auto", dtype: torch.dtype | None = None,
                 num_heads: int | None = None) -> tuple[PanoDiT, dict]:
    """Build the matching PanoDiT and load ``path`` strictly (on the CPU, eval mode).

    Any size loads: every dimension is read from the weights (:func:`detect_config`);
    ``num_heads`` overrides the head count.  Returns (model, info) with info = {"variant",
    "key", "args", "config"}.  A state dict that does not match exactly raises
    ``ValueError`` naming the file and listing the missing and unexpected keys.
    """
    sd, used, hints = load_state_dict(path, key)
    args = hints.get("args", {})
    name, cfg = detect_config(sd, where=path, num_heads=num_heads, hints=hints)
    with torch.device("meta"):
        model = PanoDiT(cfg)
    missing, unexpected = _key_diff(model, sd)
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a {name} PanoDiT checkpoint ('{used}'): "
            f"missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}"
        )
    wrong = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in model.state_dict().items()
        if tuple(sd[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ValueError(f"{path}: shape mismatch for {name}: " + "; ".join(wrong[:10]))
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    model.x_pos_embed.requires_grad_(False)
    log.info("PanoDiT %s loaded from %s ('%s')", name, path, used)
    return model.eval(), {"variant": name, "key": used, "args": args, "config": cfg}


def _key_diff(model: PanoDiT, sd: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(sd)), sorted(set(sd) - expected)


def convert_to_safetensors(src: str, dst: str, key: str = "auto") -> dict:
    """Write the network weights of ``src`` to ``dst`` (safetensors) after a strict check.

    Metadata records the variant, the source key, the config and the training args.
    Returns the info dict of ``load_panodit``.
    """
    from safetensors.torch import save_file

    if not dst.endswith(SAFETENSORS_EXT):
        raise ValueError(f"output must end in {SAFETENSORS_EXT}, got {dst!r}")
    model, info = load_panodit(src, key)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "pt",
        "pano360.variant": info["variant"],
        "pano360.source_key": info["key"],
        STORED_CONFIG_KEY: json.dumps(asdict(info["config"])),
        "pano360.train_args": json.dumps(info["args"], default=str),
    }
    with atomic_path(dst, ".partial.safetensors") as tmp:  # nothing half-written on failure
        save_file(sd, tmp, metadata=metadata)
    return info
