"""What trains in a VideoPanda run: a diffusers Wan transformer with the adapter attached.

The paper freezes its base's spatial layers and tunes the rest (§3.2; its ablation
``freezing_vs_no_freeze``).  Wan has no separate spatial layers (one space-time
self-attention per block), so the choices are: the base frozen, LoRA on every block's
attention and FFN, the base self-attention unfrozen, or everything unfrozen; the new
layers train fully or as LoRA on the multi-view attention's copied projections.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ...models.lora import LoRALinear, add_lora, lora_state_dict, remove_lora
from ...models.videopanda_adapter import VideoPandaAdapter
from ...models.videopanda_wan import DiffusersAttachment, diffusers_to_official_key
from .train_config import TrainConfig

__all__ = ["Trainable"]

# Base linear layers that get LoRA (diffusers names inside each block): attention and FFN.
_BASE_LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                      "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")
_MV_LORA_TARGETS = ("q", "k", "v", "o")


class Trainable:
    """A diffusers Wan transformer with the adapter attached and the parameters to train.

    base_training: ``frozen`` (only the adapter), ``lora`` (LoRA on every block's attention
    and FFN), ``self_attn`` (the base self-attention unfrozen: Wan's space-time layers, the
    counterpart of the temporal layers VideoPanda §3.2 tunes), ``full``.  new_layers:
    ``full`` or ``lora`` (LoRA on the multi-view ``q, k, v, o``; ``proj_out`` and the
    embeddings always train fully).
    """

    def __init__(self, transformer: nn.Module, adapter: VideoPandaAdapter, config: TrainConfig):
        self.transformer, self.adapter, self.config = transformer, adapter, config
        transformer.requires_grad_(False)
        self.base_lora: dict[str, LoRALinear] = {}
        if config.base_training == "lora":
            names = [f"blocks.{i}.{t}" for i in range(len(transformer.blocks)) for t in _BASE_LORA_TARGETS]
            self.base_lora = add_lora(transformer, names, config.base_lora_rank)
            for w in self.base_lora.values():
                w.lora_down.requires_grad_(True)
                w.lora_up.requires_grad_(True)
        elif config.base_training == "self_attn":
            for block in transformer.blocks:
                block.attn1.requires_grad_(True)
        elif config.base_training == "full":
            transformer.requires_grad_(True)
        self.mv_lora: dict[str, LoRALinear] = {}
        adapter.requires_grad_(True)
        if config.new_layers == "lora":
            names = [f"blocks.{i}.mv_attn.{t}" for i in adapter.config.blocks_with_views for t in _MV_LORA_TARGETS]
            for name in names:
                adapter.get_submodule(name).requires_grad_(False)
            self.mv_lora = add_lora(adapter, names, config.new_lora_rank)
        self.attachment = DiffusersAttachment(transformer, adapter)
        if config.gradient_checkpointing:
            transformer.enable_gradient_checkpointing(self.attachment.checkpoint_function())
        if config.precision == "bf16":  # frozen base weights in bf16, trained ones stay fp32 (autocast)
            for p in transformer.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)

    def parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.adapter.parameters() if p.requires_grad]
        params += [p for p in self.transformer.parameters() if p.requires_grad]
        return params

    def state(self) -> dict[str, dict[str, Tensor]]:
        """What a checkpoint must hold to resume: the adapter (with its LoRA) and the
        trainable base parameters, by module name."""
        base = {n: p.detach() for n, p in self.transformer.named_parameters() if p.requires_grad}
        return {"adapter": self.adapter.state_dict(), "base": base}

    def load_state(self, state: dict[str, dict[str, Tensor]]) -> None:
        self.adapter.load_state_dict(state["adapter"], strict=True)
        named = dict(self.transformer.named_parameters())
        expected = {n for n, p in named.items() if p.requires_grad}
        if set(state["base"]) != expected:
            raise ValueError("checkpoint's trainable base parameters do not match this run's base_training")
        with torch.no_grad():
            for n, v in state["base"].items():
                named[n].copy_(v)

    def velocity(self, x: Tensor, timestep: Tensor, text: Tensor, views: int) -> Tensor:
        """The transformer on ``x`` (latents + conditioning channels) in groups of ``views``."""
        device = x.device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            with self.attachment.views(views, x.shape[2] // self.adapter.config.patch_size[0]):
                return self.transformer(x, timestep, text).sample.float()

    def export(self) -> tuple[VideoPandaAdapter, dict[str, Tensor]]:
        """The adapter to save (multi-view LoRA merged) and the ``base.*`` / ``base_lora.*``
        extras, with official Wan key names."""
        adapter = copy.deepcopy(self.adapter)
        if self.mv_lora:
            remove_lora(adapter, {n: adapter.get_submodule(n) for n in self.mv_lora}, merge=True)
        adapter = adapter.float().requires_grad_(False)
        extra: dict[str, Tensor] = {}
        if self.base_lora:
            lora = lora_state_dict(self.base_lora, rename=lambda n: diffusers_to_official_key(n + ".weight")[: -len(".weight")])
            extra.update({f"base_lora.{k}": v for k, v in lora.items()})
        elif self.config.base_training in ("self_attn", "full"):
            for n, p in self.transformer.named_parameters():
                if p.requires_grad:
                    extra[f"base.{diffusers_to_official_key(n)}"] = p.detach().float()
        return adapter, extra
