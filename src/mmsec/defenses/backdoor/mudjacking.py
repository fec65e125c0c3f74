"""Mudjacking: Hongbin Liu, Michael K. Reiter, Neil Zhenqiang Gong, "Mudjacking: Patching Backdoor
Vulnerabilities in Foundation Models", USENIX Security 2024.

Threat model defended: a backdoored image encoder ``h`` (e.g. BadEncoder's) is deployed; after
deployment a client reports one *bug instance* ``(x_b, x_r)``: ``x_b`` a misclassified input (it
carries the unknown trigger) and ``x_r`` a correctly classified reference input of ``x_b``'s true
class. The defender also holds a small clean validation set ``D_val`` and patches ``h`` into ``h'``
(a new encoder) without knowing the trigger, the target or the attack.

Objective (gradient descent on the image tower of ``h'``, ``sim`` the cosine similarity)::

    L   = L_e + lambda_l * L_l + lambda_g * L_g
    L_e = - sim(h'(x_b), h'(x_r))                                   effectiveness: x_b embeds like x_r
    L_l = - mean_{x in D_val u {x_r}} sim(h(x), h'(x))             locality: clean embeddings stay put
    L_g = - mean_{x in D_val u {x_r}} sim(h'(x (+) t), h'(x))      generalisability: the trigger does nothing

``L_g`` needs the trigger ``t``, which the defender does not have. The paper reverse-engineers it
from the bug instance first (:func:`reverse_engineer_trigger`): a mask ``m`` and pattern ``p`` with
``x (+) t = (1 - m) * x + m * p`` such that stamping it on the *clean* reference moves the
reference's embedding onto the bug input's, ``max sim(h(x_r (+) t), h(x_b))``, with an L1 penalty
keeping the mask small (the trigger is the small difference that makes ``x_b`` misbehave).

Defaults: ``lambda_l = lambda_g = 1``; SGD on the image tower, ``epochs`` passes over ``D_val`` in
mini-batches, each step using the bug instance; the text tower and logit scale are untouched, so
a CLIP's zero-shot classifier keeps working with the patched tower.

Departures (stated, because the project's source text gives the three losses but no numbers): the
learning rate (SGD 1e-3, momentum 0.9, the BadEncoder code's optimiser for the same towers), the
epochs (20 over 256 validation images, batch 64), the loss weights (1, 1) and the trigger
reverse-engineering's settings (Adam 0.1 on the mask and pattern logits, 300 steps, L1 weight 1e-3
per pixel; mask and pattern initialised at 0.5 via zero logits) are this project's choices. The
BatchNorm layers of a ResNet tower stay in inference mode (as BadEncoder), so a 64-image batch does
not move their statistics.

Shapes: ``bug_input`` and ``reference`` are (3, H, W) or (1, 3, H, W); ``validation`` is (N, 3, H, W),
all in [0, 1].

Registered as ``mudjacking`` (kind ``repairs``)::

    result = Mudjacking()(model, bug_input, reference, validation, generator=0)
    result.model          # the patched copy; ``model`` is untouched
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_budget, check_int, check_pixels, check_positive, make_generator
from ...models.base import require_contrastive
from ...progress import progress_bar
from ...registry import register
from ..base import RepairDefense
from .invertune_inversion import stamp


@dataclass
class RecoveredTrigger:
    """A mask-and-pattern trigger: ``x (+) t = (1 - mask) * x + mask * pattern``."""

    mask: torch.Tensor  # (1, H, W) in [0, 1]
    pattern: torch.Tensor  # (3, H, W) in [0, 1]
    similarity: float  # sim(h(x_r (+) t), h(x_b)) reached

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        return (1 - self.mask) * pixels + self.mask * self.pattern


@dataclass
class MudjackingResult:
    """The patched model (a new object) and what it took."""

    model: nn.Module
    trigger: RecoveredTrigger
    losses: list[float]
    seconds: float
    params: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)


def _one_image(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (3, H, W) or (1, 3, H, W), got {type(x).__name__}")
    x = x.unsqueeze(0) if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"{name} must be one image, (3, H, W) or (1, 3, H, W), got shape {tuple(x.shape)}")
    check_pixels(x, name)
    return x


def _embed(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.encode_image(pixels).float(), dim=-1)


def reverse_engineer_trigger(model: nn.Module, bug_input: torch.Tensor, reference: torch.Tensor, steps: int = 300,
                             lr: float = 0.1, l1: float = 1e-3) -> RecoveredTrigger:
    """The mask and pattern that move the clean ``reference`` onto the ``bug_input`` in ``model``'s
    embedding space with a small mask (see the module docstring). ``model`` is only read."""
    xb, xr = _one_image(bug_input, "bug_input"), _one_image(reference, "reference")
    if xb.shape != xr.shape:
        raise ValueError(f"bug_input and reference must have the same size, got {tuple(xb.shape)} and {tuple(xr.shape)}")
    h, w = xb.shape[-2:]
    mask_logit = torch.zeros(1, h, w, requires_grad=True)  # sigmoid(0) = 0.5
    pattern_logit = torch.zeros(3, h, w, requires_grad=True)
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=lr)
    with torch.no_grad():
        goal = _embed(model, xb)  # (1, D)
    sim = torch.tensor(0.0)
    for _ in range(steps):
        mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        stamped = stamp(xr, mask, pattern)
        sim = (_embed(model, stamped) * goal).sum()
        loss = -sim + l1 * mask.sum()
        grads = torch.autograd.grad(loss, [mask_logit, pattern_logit])  # no .grad left on the model
        for p, g in zip((mask_logit, pattern_logit), grads, strict=True):
            p.grad = g
        opt.step()
    return RecoveredTrigger(torch.sigmoid(mask_logit).detach(), torch.sigmoid(pattern_logit).detach(), float(sim.detach()))


@register("repairs", "mudjacking")
class Mudjacking(RepairDefense):
    """Patch a backdoored image encoder from one bug instance ``(x_b, x_r)`` and a clean validation set.

    Args:
        lambda_l: weight of the locality loss (default 1).
        lambda_g: weight of the generalisability loss (default 1).
        epochs: passes over the validation set (default 20).
        batch_size: validation images per step (default 64).
        lr, momentum: SGD on the image tower (defaults 1e-3, 0.9).
        trigger_steps, trigger_lr, trigger_l1: the trigger reverse-engineering (300, 0.1, 1e-3).
        quiet: hide the progress bar.
    """

    name = "mudjacking"
    paper = "Liu, Reiter, Gong, USENIX Security 2024"

    def __init__(self, lambda_l: float = 1.0, lambda_g: float = 1.0, epochs: int = 20, batch_size: int = 64,
                 lr: float = 1e-3, momentum: float = 0.9, trigger_steps: int = 300, trigger_lr: float = 0.1,
                 trigger_l1: float = 1e-3, quiet: bool = True):
        self.lambda_l = check_budget("lambda_l", lambda_l, 0.0, 1e3, hint=" (weight of the locality loss)")
        self.lambda_g = check_budget("lambda_g", lambda_g, 0.0, 1e3, hint=" (weight of the generalisability loss)")
        self.epochs = check_int("epochs", epochs, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.lr = check_positive("lr", lr, 10.0, hint=" (SGD learning rate)")
        self.momentum = check_budget("momentum", momentum, 0.0, 1.0)
        self.trigger_steps = check_int("trigger_steps", trigger_steps, 1)
        self.trigger_lr = check_budget("trigger_lr", trigger_lr, 0.0, 10.0)
        self.trigger_l1 = check_budget("trigger_l1", trigger_l1, 0.0, 1e3)
        self.quiet = bool(quiet)

    def params(self) -> dict[str, Any]:
        """The hyper-parameters (``quiet``, a display switch, left out of what a result records)."""
        return {k: v for k, v in super().params().items() if k != "quiet"}

    def __call__(self, model: nn.Module, bug_input: torch.Tensor, reference: torch.Tensor,
                 validation: torch.Tensor, generator: torch.Generator | int | None = None) -> MudjackingResult:
        from ...models.towers import image_tower_parameters, trainable_copy

        require_contrastive(model, "Mudjacking")
        xb, xr = _one_image(bug_input, "bug_input"), _one_image(reference, "reference")
        check_pixels(validation, "validation")
        if validation.ndim != 4 or validation.shape[0] < 1:
            raise ValueError(f"validation must be (N, 3, H, W) with N >= 1, got {tuple(validation.shape)}")
        gen = make_generator(generator)
        was_training = model.training
        model.eval()
        try:
            trigger = reverse_engineer_trigger(model, xb, xr, self.trigger_steps, self.trigger_lr, self.trigger_l1)
            pool = torch.cat([validation, xr])  # D_val u {x_r}
            with torch.no_grad():
                clean = torch.cat([_embed(model, c) for c in pool.split(256)])  # (N + 1, D) h(x)
        finally:
            model.train(was_training)

        patched = trainable_copy(model).eval()  # BatchNorm statistics stay fixed
        tower = [p for _, p in image_tower_parameters(patched, validation[:2])]
        keep = {id(p) for p in tower}
        for p in patched.parameters():
            p.requires_grad_(id(p) in keep)
        opt = torch.optim.SGD(tower, lr=self.lr, momentum=self.momentum)
        n = pool.shape[0]
        b = min(self.batch_size, n)
        per_epoch = max(1, n // b)
        losses: list[float] = []
        start = time.perf_counter()
        with progress_bar(self.epochs * per_epoch, "Mudjacking", quiet=self.quiet) as bar:
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=gen)
                for k in range(per_epoch):
                    idx = order[k * b:(k + 1) * b]
                    x = pool[idx]  # (B, 3, H, W)
                    feats = _embed(patched, torch.cat([xb, xr, x, trigger.apply(x)]))  # (2 + 2B, D)
                    f_b, f_r, f_x, f_t = feats[0], feats[1], feats[2:2 + b], feats[2 + b:]
                    l_e = -(f_b * f_r).sum()
                    l_l = -(f_x * clean[idx]).sum(-1).mean()
                    l_g = -(f_t * f_x).sum(-1).mean()
                    loss = l_e + self.lambda_l * l_l + self.lambda_g * l_g
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                    bar.advance(1, loss=f"{losses[-1]:.3f}")
        for p in patched.parameters():
            p.requires_grad_(False)
            p.grad = None
        return MudjackingResult(patched.eval(), trigger, losses, time.perf_counter() - start, self.params(),
                                {"trigger_similarity": trigger.similarity, "trigger_mask_l1": float(trigger.mask.sum())})


__all__ = ["Mudjacking", "MudjackingResult", "RecoveredTrigger", "reverse_engineer_trigger"]
