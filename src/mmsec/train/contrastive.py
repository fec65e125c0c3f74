"""Contrastive (CLIP) training: symmetric InfoNCE, AdamW, linear warm-up then cosine decay.

Used by the zoo recipes, and meant to be reused by poisoned training and by fine-tuning
defenses: the data arrive through a ``batches(step)`` callable, so a caller controls exactly
which image-caption pairs are seen (clean, poisoned, filtered).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress_bar


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching pairs (Radford et al., 2021, Fig. 3)."""
    img = F.normalize(image_emb, dim=-1)
    txt = F.normalize(text_emb, dim=-1)
    logits = logit_scale * img @ txt.T  # (B, B); pair i matches i
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def cosine_lr(step: int, total: int, base_lr: float, warmup: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * progress))


def clip_adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW as CLIP trains: betas (0.9, 0.98), decay on weight matrices only (not norms, biases, scales)."""
    decay = [p for p in model.parameters() if p.ndim >= 2 and p.requires_grad]
    no_decay = [p for p in model.parameters() if p.ndim < 2 and p.requires_grad]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))


@dataclass
class TrainConfig:
    steps: int = 600
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 50
    grad_clip: float = 1.0


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def pair_clip_loss(model: nn.Module, pixels: torch.Tensor, captions: list[str], step: int) -> torch.Tensor:
    """The default training loss: :func:`clip_loss` of the batch's pairs."""
    return clip_loss(model.encode_image(pixels), model.encode_text(model.tokenize(captions)), model.logit_scale)


LossFn = Callable[[nn.Module, torch.Tensor, list[str], int], torch.Tensor]


def optimizer_step(model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float, grad_clip: float,
                   step: int, what: str = "contrastive") -> float:
    """One update from ``loss`` at learning rate ``lr`` (gradients clipped to norm ``grad_clip``; 0: not
    clipped); a non-finite loss stops the training, naming ``what`` and the step. Returns the loss."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{what} loss became {loss.item()} at step {step}")
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


def train_contrastive(model: nn.Module, batches: Callable[[int], tuple[torch.Tensor, list[str]]],
                      cfg: TrainConfig, desc: str = "contrastive training", quiet: bool = False,
                      loss_fn: LossFn = pair_clip_loss) -> TrainLog:
    """Train ``model`` (a ContrastiveModel nn.Module) in place for ``cfg.steps`` steps.

    ``batches(step)`` returns (pixels (B, 3, H, W) in [0, 1], captions list of B strings).
    ``loss_fn(model, pixels, captions, step)`` is the CLIP loss unless a method adds terms
    (CleanCLIP's unimodal ones). Weight decay applies to matrices only (not to norms, biases,
    embeddings' scale).
    """
    opt = clip_adamw(model, cfg.lr, cfg.weight_decay)
    log = TrainLog()
    start = time.perf_counter()
    model.train()
    with progress_bar(cfg.steps, desc, quiet=quiet) as bar:
        for step in range(cfg.steps):
            pixels, captions = batches(step)
            loss = optimizer_step(model, opt, loss_fn(model, pixels, captions, step),
                                  cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup), cfg.grad_clip, step)
            log.losses.append(loss)
            bar.advance(1, loss=f"{loss:.3f}")
    model.eval()
    log.seconds = time.perf_counter() - start
    return log
