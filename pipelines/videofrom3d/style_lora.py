"""VideoFrom3D's distribution alignment: a style LoRA on Flux and its HED ControlNet.

The official recipe (``sag_distribution_alignment.py``, ``configs/distribution_alignment.yaml``,
spec §2b), reproduced:

- LoRA rank 16, no alpha (scale 1), on x-flux's processor layers -- the image/text ``qkv`` and
  ``proj`` of all 19 double blocks and single blocks 1-4 of Flux-dev (``qkv`` on the first 9216
  outputs of ``linear1``, ``proj`` on ``linear2``), and the same in both double blocks of the XLabs
  HED ControlNet; ``down ~ N(0, 1/rank²)``, ``up = 0``;
- each step: one reference image drawn (shuffled epochs, batch 1) with a random aspect crop
  (:mod:`.style_data`), VAE-encoded with a *sampled* latent (x-flux ``ae.encode``), its HED map
  into the ControlNet; ``t`` drawn uniformly from the 1000 times of x-flux's
  ``get_schedule(999, 4096)`` (the shift of a 1024² image, whatever the crop); ``x_t = (1 − t)
  x₁ + t x₀``; Flux guidance 1; loss ``MSE(v, x₀ − x₁)``;
- AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.01, eps 1e-8, constant rate (the config's
  10 warm-up steps are ignored by diffusers' ``constant`` schedule); gradients of Flux's LoRA
  clipped to norm 1 (the ControlNet's are not: ``clip_grad_norm_(dit.parameters())``); 600 steps,
  files every 100 (the README samples with step 400).

Differences, on purpose: the LoRA factors stay float32 while the frozen base runs in bfloat16 (the
official run casts the whole model, LoRA included, to bfloat16, where a 1e-4 Adam step on ``down``
weights of size ~1/16 falls below bfloat16's resolution); the times go to the model in float32
(the official casts them to bfloat16); randomness comes from one seeded generator (the run
resumes exactly); a fixed evaluation loss (the same images, times and noise every time) is logged
so the curve shows progress without the per-step noise.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from ...media.atomic import atomic_folder, atomic_path, write_json
from ...models.flux import Flux, XLabsControlNet, image_ids, patchify
from ...models.lora import LoRALinear, add_lora
from ...models.xlabs_lora import XLABS_LORA_INIT_STD, kohya_state_dict, xlabs_key, xlabs_lora_layers, xlabs_state_dict
from ...sampling.types import ProgressCallback, report
from .sag import xflux_schedule
from .style_data import ASPECT_CHOICES, IMAGE_SIZE, ReferenceImage, TextEmbedding, prepare_pair

log = logging.getLogger("pano360.videofrom3d.style_lora")

__all__ = [
    "StyleLoRAConfig",
    "TextEmbedding",
    "StyleLoRA",
    "training_times",
    "style_loss",
    "train_style_lora",
    "TrainResult",
    "LORA_FILE",
    "CONTROLNET_LORA_FILE",
    "COMFY_LORA_FILE",
    "STATE_FILE",
    "LOG_FILE",
]

LORA_FILE = "lora.safetensors"  # sag_distribution_alignment.py: checkpoint-N/lora.safetensors
CONTROLNET_LORA_FILE = "controlnet.lora.safetensors"
COMFY_LORA_FILE = "lora_comfyui.safetensors"  # the same Flux LoRA in kohya keys (stock LoraLoader)
STATE_FILE = "training_state.pt"
LOG_FILE = "training_log.json"
# x-flux training: get_schedule(999, (1024 // 8) * (1024 // 8) // 4) -- 1000 times, the shift of 4096 tokens.
TRAIN_SCHEDULE_STEPS = 999
TRAIN_SCHEDULE_TOKENS = (1024 // 8) * (1024 // 8) // 4


@dataclass(frozen=True)
class StyleLoRAConfig:
    """A distribution-alignment run (defaults: ``configs/distribution_alignment.yaml``)."""

    steps: int = 600
    rank: int = 16
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    double_blocks: tuple[int, ...] | None = None  # None: all (yaml double_blocks: null)
    single_blocks: tuple[int, ...] = (1, 2, 3, 4)  # yaml single_blocks: "1,2,3,4"
    controlnet: bool = True  # the "HACK" section: the same LoRA on the ControlNet's double blocks
    image_size: int = IMAGE_SIZE
    guidance: float = 1.0  # guidance_vec = torch.full(..., 1)
    save_every: int = 100  # checkpointing_steps
    eval_every: int = 50
    eval_draws: int = 4  # fixed (t, noise) pairs per image for the evaluation loss
    precision: str = "bf16"  # mixed_precision: "bf16" (frozen base); the LoRA stays float32
    gradient_checkpointing: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.rank < 1 or self.save_every < 1 or self.eval_every < 1 or self.eval_draws < 1:
            raise ValueError("StyleLoRAConfig: steps, rank, save_every, eval_every and eval_draws must be >= 1")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {self.precision!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def training_times() -> Tensor:
    """The 1000 times x-flux's trainer draws ``t`` from (index uniform in 0..999), float64, 1 -> 0."""
    return xflux_schedule(TRAIN_SCHEDULE_STEPS, TRAIN_SCHEDULE_TOKENS)


