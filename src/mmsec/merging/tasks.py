"""What model merging needs of a classification task, and logits through a task's frozen zero-shot head.

The merging papers (task arithmetic, TIES-merging, RegMean, AdaMerging; BadMerging) fine-tune one
CLIP image tower per downstream task and classify with a *frozen* zero-shot head: the class names'
prompt embeddings from the untouched text tower. A task is any object with a ``name``, its
``classes`` (names in label order), ``class_index(name or index)`` and ``prompts()`` (for each class,
its prompt strings, averaged into the class embedding). The tasks themselves are data: the shapes
world's four live in :mod:`mmsec.data.shapes_tasks`; a real data set's are built by its caller.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..models.base import ContrastiveModel
from ..models.zeroshot import class_text_embeddings


@runtime_checkable
class ClassificationTask(Protocol):
    """A downstream task: its name, class names in label order and each class's prompts."""

    name: str
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int: ...

    def class_index(self, target: str | int) -> int: ...

    def prompts(self) -> list[list[str]]: ...


def check_task(task: object, name: str = "task") -> ClassificationTask:
    """``task`` if it is a :class:`ClassificationTask`, else a TypeError that says what is expected."""
    if not isinstance(task, ClassificationTask) or not isinstance(getattr(task, "name", None), str):
        raise TypeError(f"{name} must be a task object with name, classes, num_classes, class_index() and prompts() "
                        f"(e.g. mmsec.data.shapes_tasks.get_task('shape')), got {task!r}")
    return task


def task_head(model: ContrastiveModel, task: ClassificationTask) -> torch.Tensor:
    """(C, D) frozen zero-shot head of ``task``: L2-normalised class embeddings from ``model``'s text tower."""
    return class_text_embeddings(model, check_task(task).prompts())


def head_logits(model: ContrastiveModel, pixels: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """(B, C) logits ``scale * cos(image, class)`` of ``pixels`` against a frozen head (differentiable)."""
    return features_logits(model, model.encode_image(pixels), head)


def features_logits(model: ContrastiveModel, features: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """(B, C) logits of raw image features (B, D) against a head: the features are L2-normalised here."""
    return model.logit_scale.detach() * F.normalize(features.float(), dim=-1) @ head.T


__all__ = ["ClassificationTask", "check_task", "features_logits", "head_logits", "task_head"]
