"""Save and load DiffPano epipolar modules as safetensors.

File layout: the state dict of :class:`.diffpano_epipolar.EpipolarAttentionSet` (keys
``<diffusers attention path>.<param>``, documented in :mod:`.diffpano_epipolar`) plus
safetensors metadata::

    pano360_format   "diffpano_epipolar"
    format_version   "1"
    config           JSON of EpipolarConfig (far may be "inf")

Locations and channels are read from the keys and the ``to_q`` shapes; the head width,
norm groups and sampling settings from ``config``; the Fourier frequencies are checked
against the ``pos_embed`` shape.  Loading is strict: a missing or unexpected key is an
error naming the file and the keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import replace

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .diffpano_epipolar import EpipolarAttentionSet, EpipolarConfig, pe_dim

__all__ = ["FORMAT", "FORMAT_VERSION", "save_epipolar", "load_epipolar", "read_epipolar"]

log = logging.getLogger(__name__)

FORMAT = "diffpano_epipolar"
FORMAT_VERSION = "1"
_PARAM = re.compile(r"^(?P<loc>.+)\.(?P<param>norm\.(weight|bias)|to_[qkv]\.weight|pos_embed\.(weight|bias)|to_out\.(weight|bias))$")


def save_epipolar(modules: EpipolarAttentionSet, path: str | os.PathLike, extra_metadata: dict | None = None) -> None:
    """Write ``modules`` (float tensors as stored) with the layout's metadata to ``path``.

    Callers that publish a file wrap this in ``media.atomic.atomic_path`` (nothing
    half-written, no silent replacement).
    """
    path = os.fspath(path)
    metadata = {"pano360_format": FORMAT, "format_version": FORMAT_VERSION,
                "config": json.dumps(modules.config.to_dict())}
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(f"extra_metadata: {key!r} is reserved")
        metadata[key] = str(value)
    state = {k: v.detach().contiguous().cpu() for k, v in modules.state_dict().items()}
    save_file(state, path, metadata=metadata)


def read_epipolar(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], EpipolarConfig]:
    """The state dict and config of an epipolar-module file; ValueError names the file."""
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ValueError(f"{name}: not a readable safetensors file ({e})") from None
    if meta.get("pano360_format") != FORMAT:
        raise ValueError(f"{name}: not a DiffPano epipolar-module file (metadata pano360_format="
                         f"{meta.get('pano360_format')!r}, expected {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{name}: format_version {meta.get('format_version')!r} is not supported "
                         f"(this version reads {FORMAT_VERSION!r})")
    try:
        config = EpipolarConfig.from_dict(json.loads(meta.get("config", "{}")))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{name}: bad config metadata: {e}") from None
    return state, config


def load_epipolar(path: str | os.PathLike, dtype: torch.dtype | None = None,
                  **overrides) -> EpipolarAttentionSet:
    """Build and strictly load an :class:`EpipolarAttentionSet` from ``path``.

    overrides: inference-time config fields (``num_samples``, ``num_refs``, ``near``,
    ``far``, ``spacing``); shape fields cannot be overridden.  A changed value is logged.
    """
    name = os.path.basename(os.fspath(path))
    state, config = read_epipolar(path)
    shape_fields = {"head_dim", "pe_frequencies", "norm_groups", "norm_eps"}
    bad = shape_fields & set(overrides)
    if bad:
        raise ValueError(f"{name}: {sorted(bad)} define the weights' shapes and cannot be overridden")
    changed = {k: v for k, v in overrides.items() if getattr(config, k, object()) != v}
    if changed:
        log.info("%s: epipolar settings %s differ from training (%s)", name, changed,
                 {k: getattr(config, k) for k in changed})
        config = replace(config, **changed)
    channels: dict[str, int] = {}
    for key in state:
        m = _PARAM.match(key)
        if m is None:
            raise ValueError(f"{name}: unexpected key {key!r} (not an epipolar-module parameter)")
        if m["param"] == "to_q.weight":
            channels[m["loc"]] = int(state[key].shape[0])
    if not channels:
        raise ValueError(f"{name}: no epipolar modules found (no '*.to_q.weight' keys)")
    want = pe_dim(config.pe_frequencies)
    for loc in channels:
        pe = state.get(f"{loc}.pos_embed.weight")
        if pe is not None and pe.shape[-1] != want:
            raise ValueError(f"{name}: {loc}.pos_embed.weight has {pe.shape[-1]} inputs, but config "
                             f"pe_frequencies={config.pe_frequencies} needs {want}")
    modules = EpipolarAttentionSet(dict(sorted(channels.items(), key=lambda kv: _order(kv[0]))), config)
    try:
        result = modules.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise ValueError(f"{name}: {e}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{name}: state dict does not match the epipolar layout; missing "
                         f"{result.missing_keys}, unexpected {result.unexpected_keys}")
    if dtype is not None:
        modules = modules.to(dtype)
    return modules.eval().requires_grad_(False)


def _order(location: str) -> tuple:
    """Forward order: mid block first, then decoder blocks by index."""
    parts = location.split(".")
    nums = tuple(int(p) for p in parts if p.isdigit())
    return (0 if parts[0] == "mid_block" else 1, *nums)
