"""Denoising diffusion training: noise prediction with a pluggable per-batch loss, EMA, AdamW.

DDPM's simple objective (Ho, Jain and Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS
2020, Eq. 14): draw t uniformly from the training timesteps and noise eps ~ N(0, I), form x_t with the
model's scheduler (``add_noise``), and regress the UNet's prediction onto eps with the mean squared
error. Conditional models drop the prompt (replace it by the empty prompt, the null condition of
classifier-free guidance; Ho and Salimans, 2021) with probability ``prompt_dropout``.

The zoo's settings (probes.md; :class:`DiffusionTrainConfig`'s defaults): AdamW at 2e-3 with linear
warm-up and cosine decay, gradients clipped to norm 1, an exponential moving average of the weights
(0.995) which replaces the weights at the end, batch 64.

The data arrive through ``batches(step) -> DiffusionBatch`` and the loss through
``loss_fn(model, batch, generator) -> scalar``, so a backdoor attack (BadDiffusion's trigger-shifted
forward process, TrojDiff, BadT2I) reuses the loop with its own batches (extra tensors in
``batch.extra``) and its own loss. Only ``model.unet`` is trained.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..progress import progress_bar
from .contrastive import cosine_lr, optimizer_step


@dataclass
class DiffusionBatch:
    """One training batch: images in [0, 1], their prompts (conditional models) and anything a custom
    loss needs (a poisoned-row mask, target images, ...), row-aligned with ``pixels``."""

    pixels: torch.Tensor  # (B, 3, H, W) in [0, 1]
    prompts: list[str] | None = None  # B prompts, or None for an unconditional model
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DiffusionTrainConfig:
    steps: int = 1800
    lr: float = 2e-3  # AdamW (probes.md)
    weight_decay: float = 0.0
    warmup: int = 100  # linear warm-up steps, then cosine decay to 0
    grad_clip: float = 1.0  # 0: not clipped
    ema: float | None = 0.995  # EMA decay of the weights (None: no EMA); the EMA replaces the weights at the end
    prompt_dropout: float = 0.1  # probability a prompt is replaced by "" (conditional models)
    seed: int = 0  # timesteps, noise and prompt dropout

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if not 0.0 <= self.prompt_dropout <= 1.0:
            raise ValueError(f"prompt_dropout must be in [0, 1], got {self.prompt_dropout!r}")
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be None or a decay in [0, 1), got {self.ema!r}")


@dataclass
class DiffusionTrainLog:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


LossFn = Callable[[Any, DiffusionBatch, torch.Generator], torch.Tensor]


def noise_prediction_loss(model: Any, batch: DiffusionBatch, generator: torch.Generator) -> torch.Tensor:
    """DDPM's simple loss: ``mean ||eps - eps_theta(x_t, t, prompts)||^2`` with t uniform over the training
    timesteps and eps ~ N(0, I), both drawn from ``generator``. A v-prediction model (its scheduler's
    ``prediction_type``) regresses its velocity onto ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0`` instead
    (Salimans and Ho, 2022): the noise loss weighted by 1 / abar_t, which keeps the high-noise steps trained."""
    x0 = model.encode_images(batch.pixels)  # (B, C, S, S) in the working space
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator)
    x_t = model.scheduler.add_noise(x0, noise, t.to(x0.device))
    if getattr(model, "prediction_type", "epsilon") == "epsilon":
        return F.mse_loss(model.predict_noise(x_t, t, batch.prompts), noise)
    return F.mse_loss(model.predict_output(x_t, t, batch.prompts), model.training_target(x0, noise, t))


def drop_prompts(prompts: list[str], p: float, rng: random.Random) -> list[str]:
    """Each prompt replaced by the empty prompt with probability ``p``."""
    return [("" if rng.random() < p else prompt) for prompt in prompts]


def train_diffusion(model: Any, batches: Callable[[int], DiffusionBatch], cfg: DiffusionTrainConfig,
                    loss_fn: LossFn = noise_prediction_loss, desc: str = "diffusion training",
                    quiet: bool = False) -> DiffusionTrainLog:
    """Train ``model.unet`` (a :class:`~mmsec.models.diffusers_adapter.DiffusionAdapter`) in place.

    ``batches(step)`` gives each step's :class:`DiffusionBatch`; prompts are dropped here (``cfg.prompt_dropout``)
    before ``loss_fn(model, batch, generator)`` sees them. Returns the per-step losses and wall seconds.
    A non-finite loss stops training with a FloatingPointError naming the step.
    """
    unet = model.unet
    params = [p for p in unet.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train_diffusion: model.unet has no parameter that requires grad")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = [p.detach().clone() for p in params] if cfg.ema is not None else None
    generator = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    log = DiffusionTrainLog()
    start = time.perf_counter()
    unet.train()
    with progress_bar(cfg.steps, desc, quiet=quiet) as bar:
        for step in range(cfg.steps):
            batch = batches(step)
            if batch.prompts is not None and cfg.prompt_dropout > 0:
                batch = DiffusionBatch(batch.pixels, drop_prompts(batch.prompts, cfg.prompt_dropout, rng), batch.extra)
            loss = optimizer_step(unet, opt, loss_fn(model, batch, generator),
                                  cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup), cfg.grad_clip, step, "diffusion")
            if ema is not None:
                for e, p in zip(ema, params, strict=True):
                    e.lerp_(p.detach(), 1.0 - cfg.ema)
            log.losses.append(loss)
            bar.advance(1, loss=f"{loss:.4f}")
    if ema is not None:
        for e, p in zip(ema, params, strict=True):
            p.data.copy_(e)
    unet.eval()
    log.seconds = time.perf_counter() - start
    return log


__all__ = ["DiffusionBatch", "DiffusionTrainConfig", "DiffusionTrainLog", "LossFn", "drop_prompts",
           "noise_prediction_loss", "train_diffusion"]
