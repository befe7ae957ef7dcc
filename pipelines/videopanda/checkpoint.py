"""Checkpoints of a VideoPanda run: the adapter file the sampler loads, and the resumable state.

``<out>/videopanda_adapter.safetensors`` (:func:`...models.videopanda_adapter.save_adapter`,
the training facts in its header) and ``<out>/training_state.pt`` (step, trainable weights
with their LoRA factors, optimizer, the data and noise generators, the config), both
replaced atomically (media.atomic).  Resuming restores all of it, so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...media.atomic import atomic_path
from ...models.videopanda_adapter import TrainingFacts, save_adapter
from .batches import MatrixSource
from .train_config import ADAPTER_FILE, NOISE_AUG_DEFAULT, STATE_FILE, TrainConfig
from .trainable import Trainable

log = logging.getLogger("pano360.videopanda.train")

__all__ = ["save_checkpoint", "resume", "training_facts"]

# Fields that change what the state holds: a checkpoint resumes only with the same values.
_STRUCTURAL = ("base_training", "new_layers", "base_lora_rank", "new_lora_rank")


def training_facts(config: TrainConfig, step: int) -> TrainingFacts:
    """What the adapter file tells a sampler about this run."""
    return TrainingFacts(shift=config.shift, shift_tokens=config.shift_tokens, shift_low=config.shift_low,
                         noise_aug_sigma=NOISE_AUG_DEFAULT, steps=step, matrices=config.matrices,
                         base_training=config.base_training)


def save_checkpoint(out: Path, model: Trainable, optimizer: torch.optim.Optimizer, step: int,
                    source: MatrixSource, generator: torch.Generator) -> Path:
    """Write ``videopanda_adapter.safetensors`` (the file the sampler loads) and the resumable
    state (``training_state.pt``), both atomically.  Returns the adapter path."""
    adapter, extra = model.export()
    path = out / ADAPTER_FILE
    with atomic_path(path, ".partial.safetensors", replace=True) as tmp:
        save_adapter(tmp, adapter, training_facts(model.config, step), extra)
    state = {"step": step, "model": model.state(), "optimizer": optimizer.state_dict(),
             "source_rng": source.rng.get_state(), "noise_rng": generator.get_state(),
             "config": model.config.to_json()}
    with atomic_path(out / STATE_FILE, ".partial", replace=True) as tmp:
        torch.save(state, tmp)
    return path


def resume(out: Path, model: Trainable, optimizer, source: MatrixSource, generator: torch.Generator) -> int:
    path = out / STATE_FILE
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = TrainConfig.from_json(state["config"])
    diff = [f for f in _STRUCTURAL if getattr(saved, f) != getattr(model.config, f)]
    if diff:
        raise ValueError(f"{path}: the checkpoint was trained with different {diff}; use another --out to start over")
    model.load_state(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    source.rng.set_state(state["source_rng"])
    generator.set_state(state["noise_rng"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])
