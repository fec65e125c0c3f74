"""Fine-tuning the image tower of a CLIP on one task through its frozen zero-shot head (task arithmetic's recipe).

Ilharco et al. ("Editing Models with Task Arithmetic", ICLR 2023) fine-tune the image encoder only,
with cross-entropy through the frozen zero-shot classification head (the text tower's class
embeddings): AdamW, lr 1e-5, weight decay 0.1, batch 128, ~2,000 iterations, cosine schedule with
500 warm-up steps, gradient norm clipped at 1 (their code). BadMerging trains its task models the
same way and the backdoored one with an extra term: :func:`finetune_tower` takes ``extra_loss``.

Departures (CPU scale, the zoo's 0.4M-parameter towers trained from scratch at lr 2e-3): lr 1e-4,
batch 64, 300 steps, 30 warm-up steps by default (lr 1e-5 barely moves a tower this small in 300
steps). BatchNorm layers stay in inference mode (the model runs in ``eval()``), so the task models
share the pre-trained running statistics and merging acts on parameters only; the zoo's towers have
no dropout, so nothing else changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_budget, check_int, check_pixels, make_generator
from ..models.base import require_contrastive
from ..models.towers import trainable_copy
from .task_vectors import tower_names
from .tasks import ClassificationTask, check_task, head_logits, task_head

# extra_loss(model, pixels, labels, step, generator) -> (scalar loss, logged value)
ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]


@dataclass
class FinetuneResult:
    """A task model (a new object) and its training trace."""

    model: nn.Module
    task: str
    losses: list[float]
    seconds: float
    params: dict = field(default_factory=dict)


def cosine_lr(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (the task-arithmetic code's schedule)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def finetune_tower(model: nn.Module, task: ClassificationTask, pixels: torch.Tensor, labels: torch.Tensor,
                   steps: int = 300, lr: float = 1e-4, batch_size: int = 64, weight_decay: float = 0.1,
                   warmup: int = 30, clip: float = 1.0, extra_loss: ExtraLoss | None = None,
                   generator: torch.Generator | int | None = None) -> FinetuneResult:
    """Fine-tune a copy of ``model``'s image tower on ``task`` (pixels (N, 3, H, W), labels (N,)).

    ``task`` is a task object (:class:`~mmsec.merging.tasks.ClassificationTask`: name, classes,
    prompts), e.g. ``mmsec.data.shapes_tasks.get_task("position")``; its head is frozen.

    The loss is the task's cross-entropy through its frozen head, plus ``extra_loss(model, pixels,
    labels, step, generator)`` on the same batch when given (a backdoor's term). ``model`` is untouched.
    """
    require_contrastive(model, "finetune_tower")
    task = check_task(task)
    check_pixels(pixels, "pixels")
    if labels.shape != (pixels.shape[0],) or labels.dtype != torch.long:
        raise ValueError(f"labels must be int64 of shape ({pixels.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= task.num_classes:
        raise ValueError(f"labels must be in [0, {task.num_classes}) for task {task.name!r}")
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    check_budget("lr", lr, 0.0, 1.0, hint="")
    gen = make_generator(generator)
    names = set(tower_names(model))
    student = trainable_copy(model).eval()  # BatchNorm frozen (see module docstring)
    params = [p for n, p in student.named_parameters() if n in names]
    for n, p in student.named_parameters():
        p.requires_grad_(n in names)
    head = task_head(student, task)  # frozen: the text tower is not trained
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup)
        idx = torch.randint(0, pixels.shape[0], (batch_size,), generator=gen)
        x, y = pixels[idx], labels[idx]  # (B, 3, H, W), (B,)
        loss = F.cross_entropy(head_logits(student, x, head), y)
        if extra_loss is not None:
            loss = loss + extra_loss(student, x, y, step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        losses.append(float(loss.detach()))
    for p in student.parameters():
        p.requires_grad_(False)
    return FinetuneResult(student, task.name, losses, time.perf_counter() - start,
                          {"steps": steps, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay,
                           "warmup": warmup, "clip": clip})
