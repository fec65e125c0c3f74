"""Supervised classifier training: cross-entropy with label smoothing, AdamW, warm-up then cosine decay.

Trains the zoo's judge (``shapes-judge``) and is meant to be reused where a classifier is trained on
data a caller controls (PSBD's victim trained on poisoned samples): the data arrive through a
``batches(step)`` callable returning (pixels, labels), exactly as the contrastive trainer's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress_bar
from .contrastive import cosine_lr, optimizer_step


@dataclass
class ClassifierTrainConfig:
    steps: int = 500
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 25
    label_smoothing: float = 0.0
    grad_clip: float = 1.0


@dataclass
class ClassifierTrainLog:
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)  # training-batch accuracy per step (dropout on)
    seconds: float = 0.0


def train_classifier(model: nn.Module, batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                     cfg: ClassifierTrainConfig, desc: str = "classifier training", quiet: bool = False) -> ClassifierTrainLog:
    """Train ``model`` (an :class:`~mmsec.models.base.ImageClassifier` nn.Module) in place for ``cfg.steps`` steps.

    ``batches(step)`` returns (pixels (B, 3, H, W) in [0, 1], labels (B,) int64 class indices). The model
    trains in train mode (dropout and batch-norm statistics on) and is left in eval mode. Weight decay
    applies to weight matrices and kernels only (not to norms and biases).
    """
    decay = [p for p in model.parameters() if p.ndim >= 2 and p.requires_grad]
    no_decay = [p for p in model.parameters() if p.ndim < 2 and p.requires_grad]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    log = ClassifierTrainLog()
    start = time.perf_counter()
    model.train()
    with progress_bar(cfg.steps, desc, quiet=quiet) as bar:
        for step in range(cfg.steps):
            pixels, labels = batches(step)
            logits = model.logits(pixels)
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
            value = optimizer_step(model, opt, loss, cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup), cfg.grad_clip,
                                   step, what="classifier")
            log.losses.append(value)
            log.accuracies.append((logits.argmax(1) == labels).float().mean().item())
            bar.advance(1, loss=f"{value:.3f}")
    model.eval()
    log.seconds = time.perf_counter() - start
    return log


__all__ = ["ClassifierTrainConfig", "ClassifierTrainLog", "train_classifier"]