class StyleLoRA(nn.Module):
    """Flux and its ControlNet, frozen, with the distribution-alignment LoRAs.  The LoRA factors are
    the only trainable parameters."""

    def __init__(self, flux: Flux, controlnet: XLabsControlNet | None, config: StyleLoRAConfig):
        super().__init__()
        self.config = config
        self.flux, self.controlnet = flux, controlnet
        p = flux.params
        for m in (flux, controlnet):
            if m is not None:
                m.requires_grad_(False)
                m.gradient_checkpointing = config.gradient_checkpointing
        double = range(p.depth) if config.double_blocks is None else config.double_blocks
        bad = [i for i in double if not 0 <= i < p.depth] + [i for i in config.single_blocks
                                                            if not 0 <= i < p.depth_single_blocks]
        if bad:
            raise ValueError(f"LoRA blocks {bad} do not exist in this Flux ({p.depth} double, "
                             f"{p.depth_single_blocks} single blocks)")
        std = XLABS_LORA_INIT_STD / config.rank
        gen = torch.Generator().manual_seed(config.seed)  # the init follows the seed too
        names, rows = xlabs_lora_layers(double, config.single_blocks, p.hidden_size)
        self.flux_lora = add_lora(flux, names, config.rank, rows=rows, down_std=std, dtype=torch.float32, generator=gen)
        self.control_lora: dict[str, LoRALinear] = {}
        if controlnet is not None and config.controlnet:
            cn_double = range(len(controlnet.double_blocks))
            names, rows = xlabs_lora_layers(cn_double, (), p.hidden_size)
            self.control_lora = add_lora(controlnet, names, config.rank, rows=rows, down_std=std, dtype=torch.float32,
                                         generator=gen)

    def flux_parameters(self) -> list[nn.Parameter]:
        return [p for w in self.flux_lora.values() for p in (w.lora_down.weight, w.lora_up.weight)]

    def control_parameters(self) -> list[nn.Parameter]:
        return [p for w in self.control_lora.values() for p in (w.lora_down.weight, w.lora_up.weight)]

    def velocity(self, x_t: Tensor, t: Tensor, control: Tensor | None, text: TextEmbedding, h: int, w: int) -> Tensor:
        """Flux's prediction for patchified ``x_t (B, L, 64)`` of an ``h × w`` latent at times ``t (B,)``."""
        dev, dt = x_t.device, self.config.dtype
        b = x_t.shape[0]
        img_ids = image_ids(b, h, w, device=dev)
        txt = text.txt.to(dev, dt)[None].expand(b, -1, -1)
        txt_ids = torch.zeros(b, txt.shape[1], 3, device=dev)
        vec = text.vec.to(dev, dt)[None].expand(b, -1)
        guidance = torch.full((b,), self.config.guidance, device=dev, dtype=torch.float32)
        x = x_t.to(dt)
        controls = None
        if self.controlnet is not None and control is not None:
            controls = self.controlnet(x, img_ids, control.to(dev, dt), txt, txt_ids, t, vec, guidance)
        return self.flux(x, img_ids, txt, txt_ids, t, vec, guidance, controls)

    @torch.no_grad()
    def load_xlabs(self, lora: dict[str, Tensor], controlnet_lora: dict[str, Tensor] | None = None) -> None:
        """Set the factors from XLabs-format files (``lora.safetensors``, ``controlnet.lora.safetensors``),
        e.g. to continue an official run.  ValueError when the files hold other layers or shapes."""
        for loras, sd, what in ((self.flux_lora, lora, "lora"), (self.control_lora, controlnet_lora or {}, "controlnet lora")):
            want = {f"{xlabs_key(n)}.{h}.weight" for n in loras for h in ("down", "up")}
            if set(sd) != want:
                raise ValueError(f"{what}: expected the layers {sorted(want)[:4]}..., got missing "
                                 f"{sorted(want - set(sd))[:4]}, unexpected {sorted(set(sd) - want)[:4]}")
            for n, w in loras.items():
                for half, param in (("down", w.lora_down.weight), ("up", w.lora_up.weight)):
                    src = sd[f"{xlabs_key(n)}.{half}.weight"]
                    if src.shape != param.shape:
                        raise ValueError(f"{what}: {xlabs_key(n)}.{half} is {tuple(src.shape)}, expected "
                                         f"{tuple(param.shape)} (another rank or model size)")
                    param.copy_(src)

    def state(self) -> dict[str, Tensor]:
        return {f"flux.{k}": v for k, v in _factors(self.flux_lora).items()} | {
            f"controlnet.{k}": v for k, v in _factors(self.control_lora).items()}

    @torch.no_grad()
    def load_state(self, state: dict[str, Tensor]) -> None:
        mine = self.state()
        if set(state) != set(mine):
            raise ValueError(f"training state holds other LoRA layers: missing {sorted(set(mine) - set(state))[:4]}, "
                             f"unexpected {sorted(set(state) - set(mine))[:4]}")
        for name, loras in (("flux", self.flux_lora), ("controlnet", self.control_lora)):
            for k, w in loras.items():
                w.lora_down.weight.copy_(state[f"{name}.{k}.down"])
                w.lora_up.weight.copy_(state[f"{name}.{k}.up"])


