"""Elijah (backdoor removal): An, Chou, Zhang, Xu, Tao, Shen, Cheng, Ma, Chen, Ho, Zhang, "Elijah: Eliminating
Backdoors Injected in Diffusion Models via Distribution Shift", AAAI 2024.

Threat model: the defender holds the suspect model (white box), an inverted trigger ``tau``
(:class:`~mmsec.defenses.diffusion.elijah.Elijah`; inverted here when none is given) and a small
clean image set (the paper: 10% of the training data); it fine-tunes a copy so that ``eps + tau``
no longer shifts the chain towards the target, while clean generation stays as it was.

Objective (per batch; ``M`` the model being tuned, ``M_f`` the frozen suspect model)::

    L_rb    = || M(eps + tau, T) - M_f(eps, T) ||^2     the trigger's shift removed: triggered noise behaves
                                                        like clean noise did
    L_mc    = || M(eps, T) - M_f(eps, T) ||^2           clean noise keeps the frozen model's output
    L_clean = || M(x_t, t) - eps ||^2                   the usual diffusion loss on the clean images
    L = L_clean + w_rb L_rb + w_mc L_mc

The paper writes ``L_rb`` as ``E_t E_{x_t}[|| M(x_t + lambda^t tau, t) - M(x_t, t) ||]``; the authors'
code (``deshift_loss`` in ``BadDiffusion/baddiffusion.py``) applies it at ``t = T`` only, on the same
noises as the batch's clean loss, against the *frozen* model's clean output, with MSE; this follows
the code.

Paper defaults (code): Adam at lr 2e-4 (32 px), batch 128, warm-up then cosine decay, gradient norm
clipped at 1.0, 50 epochs over the clean 10% (``clean_rate 0.1, poison_rate 0``), all three terms
weighted 1.

Departures: the losses go through ``model.predict_noise`` (the noise, whatever the UNet's
parameterisation); warm-up is ``min(500, steps // 10)`` steps so short runs still decay; the training
loop is :func:`mmsec.train.diffusion.train_diffusion` (AdamW with weight decay 0, i.e. Adam; no EMA).

Example::

    verdict = Elijah()(model, generator=0)
    repaired = ElijahRemoval(epochs=10)(model, clean_images, verdict.trigger, generator=0).model
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...attacks.backdoor.diffusion_backdoor import NoiseTrigger
from ...checks import check_bool, check_int, check_pixels, check_positive, make_generator
from ...models.base import require_family
from ...registry import register
from ...train.diffusion import DiffusionBatch, DiffusionTrainConfig, LossFn, train_diffusion
from .base import DiffusionRepair, RepairResult
from .elijah import Elijah

MAX_WARMUP = 500  # the code's lr_warmup_steps


def removal_loss(model: Any, frozen: Any, x0: torch.Tensor, tau: torch.Tensor, noise: torch.Tensor,
                 t: torch.Tensor, w_rb: float = 1.0, w_mc: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Elijah's removal loss on one batch (module docstring), differentiable in ``model``'s weights.

    ``x0`` (B, C, S, S) clean images in the working space, ``tau`` (C, S, S) the trigger's shift, ``noise``
    (B, C, S, S) standard normal (shared by the three terms, as the code), ``t`` (B,) int64 timesteps of the
    clean loss. Returns the scalar loss and its terms."""
    T = int(model.scheduler.config.num_train_timesteps) - 1
    x_t = model.scheduler.add_noise(x0, noise, t)
    clean = F.mse_loss(model.predict_noise(x_t, t), noise)
    frozen_out = frozen.predict_noise(noise, T).detach()  # (B, C, S, S): the frozen model on clean noise at T
    rb = F.mse_loss(model.predict_noise(noise + tau, T), frozen_out)
    mc = F.mse_loss(model.predict_noise(noise, T), frozen_out)
    loss = clean + w_rb * rb + w_mc * mc
    return loss, {"clean": float(clean.detach()), "rb": float(rb.detach()), "mc": float(mc.detach())}


def removal_batch_loss(frozen: Any, tau: torch.Tensor, w_rb: float, w_mc: float,
                       terms: list[dict[str, float]]) -> LossFn:
    """The training loop's per-batch loss: t uniform, eps ~ N(0, I) from the loop's generator, then
    :func:`removal_loss`; each step's terms are appended to ``terms``."""

    def loss(model: Any, batch: DiffusionBatch, generator: torch.Generator) -> torch.Tensor:
        x0 = model.encode_images(batch.pixels.to(next(model.unet.parameters()).device))  # (B, C, S, S)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.randint(0, int(model.scheduler.config.num_train_timesteps), (x0.shape[0],),
                          generator=generator).to(x0.device)
        value, parts = removal_loss(model, frozen, x0, tau.to(x0.device), noise, t, w_rb, w_mc)
        terms.append(parts)
        return value

    return loss


