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
from dataclasses import asdict, replace

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

# (depth, hidden_size, patch_size) -> variant name in pano_dit.VARIANTS.  Heads and the MLP
# ratio cannot be read from shapes unambiguously, so they come from the matched variant.
_VARIANT_BY_SHAPE: dict[tuple[int, int, int], str] = {
    (c.depth, c.hidden_size, c.patch_size): name for name, c in VARIANTS.items()
}

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
    "ema" or "model".  Returns (state_dict, key used, training args as a dict or {}).
    """
    if key not in ("auto",) + CHECKPOINT_KEYS:
        raise ValueError(f"key must be one of {('auto',) + CHECKPOINT_KEYS}, got {key!r}")
    ckpt = read_checkpoint(path)
    args = vars(ckpt["args"]) if isinstance(ckpt.get("args"), argparse.Namespace) else {}
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
    return convert_official_keys({k: v.clone() for k, v in sd.items()}), used, args


def detect_config(sd: dict[str, Tensor], where: str = "state dict") -> tuple[str, PanoDiTConfig]:
    """Variant name and config of a PanoDiT state dict, from tensor shapes only."""
    try:
        hidden, in_ch, patch, _ = sd["x_embedder.proj.weight"].shape
        num_patches = sd["x_pos_embed"].shape[1]
        text_dim = sd["text_embedder.mlp.0.weight"].shape[1]
        freq_dim = sd["t_embedder.mlp.0.weight"].shape[1]
        mlp_hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
        out_dim = sd["final_layer.linear.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(f"{where}: not a PanoDiT state dict (missing {exc.args[0]!r})") from None
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    name = _VARIANT_BY_SHAPE.get((depth, hidden, patch))
    if name is None:
        known = ", ".join(f"{n} (depth {d}, hidden {h}, patch {p})" for (d, h, p), n in _VARIANT_BY_SHAPE.items())
        raise ValueError(f"{where}: unknown PanoDiT size depth={depth}, hidden={hidden}, patch={patch}; known: {known}")
    grid = round(num_patches**0.5)
    out_channels = out_dim // (patch * patch)
    if grid * grid != num_patches or out_channels not in (in_ch, 2 * in_ch):
        raise ValueError(f"{where}: inconsistent shapes (patches {num_patches}, output {out_dim}, in {in_ch})")
    cfg = replace(
        VARIANTS[name],
        input_size=grid * patch,
        in_channels=in_ch,
        learn_sigma=out_channels == 2 * in_ch,
        text_dim=text_dim,
        frequency_embedding_size=freq_dim,
        mlp_ratio=mlp_hidden / hidden,
    )
    return name, cfg


def load_panodit(path: str, key: str = "auto", dtype: torch.dtype | None = None) -> tuple[PanoDiT, dict]:
    """Build the matching PanoDiT and load ``path`` strictly (on the CPU, eval mode).

    Returns (model, info) with info = {"variant", "key", "args", "config"}.  A state dict
    that does not match exactly raises ``ValueError`` naming the file and listing the
    missing and unexpected keys.
    """
    sd, used, args = load_state_dict(path, key)
    name, cfg = detect_config(sd, where=path)
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
        "pano360.config": json.dumps(asdict(info["config"])),
        "pano360.train_args": json.dumps(info["args"], default=str),
    }
    with atomic_path(dst, ".partial.safetensors") as tmp:  # nothing half-written on failure
        save_file(sd, tmp, metadata=metadata)
    return info
