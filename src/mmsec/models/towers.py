"""Model utilities shared by defenses, attacks, merging and training: a trainable copy of a model,
and the parameters its image tower is made of (found by autograd, for any ContrastiveModel)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def trainable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` to train, so the caller's model is never touched."""
    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


def image_tower_parameters(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, nn.Parameter]]:
    """The named parameters that ``model.encode_image`` depends on: the image tower, found by autograd.

    Works for any ContrastiveModel ``nn.Module`` (tiny CLIP, Hugging Face, open_clip adapters)
    without knowing its attribute names: the parameters reached by a backward pass from the image
    embeddings of ``probe`` (a few (B, 3, H, W) images in [0, 1]). The logit scale and the text
    tower are not reached. Raises if a parameter also feeds ``encode_text`` (towers sharing weights
    cannot be fine-tuned one at a time). Call it on a copy in eval mode: it runs forward passes.
    """
    named = [(n, p) for n, p in model.named_parameters()]
    flags = [p.requires_grad for _, p in named]
    for _, p in named:
        p.requires_grad_(True)
    try:
        def reached(out: torch.Tensor) -> list[bool]:
            grads = torch.autograd.grad(out.float().sum(), [p for _, p in named], allow_unused=True)
            return [g is not None for g in grads]

        image = reached(model.encode_image(probe[:2]))
        text = reached(model.encode_text(model.tokenize(["a photo"])))
    finally:
        for (_, p), flag in zip(named, flags, strict=True):
            p.requires_grad_(flag)
    shared = [n for (n, _), i, t in zip(named, image, text, strict=True) if i and t]
    if shared:
        raise ValueError(f"{type(model).__name__}: parameters {shared[:5]} feed both encode_image and encode_text; "
                         "the image tower cannot be fine-tuned with the text tower frozen")
    tower = [(n, p) for (n, p), i in zip(named, image, strict=True) if i]
    if not tower:
        raise ValueError(f"{type(model).__name__}.encode_image depends on no trainable parameter")
    return tower
