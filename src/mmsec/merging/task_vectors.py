"""Task vectors: state-dict arithmetic on the image towers of CLIP models (Ilharco et al., ICLR 2023).

A task vector is ``tau = theta_ft - theta_pre`` over the image tower's parameters (the text tower,
and with it every task's zero-shot head, stays the pre-trained one). Merging methods build
``theta_merged`` from ``theta_pre`` and the ``tau``'s; :func:`with_tower` puts it into a *new* model,
never the caller's. The tower's parameters are found by autograd
(:func:`mmsec.models.towers.image_tower_parameters`), so any ContrastiveModel ``nn.Module`` works.
Buffers (BatchNorm running statistics) are not merged: task models are fine-tuned with BatchNorm
frozen (see :mod:`.finetune`), so they equal the pre-trained model's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..models.base import require_contrastive
from ..models.towers import image_tower_parameters

TowerState = dict[str, torch.Tensor]


def tower_names(model: nn.Module, image_size: int | None = None) -> list[str]:
    """Names of the parameters ``model.encode_image`` depends on (found on a copy, in eval mode)."""
    require_contrastive(model, "tower_names")
    size = image_size or int(getattr(model, "image_size", 32))
    probe = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    clone = copy.deepcopy(model).eval()
    return [n for n, _ in image_tower_parameters(clone, probe)]


def tower_state(model: nn.Module, names: Sequence[str]) -> TowerState:
    """A detached copy of the named parameters."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"model {type(model).__name__} lacks image-tower parameters {missing[:3]}: "
                         "task models must share the pre-trained model's architecture")
    return {n: params[n].detach().clone() for n in names}


def task_vector(pretrained: nn.Module, finetuned: nn.Module, names: Sequence[str]) -> TowerState:
    """``tau = theta_ft - theta_pre`` over ``names``."""
    pre, ft = tower_state(pretrained, names), tower_state(finetuned, names)
    for n in names:
        if pre[n].shape != ft[n].shape:
            raise ValueError(f"parameter {n}: shape {tuple(ft[n].shape)} in the task model, "
                             f"{tuple(pre[n].shape)} in the pre-trained model")
    return {n: ft[n] - pre[n] for n in names}


def task_vectors(pretrained: nn.Module, task_models: Sequence[nn.Module], names: Sequence[str]) -> list[TowerState]:
    check_task_models(task_models)
    return [task_vector(pretrained, m, names) for m in task_models]


def add(base: TowerState, vector: TowerState, scale: float = 1.0) -> TowerState:
    """``base + scale * vector``."""
    return {n: base[n] + scale * vector[n] for n in base}


def with_tower(pretrained: nn.Module, state: TowerState) -> nn.Module:
    """A deep copy of ``pretrained`` whose image tower holds ``state`` (gradients off, eval mode)."""
    model = copy.deepcopy(pretrained).eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, value in state.items():
            params[n].copy_(value)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_task_models(task_models: Sequence[nn.Module], low: int = 1) -> None:
    if isinstance(task_models, nn.Module) or not isinstance(task_models, Sequence):
        raise TypeError(f"task_models must be a list of fine-tuned models, got {type(task_models).__name__}")
    if len(task_models) < low:
        raise ValueError(f"task_models must hold at least {low} model(s), got {len(task_models)}")
    for i, m in enumerate(task_models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"task_models[{i}] must be an nn.Module, got {type(m).__name__}")