def _factors(loras: dict[str, LoRALinear]) -> dict[str, Tensor]:
    out = {}
    for k, w in loras.items():
        out[f"{k}.down"] = w.lora_down.weight.detach().cpu().clone()
        out[f"{k}.up"] = w.lora_up.weight.detach().cpu().clone()
    return out


Encode = Callable[[Tensor], tuple[Tensor, Tensor]]  # (B, 3, H, W) in [-1, 1] -> scaled latent (mean, std)


def style_loss(model: StyleLoRA, latent: Tensor, control: Tensor | None, text: TextEmbedding, t: Tensor,
               noise: Tensor) -> Tensor:
    """``MSE(v(x_t, t), x₀ − x₁)``, ``x_t = (1 − t) x₁ + t x₀`` (x-flux training).

    latent: ``(B, 16, h, w)`` scaled latent ``x₁``.  control: ``(B, 3, 8h, 8w)`` in [-1, 1].
    t: ``(B,)`` float32.  noise: ``(B, L, 64)`` ``x₀`` in token layout.
    """
    _, _, h, w = latent.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent {h}x{w}: Flux packs 2x2 patches, both sides must be even")
    if control is not None and tuple(control.shape[-2:]) != (8 * h, 8 * w):
        raise ValueError(f"control image {tuple(control.shape[-2:])} must be 8x the latent {h}x{w} (the "
                         "ControlNet's hint block and Flux's VAE both reduce 8x)")
    x1 = patchify(latent.float())
    tt = t.to(x1)[:, None, None]
    x_t = (1 - tt) * x1 + tt * noise.to(x1)
    pred = model.velocity(x_t, t.to(x1.device, torch.float32), control, text, h, w)
    return nn.functional.mse_loss(pred.float(), (noise.to(x1) - x1).float())