@register("diffusion_repairs", "elijah_removal")
class ElijahRemoval(DiffusionRepair):
    """Elijah's backdoor removal: fine-tune a copy so the inverted trigger's shift is undone.

    Args:
        epochs: passes over the clean images (code: 50 over the clean 10%).
        batch_size: images per step (code: 128; capped at the number of images).
        lr: Adam learning rate (code: 2e-4 at 32 px).
        grad_clip: gradient norm clip (code: 1.0).
        w_rb: weight of ``L_rb`` (code: 1).
        w_mc: weight of ``L_mc`` (code: 1).
        lam: ``lambda`` of the inversion run when no trigger is given (paper: 0.5; see :class:`Elijah`).
        inversion_steps: Adam steps of that inversion (code: 100).
        quiet: hide the progress bar.
    """

    name = "elijah_removal"
    paper = "An, Chou, Zhang, Xu, Tao, Shen, Cheng, Ma, Chen, Ho, Zhang, AAAI 2024"

    def __init__(self, epochs: int = 50, batch_size: int = 128, lr: float = 2e-4, grad_clip: float = 1.0,
                 w_rb: float = 1.0, w_mc: float = 1.0, lam: float = 0.5, inversion_steps: int = 100,
                 quiet: bool = True):
        self.epochs = check_int("epochs", epochs, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.lr = check_positive("lr", lr, 1.0, hint=" (Adam learning rate; the code's 2e-4)")
        self.grad_clip = check_positive("grad_clip", grad_clip, 1e6, hint=" (gradient norm clip; the code's 1.0)")
        self.w_rb = check_positive("w_rb", w_rb, 1e6, hint=" (weight of L_rb; the code's 1)")
        self.w_mc = check_positive("w_mc", w_mc, 1e6, hint=" (weight of L_mc; the code's 1)")
        self.lam = check_positive("lam", lam, 10.0, hint=" (the inversion's shift scale; the paper's 0.5)")
        self.inversion_steps = check_int("inversion_steps", inversion_steps, 1)
        self.quiet = check_bool("quiet", quiet)

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("quiet", None)
        return out

    def __call__(self, model: Any, images: torch.Tensor | None, trigger: Any | None = None,
                 generator: torch.Generator | int | None = None) -> RepairResult:
        """A repaired copy of ``model`` (left bit-for-bit unchanged).

        Args:
            model: a DiffusionModel with a trainable ``unet`` and ``encode_images``.
            images: (N, 3, S, S) clean images in [0, 1] at the model's size (the paper: 10% of the training set).
            trigger: the NoiseTrigger to remove (its ``shift`` is ``tau``), or None to invert one with
                :class:`Elijah`'s inversion.
            generator: seeds the inversion, batch order, timesteps and noise.
        """
        require_family(model, "diffusion", "ElijahRemoval")
        if not isinstance(getattr(model, "unet", None), nn.Module) or not hasattr(model, "encode_images"):
            raise TypeError(f"ElijahRemoval fine-tunes the model's `unet` (an nn.Module) on images it maps with "
                            f"`encode_images` (as mmsec's diffusers adapter does); {type(model).__name__} lacks them")
        size = int(model.image_size)
        if (not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1
                or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size)):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (N, 3, {size}, {size}) float tensor in [0, 1] with N >= 1 (clean "
                             f"images at the model's size; Elijah's removal needs a few), got {shape}")
        check_pixels(images, "images")
        start = time.perf_counter()
        gen = make_generator(generator)
        if trigger is None:
            verdict_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            trigger = Elijah(lam=self.lam, steps=self.inversion_steps)(model, verdict_gen).trigger
        if not isinstance(trigger, NoiseTrigger):
            raise TypeError(f"trigger must be a NoiseTrigger (x_T = scale * noise + shift) or None, got "
                            f"{type(trigger).__name__}")
        shape = (int(model.channels), size, size)
        if tuple(trigger.shift.shape) != shape:
            raise ValueError(f"trigger.shift must be {shape} (the model's starting noise), got "
                             f"{tuple(trigger.shift.shape)}")
        tau = trigger.shift.detach().float()
        n = images.shape[0]
        b = min(self.batch_size, n)
        per_epoch = math.ceil(n / b)
        steps = self.epochs * per_epoch
        order: dict[int, torch.Tensor] = {}

        def batches(step: int) -> DiffusionBatch:
            epoch, k = divmod(step, per_epoch)
            if epoch not in order:
                order.clear()
                order[epoch] = torch.randperm(n, generator=gen)
            return DiffusionBatch(images[order[epoch][k * b:(k + 1) * b]])

        frozen = copy.deepcopy(model).eval()
        for p in frozen.unet.parameters():
            p.requires_grad_(False)
        tuned = copy.deepcopy(model)
        for p in tuned.unet.parameters():
            p.requires_grad_(True)
        cfg = DiffusionTrainConfig(steps=steps, lr=self.lr, weight_decay=0.0, warmup=min(MAX_WARMUP, max(1, steps // 10)),
                                   grad_clip=self.grad_clip, ema=None, prompt_dropout=0.0,
                                   seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        terms: list[dict[str, float]] = []
        log = train_diffusion(tuned, batches, cfg, removal_batch_loss(frozen, tau, self.w_rb, self.w_mc, terms),
                              desc="Elijah removal", quiet=self.quiet)
        for p in tuned.unet.parameters():
            p.grad = None
        last = terms[-min(len(terms), 10):]
        details = {f"final_{k}": sum(d[k] for d in last) / len(last) for k in ("clean", "rb", "mc")}
        details["steps"] = float(steps)
        return RepairResult(model=tuned.eval(), trigger=trigger, losses=log.losses,
                            seconds=time.perf_counter() - start, params=self.params(), details=details)


__all__ = ["ElijahRemoval", "removal_batch_loss", "removal_loss"]
