"""Clean accuracy per task and attack success rate of a (merged) model, through the frozen task heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..models.base import ContrastiveModel
from .tasks import ClassificationTask, check_task, head_logits, task_head

if TYPE_CHECKING:  # only the trigger's ``apply`` is used: merging does not import the attacks
    from ..attacks.backdoor.triggers import Trigger


@torch.no_grad()
def predictions(model: ContrastiveModel, pixels: torch.Tensor, head: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([head_logits(model, pixels[i:i + batch_size], head).argmax(1)
                      for i in range(0, pixels.shape[0], batch_size)])


def task_accuracy(model: ContrastiveModel, task: ClassificationTask, pixels: torch.Tensor, labels: torch.Tensor,
                  head: torch.Tensor | None = None) -> float:
    """Top-1 accuracy on ``task`` (a task object) with its frozen zero-shot head (from ``model``'s text
    tower unless given)."""
    task = check_task(task)
    head = task_head(model, task) if head is None else head
    return float((predictions(model, pixels, head) == labels).float().mean())


def attack_success_rate(model: ContrastiveModel, task: ClassificationTask, pixels: torch.Tensor, labels: torch.Tensor,
                        trigger: Trigger, target: str | int, head: torch.Tensor | None = None) -> float:
    """ASR: the fraction of triggered test images whose true class is not ``target`` that the task head
    containing the target classifies as ``target`` (BadMerging's definition, "backdoor accuracy")."""
    task = check_task(task)
    target = task.class_index(target)
    keep = labels != target
    if not bool(keep.any()):
        raise ValueError(f"every test image is of the target class {task.classes[target]!r}: ASR is undefined")
    head = task_head(model, task) if head is None else head
    triggered = trigger.apply(pixels[keep], generator=0)
    return float((predictions(model, triggered, head) == target).float().mean())