@dataclass(frozen=True)
class TrainResult:
    steps: int
    losses: tuple[float, ...]  # every step run in this call
    eval_losses: tuple[tuple[int, float], ...]  # (step, fixed evaluation loss), the whole run
    folder: Path  # the last checkpoint folder


class _Draws:
    """The run's randomness from one generator: epoch order, aspect choices, times, noise."""

    def __init__(self, refs: Sequence[ReferenceImage], seed: int):
        self.refs = refs
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next_image(self) -> tuple[ReferenceImage, str]:
        if not self.order:  # DataLoader(shuffle=True): a new permutation every epoch
            self.order = torch.randperm(len(self.refs), generator=self.gen).tolist()
        ref = self.refs[self.order.pop(0)]
        ratio = ASPECT_CHOICES[int(torch.randint(len(ASPECT_CHOICES), (1,), generator=self.gen))]
        return ref, ratio

    def time(self, times: Tensor) -> Tensor:
        return times[torch.randint(len(times), (1,), generator=self.gen)].float()

    def normal(self, shape) -> Tensor:
        return torch.randn(shape, generator=self.gen)

    def state(self) -> dict:
        return {"rng": self.gen.get_state(), "order": list(self.order)}

    def load(self, state: dict) -> None:
        self.gen.set_state(state["rng"])
        self.order = list(state["order"])


def _encode_sample(encode: Encode, image: Tensor, device, draws: _Draws | torch.Generator) -> Tensor:
    mean, std = encode(image[None].to(device))
    eps = draws.normal(mean.shape) if isinstance(draws, _Draws) else torch.randn(mean.shape, generator=draws)
    return mean + std * eps.to(mean)


