"""TERD's trigger reversal (Mo, Huang, Li, Li, Wang, "TERD: A Unified Framework for Safeguarding Diffusion
Models Against Backdoors", ICML 2024), shared by the model detector (:mod:`.terd`) and the input
detector (:mod:`.terd_input`).

The unified attack form: a backdoored model maps the starting noise ``x_T = gamma * eps + r`` to a
target, and along the backdoored trajectory it predicts ``eps`` plus a part of the trigger that does not
depend on ``eps``. So for the *true* trigger the differential of the prediction error over two noises
vanishes; TERD's reversed loss, for a candidate ``(r, gamma)``::

    L(r) = 1/2 || [eps1 - F(x_t(eps1, r), t)] - [eps2 - F(x_t(eps2, r), t)] ||^2 - lambda ||r||_1
    x_t(eps, r) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) gamma eps + r

(summed over the dimensions, averaged over the batch). The ``- lambda ||r||_1`` term keeps ``r`` away
from the trivial ``r = 0``. Two stages:

1. *Trigger estimation*: ``x_0`` is unknown, so it is drawn from the prior (``x_0 ~ N(0, I)``) and
   ``t`` from the last ``window`` training timesteps (where ``x_T`` carries the trigger).
2. *Trigger refinement*: ``x_0`` is generated from the current trigger (``x_T = gamma * noise + r``,
   a DDIM sampler of ``sampler_steps`` steps, differentiated through), and the loss is the mean of
   the shifted loss at the last ``window`` timesteps and the unshifted one (``r`` not added) at the
   first ``window`` timesteps; the gradient on ``r`` is clipped to norm ``clip_norm``.

Defaults (the authors' code, github.com/PKU-ML/TERD, BadDiffusion/reverse.py and TrojDiff/reverse.py):
``r`` starts at ``-U(0, 1)``; SGD with ``lr = 0.5``, cosine-annealed, 3,000 estimation iterations then
1,000 refinement iterations (a fresh SGD, annealed over those); batch 16; ``lambda = 5e-5``; window 10
(of 1,000 timesteps); DDIM with 10 steps; gradient clipped at norm 0.01 in refinement; TrojDiff's
``gamma``: SGD at ``lr = 0.002``, clipped at >= 0.

Departures:

* ``gamma`` is one scalar (``NoiseTrigger.scale``), not one per pixel as in the TrojDiff code, and it
  starts at 1 (the benign noise level; the code starts it at 0); it is estimated only when
  ``scale_lr > 0`` (the BadDiffusion code keeps it at 1, the default here).
* Everything goes through ``predict_noise`` (the noise whatever the UNet's parameterisation) and a DDIM
  scheduler told that the prediction is the noise; a conditional model is reversed under the null prompt.
* The generator seeds ``r``'s start, the noises and timesteps (the code is unseeded).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ...checks import check_budget, check_int, check_positive, make_generator
from ...models.base import require_family
from ...models.diffusers_adapter import sampler_scheduler

PAPER_ITERATIONS = 3000  # trigger estimation
PAPER_REFINE_ITERATIONS = 1000  # trigger refinement (the code: iterations // 3)
PAPER_BATCH = 16
PAPER_LR = 0.5  # SGD on r
PAPER_SCALE_LR = 0.002  # SGD on gamma (TrojDiff's code); 0 here by default: gamma stays 1 (BadDiffusion's code)
PAPER_LAMBDA = 5e-5  # the weight of - ||r||_1
PAPER_WINDOW = 10  # timesteps at each end of the schedule
PAPER_SAMPLER_STEPS = 10  # DDIM steps of the refinement's generator
PAPER_CLIP_NORM = 0.01  # gradient norm on r in refinement


@dataclass
class TriggerReversal:
    """A reversed trigger: ``x_T = scale * noise + shift`` (the estimated backdoor distribution N(shift, scale^2 I)).

    Attributes:
        shift: (C, S, S) the estimated ``r`` in the model's working space (detached).
        scale: the estimated ``gamma`` (1.0 unless estimated).
        losses: ``{"estimation": [...], "refinement": [...]}``, the reversed loss per iteration (without the
            regulariser).
        seconds: wall time of the reversal.
    """

    shift: torch.Tensor
    scale: float
    losses: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def differential_loss(model: Any, x0: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, t: torch.Tensor,
                      eps1: torch.Tensor, eps2: torch.Tensor, shifted: bool = True) -> torch.Tensor:
    """TERD's reversed loss without the regulariser (module docstring): ``x0``, ``eps1``, ``eps2`` (B, C, S, S),
    ``shift`` (C, S, S), ``scale`` a scalar tensor, ``t`` (B,) int64; ``shifted=False`` leaves ``r`` out of
    ``x_t`` (the refinement's early timesteps). Differentiable in ``x0``, ``shift`` and ``scale``."""
    abar = model.scheduler.alphas_cumprod.to(x0.device, torch.float32)[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    base = abar.sqrt() * x0
    add = shift if shifted else torch.zeros_like(shift)
    x1 = base + (1 - abar).sqrt() * scale * eps1 + add  # (B, C, S, S)
    x2 = base + (1 - abar).sqrt() * scale * eps2 + add
    err = (eps1 - model.predict_noise(x1, t)) - (eps2 - model.predict_noise(x2, t))  # (B, C, S, S)
    return 0.5 * err.square().sum(dim=(1, 2, 3)).mean()


def ddim_generate(model: Any, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, C, S, S) x_0 in the working space from ``x_T`` by deterministic DDIM, differentiable (no clamp)."""
    config = {**dict(model.scheduler.config), "prediction_type": "epsilon", "clip_sample": False}
    scheduler = sampler_scheduler(config, "ddim", steps)  # predict_noise returns eps whatever the UNet predicts
    x = x_T
    for t in scheduler.timesteps:
        x = scheduler.step(model.predict_noise(x, int(t)), t, x).prev_sample
    return x


def _schedule(param_groups: list[dict[str, Any]], iterations: int) -> tuple[torch.optim.Optimizer, Any]:
    optim = torch.optim.SGD(param_groups)
    return optim, torch.optim.lr_scheduler.CosineAnnealingLR(optim, max(1, iterations))


def reverse_trigger(model: Any, iterations: int = PAPER_ITERATIONS, refine_iterations: int = PAPER_REFINE_ITERATIONS,
                    batch_size: int = PAPER_BATCH, lr: float = PAPER_LR, scale_lr: float = 0.0,
                    lam: float = PAPER_LAMBDA, window: int = PAPER_WINDOW, sampler_steps: int = PAPER_SAMPLER_STEPS,
                    clip_norm: float = PAPER_CLIP_NORM,
                    generator: torch.Generator | int | None = None) -> TriggerReversal:
    """Reverse the trigger of a DiffusionModel in TERD's two stages (module docstring).

    The model is not modified (its parameters' ``requires_grad`` are restored). ``refine_iterations = 0``
    skips the refinement (stage 1 alone). Returns a :class:`TriggerReversal`.
    """
    require_family(model, "diffusion", "TERD's trigger reversal")
    iterations, refine_iterations = check_int("iterations", iterations, 0), check_int("refine_iterations",
                                                                                      refine_iterations, 0)
    if iterations + refine_iterations == 0:
        raise ValueError("iterations + refine_iterations must be >= 1 (estimation and refinement steps), got 0")
    batch_size, window = check_int("batch_size", batch_size), check_int("window", window)
    sampler_steps = check_int("sampler_steps", sampler_steps)
    lr, clip_norm = check_positive("lr", lr, math.inf), check_positive("clip_norm", clip_norm, math.inf)
    scale_lr, lam = check_budget("scale_lr", scale_lr, 0.0, math.inf, ""), check_budget("lam", lam, 0.0, math.inf, "")
    n_steps = int(model.scheduler.config.num_train_timesteps)
    if window > n_steps:
        raise ValueError(f"window must be at most the schedule's {n_steps} training timesteps, got {window}")

    gen = make_generator(generator)
    device = model.device
    shape = (batch_size, model.channels, model.image_size, model.image_size)
    randn = lambda: torch.randn(shape, generator=gen).to(device)  # noqa: E731 (the reversal's noises, seeded)
    late = lambda: torch.randint(n_steps - window, n_steps, (batch_size,), generator=gen).to(device)  # noqa: E731
    early = lambda: torch.randint(0, window, (batch_size,), generator=gen).to(device)  # noqa: E731

    shift = (-torch.rand(shape[1:], generator=gen)).to(device).requires_grad_(True)  # the code's start, -U(0, 1)
    scale = torch.tensor(1.0, device=device, requires_grad=scale_lr > 0)
    groups = [{"params": [shift], "lr": lr}] + ([{"params": [scale], "lr": scale_lr}] if scale_lr > 0 else [])

    was_training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)  # gradients flow to the trigger only
    start, losses = time.perf_counter(), {"estimation": [], "refinement": []}
    try:
        optim, sched = _schedule(groups, iterations)
        for _ in range(iterations):  # stage 1: x_0 from the prior
            loss = differential_loss(model, randn(), shift, scale, late(), randn(), randn())
            _step(optim, sched, loss - lam * shift.abs().sum(), shift, scale, None)
            losses["estimation"].append(loss.item())
        optim, sched = _schedule(groups, refine_iterations)
        for _ in range(refine_iterations):  # stage 2: x_0 generated from the current trigger
            x0 = ddim_generate(model, scale * randn() + shift, sampler_steps)
            loss = (differential_loss(model, x0, shift, scale, late(), randn(), randn())
                    + differential_loss(model, x0, shift, scale, early(), randn(), randn(), shifted=False)) / 2
            _step(optim, sched, loss - lam * shift.abs().sum(), shift, scale, clip_norm)
            losses["refinement"].append(loss.item())
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return TriggerReversal(shift.detach().cpu(), float(scale), losses, time.perf_counter() - start)


def _step(optim: torch.optim.Optimizer, sched: Any, objective: torch.Tensor, shift: torch.Tensor,
          scale: torch.Tensor, clip_norm: float | None) -> None:
    optim.zero_grad()
    objective.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_([shift], clip_norm)  # the refinement's clip (the code's clip_norm)
    optim.step()
    sched.step()
    with torch.no_grad():  # the parameter update itself, not a differentiated path
        scale.clamp_(min=1e-3)  # gamma >= 0 (the code's clip; kept > 0 for the log-density)


def kl_per_dimension(shift: torch.Tensor, scale: float) -> torch.Tensor:
    """(C*S*S,) ``KL(N(r_i, gamma^2) || N(0, 1)) = -log gamma + (gamma^2 + r_i^2 - 1) / 2`` per dimension."""
    g = torch.tensor(float(scale))
    return (-torch.log(g) + (g * g + shift.flatten().float() ** 2 - 1) / 2)


def log_likelihood_ratio(x_T: torch.Tensor, shift: torch.Tensor, scale: float) -> torch.Tensor:
    """(B,) ``log N(x_T; r, gamma^2 I) - log N(x_T; 0, I)`` per row: > 0 when the backdoor distribution is the
    likelier one (TERD's input detection)."""
    x = x_T.flatten(1).float()  # (B, D)
    r = shift.flatten().to(x.device, torch.float32)  # (D,)
    g = float(scale)
    return (-x.shape[1] * math.log(g) - ((x - r) ** 2).sum(1) / (2 * g * g) + (x ** 2).sum(1) / 2)


__all__ = ["PAPER_BATCH", "PAPER_CLIP_NORM", "PAPER_ITERATIONS", "PAPER_LAMBDA", "PAPER_LR", "PAPER_REFINE_ITERATIONS",
           "PAPER_SAMPLER_STEPS", "PAPER_SCALE_LR", "PAPER_WINDOW", "TriggerReversal", "ddim_generate",
           "differential_loss", "kl_per_dimension", "log_likelihood_ratio", "reverse_trigger"]
