"""Adversarial fine-tuning of an image encoder: min over weights of max over an L-inf ball of a loss.

The shared loop behind TeCoA (Mao et al., ICLR 2023) and FARE (Schlarmann et al., ICML 2024),
which differ only in the per-sample loss of the image embedding that is passed in:

    min_theta  E_(x, t)  max_{||delta||_inf <= eps, x + delta in [0, 1]}  L(phi_theta(x + delta), t)

- inner maximisation: L-inf PGD with sign steps (Madry et al., ICLR 2018), ``steps`` steps of
  size ``alpha`` from a uniform random start in the ball, images kept in [0, 1];
  ``steps = 0`` skips it (clean fine-tuning, the baseline of ``benchmarks/adv_finetune_speed.py``);
- outer minimisation: AdamW on the mean loss of the adversarial batch, learning rate with a
  linear warm-up over the first ``warmup`` fraction of the steps then cosine decay to 0
  (FARE's schedule: open_clip's ``cosine_lr``, 1,400 warm-up steps of 20,000); weight decay on
  every trained parameter, as FARE's ``torch.optim.AdamW(params, lr, weight_decay)``;
  no gradient clipping (neither paper clips);
- data: ``epochs`` passes over the in-memory training set, reshuffled each epoch from the
  generator, ``n // batch_size`` full batches per epoch (the remainder is dropped, as FARE's
  ``drop_last=True``; a set smaller than one batch is one batch).

``loss_fn(embeddings (B, D), targets (B, ...)) -> (B,)`` is the per-sample loss; ``targets`` is
a tensor indexed like the images (class labels for TeCoA, the original model's embeddings for
FARE). The inner attack maximises its sum (the sign step is that of the mean), the outer step
minimises its mean.

BatchNorm. The attack always runs with the model in eval mode (running statistics), as FARE's
``model.eval()`` before ``pgd``: an attack in train mode would attack batch statistics and update
the running averages with adversarial batches. For the outer step, ``bn_mode="train"`` (default)
switches the model to train mode for that forward pass only, as both papers' code does
(``model.train()``): BatchNorm normalises with the adversarial batch's statistics and its running
averages move towards those of adversarial images, so the deployed (eval-mode) model normalises
with them. ``bn_mode="eval"`` keeps BatchNorm on its running statistics throughout (the attacked,
trained and deployed functions are then the same; the affine BatchNorm parameters still train).
On the tiny ResNet CLIP (4/255, 24 steps, 2 seeds) "train" gave 3-15 points more robust accuracy
than "eval" (FARE 0.65 vs 0.59, TeCoA 0.69 vs 0.61 on average) at the same clean accuracy (1.00), and smaller drift of the clean embeddings (FARE
||phi - phi_orig||^2 0.16 vs 0.27; TeCoA 1.3-1.5 vs 7-8). For towers without BatchNorm or
dropout (CLIP's ViTs, the tiny ViT) the two modes are identical.

Only the parameters passed in are trained (``requires_grad`` is switched off on the others for
the duration and restored afterwards); the inner attack takes gradients w.r.t. the pixels only
(``torch.autograd.grad``), so no parameter collects a ``.grad`` there.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..attacks.projection import project, random_start
from ..checks import check_bool, check_budget, check_int, check_positive
from ..progress import progress_bar
from .contrastive import cosine_lr

logger = logging.getLogger(__name__)

EmbeddingLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BN_MODES = ("eval", "train")


@dataclass
class AdvTrainConfig:
    """Hyper-parameters of :func:`adversarial_finetune` (pixel units for ``eps`` and ``alpha``)."""

    eps: float
    alpha: float
    steps: int  # inner PGD steps; 0 = clean fine-tuning (no attack)
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup: float = 0.07  # fraction of all optimisation steps (FARE: 1,400 / 20,000)
    random_start: bool = True
    bn_mode: str = "train"  # BatchNorm in the outer step: batch statistics, as both papers' code

    def __post_init__(self) -> None:
        """Validate every field with a teaching error (the defenses build their config here)."""
        self.eps = check_budget("eps", self.eps)
        self.alpha = check_budget("alpha", self.alpha)
        self.steps = check_int("steps", self.steps, 0)
        self.epochs = check_int("epochs", self.epochs, 1)
        self.batch_size = check_int("batch_size", self.batch_size, 1)
        self.lr = check_positive("lr", self.lr, math.inf, hint=" (AdamW learning rate, e.g. 1e-5)")
        self.weight_decay = check_budget("weight_decay", self.weight_decay, 0.0, math.inf,
                                         hint=" (AdamW decoupled weight decay, e.g. 1e-4)")
        self.warmup = check_budget("warmup", self.warmup, 0.0, 1.0,
                                   hint=" (fraction of the optimisation steps, e.g. 0.07)")
        self.random_start = check_bool("random_start", self.random_start)
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if self.steps and self.alpha * self.steps < self.eps:
            logger.warning("adversarial fine-tuning: alpha * steps = %.4g < eps = %.4g, so the inner attack "
                           "cannot reach the edge of the budget from the clean image", self.alpha * self.steps,
                           self.eps)


@dataclass
class AdvTrainLog:
    """What :func:`adversarial_finetune` records.

    Attributes:
        losses: mean outer loss (on the adversarial batch) per optimisation step.
        seconds: wall time of the whole loop.
        attack_seconds: part of it spent in the inner maximisation.
        epoch_seconds: wall time of each epoch.
        steps: optimisation steps taken.
        lrs: learning rate of each step.
    """

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    attack_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    steps: int = 0
    lrs: list[float] = field(default_factory=list)


def linf_pgd_max(encode: Callable[[torch.Tensor], torch.Tensor], loss_fn: EmbeddingLoss, clean: torch.Tensor,
                 targets: torch.Tensor, eps: float, alpha: float, steps: int, generator: torch.Generator,
                 start: bool = True) -> torch.Tensor:
    """L-inf PGD maximising ``loss_fn(encode(x'), targets)`` over the eps-ball around ``clean`` in [0, 1].

    ``x' <- Proj(x' + alpha * sign(grad_x' sum_i L_i))``, from a uniform random start when
    ``start``. Gradients are taken w.r.t. the pixels only. Returns detached (B, 3, H, W) pixels.
    """
    clean = clean.detach()  # (B, 3, H, W)
    adv = random_start(clean, eps, "linf", generator) if start else clean
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        loss = loss_fn(encode(adv), targets)  # (B,)
        (grad,) = torch.autograd.grad(loss.sum(), adv)  # (B, 3, H, W)
        adv = project(torch.add(adv.detach(), grad.sign(), alpha=alpha), clean, eps, "linf")
    return adv.detach()


def adversarial_finetune(model: nn.Module, params: list[nn.Parameter], pixels: torch.Tensor,
                         targets: torch.Tensor, loss_fn: EmbeddingLoss, cfg: AdvTrainConfig,
                         generator: torch.Generator, desc: str = "adversarial fine-tuning",
                         quiet: bool = False) -> AdvTrainLog:
    """Fine-tune ``params`` of ``model`` (a ContrastiveModel nn.Module) in place; see the module docstring.

    Args:
        model: the model to train (a copy: this function mutates it). Left in eval mode.
        params: the parameters to train (e.g. the image tower's); all others stay frozen.
        pixels: (N, 3, H, W) training images in [0, 1].
        targets: (N, ...) per-image targets handed to ``loss_fn`` with the batch.
        loss_fn: per-sample loss of (embeddings (B, D), targets (B, ...)) -> (B,).
        cfg: the hyper-parameters.
        generator: source of every random choice (shuffling, random starts).
    """
    n = pixels.shape[0]
    if n == 0:
        raise ValueError("adversarial fine-tuning needs at least one training image, got 0")
    if targets.shape[0] != n:
        raise ValueError(f"targets has {targets.shape[0]} rows but pixels has {n} images")
    if not params:
        raise ValueError("no parameters to train")
    batch = min(cfg.batch_size, n)
    per_epoch = n // batch
    total = per_epoch * cfg.epochs
    warmup = round(cfg.warmup * total)
    trained = {id(p) for p in params}
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    log = AdvTrainLog()
    start = time.perf_counter()
    model.eval()
    try:
        with progress_bar(total, desc, quiet=quiet) as bar:
            for _ in range(cfg.epochs):
                epoch_start = time.perf_counter()
                order = torch.randperm(n, generator=generator).to(pixels.device)
                for b in range(per_epoch):
                    idx = order[b * batch:(b + 1) * batch]
                    x, t = pixels[idx], targets[idx]  # (B, 3, H, W), (B, ...)
                    lr = cosine_lr(log.steps, total, cfg.lr, warmup)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    attack_start = time.perf_counter()
                    adv = (linf_pgd_max(model.encode_image, loss_fn, x, t, cfg.eps, cfg.alpha, cfg.steps,
                                        generator, cfg.random_start) if cfg.steps > 0 else x)
                    log.attack_seconds += time.perf_counter() - attack_start
                    if cfg.bn_mode == "train":
                        model.train()
                    loss = loss_fn(model.encode_image(adv), t).mean()
                    model.eval()
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"adversarial fine-tuning loss became {loss.item()} "
                                                 f"at step {log.steps}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    log.losses.append(loss.item())
                    log.lrs.append(lr)
                    log.steps += 1
                    bar.advance(1, loss=f"{loss.item():.4f}")
                log.epoch_seconds.append(time.perf_counter() - epoch_start)
    finally:
        model.eval()
        opt.zero_grad(set_to_none=True)
        for p, flag in saved_flags:
            p.requires_grad_(flag)
    log.seconds = time.perf_counter() - start
    return log