@torch.no_grad()
def _eval_loss(model: StyleLoRA, refs, encode: Encode, texts, times: Tensor, cfg: StyleLoRAConfig, device) -> float:
    """The loss on fixed draws: every image at its own aspect, ``eval_draws`` fixed (t, noise, latent
    sample) each, from a generator seeded apart from the run's."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    total, n = 0.0, 0
    for ref in refs:
        img, edges = prepare_pair(ref.image, ref.edges, "default", cfg.image_size)
        for _ in range(cfg.eval_draws):
            latent = _encode_sample(encode, img, device, gen)
            t = times[torch.randint(len(times), (1,), generator=gen)].float()
            noise = torch.randn(patchify(latent).shape, generator=gen)
            control = None if edges is None else edges[None].to(device)
            total += float(style_loss(model, latent, control, texts[ref.text], t.to(device), noise.to(device)))
            n += 1
    return total / n


def _save(out: Path, model: StyleLoRA, optimizer, step: int, draws: _Draws, log_data: dict) -> Path:
    """``checkpoint-<step>/`` (the official files plus the kohya copy), then the resumable state and
    the log, each written atomically."""
    folder = out / f"checkpoint-{step}"
    save_dtype = model.config.dtype
    meta = {"pano360": "videofrom3d distribution-alignment LoRA", "step": str(step), "rank": str(model.config.rank),
            "config": model.config.to_json()}
    if not folder.exists():
        with atomic_folder(folder) as tmp:
            save_file(xlabs_state_dict(model.flux_lora, save_dtype), str(Path(tmp) / LORA_FILE), metadata=meta)
            if model.control_lora:
                save_file(xlabs_state_dict(model.control_lora, save_dtype), str(Path(tmp) / CONTROLNET_LORA_FILE),
                          metadata=meta)
            save_file(kohya_state_dict(model.flux_lora, save_dtype), str(Path(tmp) / COMFY_LORA_FILE), metadata=meta)
    state = {"step": step, "lora": model.state(), "optimizer": optimizer.state_dict(), "draws": draws.state(),
             "config": model.config.to_json()}
    with atomic_path(out / STATE_FILE, ".partial", replace=True) as tmp:
        torch.save(state, tmp)
    write_json(out / LOG_FILE, log_data, replace=True)
    return folder


# Config fields that change what a checkpoint holds or how the run draws: resume only with the same values.
_STRUCTURAL = ("rank", "double_blocks", "single_blocks", "controlnet", "seed", "image_size")


def _resume(out: Path, model: StyleLoRA, optimizer, draws: _Draws) -> tuple[int, dict]:
    path = out / STATE_FILE
    if not path.is_file():
        return 0, {"train_loss": [], "eval_loss": []}
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = json.loads(state["config"])
    mine = json.loads(model.config.to_json())
    diff = [f for f in _STRUCTURAL if saved.get(f) != mine.get(f)]
    if diff:
        raise ValueError(f"{path}: the checkpoint was trained with other {diff}; use another --out to start over")
    model.load_state(state["lora"])
    optimizer.load_state_dict(state["optimizer"])
    draws.load(state["draws"])
    logged = json.loads((out / LOG_FILE).read_text()) if (out / LOG_FILE).is_file() else {}
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"]), {"train_loss": logged.get("train_loss", [])[: state["step"]],
                                "eval_loss": [e for e in logged.get("eval_loss", []) if e[0] <= state["step"]]}


def train_style_lora(model: StyleLoRA, refs: Sequence[ReferenceImage], texts: Sequence[TextEmbedding], encode: Encode,
                     out: str | Path, *, device: torch.device | str = "cpu", resume: bool = True,
                     callback: ProgressCallback | None = None) -> TrainResult:
    """Run ``model.config.steps`` steps (continuing ``out/training_state.pt`` when ``resume``).

    encode: the VAE, ``(1, 3, H, W)`` in [-1, 1] -> scaled latent mean and std ``(1, 16, H/8, W/8)``.
    Writes ``out/checkpoint-<step>/`` every ``save_every`` steps and at the end, the resumable
    state and ``training_log.json`` (train loss per step, evaluation loss every ``eval_every``).
    ``callback(done, total)`` after each step.  FloatingPointError when the loss is not finite.
    """
    cfg = model.config
    if not refs:
        raise ValueError("no reference images")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    params = model.flux_parameters() + model.control_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, eps=cfg.eps)
    draws = _Draws(refs, cfg.seed)
    start, log_data = _resume(out, model, optimizer, draws) if resume else (0, {"train_loss": [], "eval_loss": []})
    log_data["config"] = json.loads(cfg.to_json())
    times = training_times()
    model.train()
    if start == 0:
        log_data["eval_loss"].append([0, _eval_loss(model, refs, encode, texts, times, cfg, device)])
        log.info("evaluation loss before training: %.5f", log_data["eval_loss"][-1][1])
    losses = []
    folder = out / f"checkpoint-{start}"
    for step in range(start, cfg.steps):
        ref, ratio = draws.next_image()
        img, edges = prepare_pair(ref.image, ref.edges, ratio, cfg.image_size)
        with torch.no_grad():
            latent = _encode_sample(encode, img, device, draws)
        t = draws.time(times)
        noise = draws.normal(patchify(latent).shape)
        control = edges[None].to(device) if model.controlnet is not None and edges is not None else None
        if model.controlnet is not None and control is None:
            raise ValueError(f"{ref.name}: no edge map for the ControlNet")
        loss = style_loss(model, latent, control, texts[ref.text], t.to(device), noise.to(device))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step + 1}; lower --lr or use --precision fp32")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.flux_parameters(), cfg.max_grad_norm)
        optimizer.step()
        done = step + 1
        losses.append(value)
        log_data["train_loss"].append(value)
        log.info("step %d/%d  loss %.5f  (%s, %s)", done, cfg.steps, value, ref.name, ratio)
        if done % cfg.eval_every == 0 or done == cfg.steps:
            log_data["eval_loss"].append([done, _eval_loss(model, refs, encode, texts, times, cfg, device)])
            log.info("evaluation loss at step %d: %.5f", done, log_data["eval_loss"][-1][1])
        if done % cfg.save_every == 0 or done == cfg.steps:
            folder = _save(out, model, optimizer, done, draws, log_data)
            log.info("saved %s", folder)
        report(callback, done, cfg.steps)
    return TrainResult(cfg.steps, tuple(losses), tuple((int(s), float(v)) for s, v in log_data["eval_loss"]), folder)
