"""Elijah (trigger inversion and detection): Shengwei An, Sheng-Yen Chou, Kaiyuan Zhang, Qiuling Xu, Guanhong Tao,
Guangyu Shen, Siyuan Cheng, Shiqing Ma, Pin-Yu Chen, Tsung-Yi Ho, Xiangyu Zhang, "Elijah: Eliminating Backdoors
Injected in Diffusion Models via Distribution Shift", AAAI 2024.

Threat model: the defender holds a suspect diffusion model (white box: gradients of its noise
prediction), its sampler, and no data; the attacker planted a backdoor on the starting noise
(BadDiffusion, VillanDiffusion, TrojDiff: ``x_T = eps + r`` generates the target).

Objective. A backdoor must keep the trigger's *distribution shift* along the chain, so the model's
output on shifted noise stays shifted in proportion to the shift. The trigger ``tau`` is inverted
by minimising ::

    L_tau = || E_eps[ eps_theta(eps + tau, T) ] - lambda * tau ||        (eps ~ N(0, I), t = T)

then ``n`` images are generated from ``eps + tau``. A trigger that works collapses them onto the
target: the *uniformity score* ``S = E_{i != j} ||x_i - x_j||`` is small, and the mean
*total-variation loss* of the images tells smooth targets from the noisy out-of-distribution
samples an inverted trigger gives a clean model.

Paper defaults (the paper and its released code, github.com/njuaplusplus/Elijah, ``elijah_helper.py``):
``lambda = 0.5`` for BadDiffusion and TrojDiff (both helpers use ``R_coef_T = 0.5``; the VillanDiffusion
helper multiplies it by 2, i.e. ``lambda = 1`` for ODE-sampler backdoors), the expectation over a
batch of 100 noises (20 at 256 px), the loss the L1 distance of the batch-mean output to
``lambda * tau``, Adam at lr 0.1 for 100 steps (VillanDiffusion: 10) from ``tau ~ -U[0, 1)``
(TrojDiff: ``U[0, 1)``; VillanDiffusion: ``U[-1, 1)``), 16 images generated from ``eps + tau``,
uniformity as the LPIPS distance trimmed by 4 on each side (per row, then over rows), TV as
torchmetrics' ``TotalVariation(reduction="mean")`` (per image the sum of absolute neighbour
differences, averaged over images). The paper turns the two statistics into a verdict with a
decision rule fitted on a set of labelled clean and backdoored models.

Departures:

* Uniformity uses the pixel RMSE between images, not LPIPS: LPIPS needs pretrained VGG/AlexNet
  weights this offline project does not ship, and at 8-16 px LPIPS is ill-defined anyway. The
  trimming (``trim`` per side, the code's 4 at 16 images) is kept.
* The verdict: no set of labelled models is at hand, so the score is the *collapse* of the images
  from ``eps + tau`` relative to the same model's images from the same noises without ``tau``:
  ``score = 1 - S(eps + tau) / S(eps)`` (0: as diverse as clean samples; 1: identical images),
  flagged at ``score >= threshold``. Both raw statistics (and the TV of both sets) are kept in
  ``details`` so a caller with labelled models can fit the paper's rule on them.
* Everything goes through ``model.predict_noise`` (the noise, whatever the UNet's parameterisation)
  at the last training timestep, and images through ``model.sample`` with the sampler given here.
* The VillanDiffusion-style backdoor (the DDIM coefficient ``c_t = sqrt(1 - abar_t)``, what the
  shapes world's BadDiffusion uses) keeps ``eps_theta(eps + r, T) ~ eps + r``, which a clean model
  also does, so the shift at ``t = T`` carries little signal there; ``lambda = 1`` and the
  authors' 10 steps are the VillanDiffusion helper's answer; on the tiny test models neither
  recovers r (tests/defenses/diffusion/test_elijah.py).

Example::

    verdict = Elijah()(backdoored_model, generator=0)
    verdict.flagged, verdict.details["uniformity"], verdict.trigger.shift   # (C, S, S) the inverted tau
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ...attacks.backdoor.diffusion_backdoor import NoiseTrigger, check_sampler
from ...checks import check_budget, check_int, check_positive, make_generator
from ...models.base import require_family
from ...registry import register
from .base import DiffusionModelDetector, ModelVerdict

INITS = ("negative_uniform", "uniform", "symmetric_uniform")  # BadDiffusion's, TrojDiff's, VillanDiffusion's


@dataclass
class Inversion:
    """An inverted trigger: ``tau`` (C, S, S), the final inversion loss and the per-step losses."""

    tau: torch.Tensor
    loss: float
    losses: list[float]


def initial_trigger(shape: tuple[int, ...], init: str, generator: torch.Generator) -> torch.Tensor:
    """(C, S, S) the starting ``tau``: ``-U[0, 1)``, ``U[0, 1)`` or ``U[-1, 1)`` (module docstring)."""
    u = torch.rand(shape, generator=generator)
    if init == "negative_uniform":
        return -u
    if init == "uniform":
        return u
    if init == "symmetric_uniform":
        return 2 * u - 1
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def inversion_loss(model: Any, tau: torch.Tensor, noise: torch.Tensor, lam: float, t: int) -> torch.Tensor:
    """``|| mean_b eps_theta(noise_b + tau, t) - lam * tau ||_1`` (mean over elements), differentiable in ``tau``.

    ``tau`` (C, S, S), ``noise`` (B, C, S, S) standard normal, ``t`` the timestep (the paper's T)."""
    out = model.predict_noise(noise + tau, t)  # (B, C, S, S)
    return F.l1_loss(out.mean(0), lam * tau)


def invert_trigger(model: Any, lam: float = 0.5, steps: int = 100, lr: float = 0.1, batch_size: int = 100,
                   init: str = "negative_uniform", generator: torch.Generator | None = None) -> Inversion:
    """Elijah's trigger inversion: Adam on ``tau`` against :func:`inversion_loss` at the last training timestep,
    one fixed batch of noises (the code's). The model's weights are not changed (their gradients are not kept)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    shape = (int(model.channels), int(model.image_size), int(model.image_size))
    device = next(model.unet.parameters()).device
    t = int(model.scheduler.config.num_train_timesteps) - 1
    noise = torch.randn((batch_size, *shape), generator=gen).to(device)  # (B, C, S, S)
    tau = initial_trigger(shape, init, gen).to(device).requires_grad_(True)
    opt = torch.optim.Adam([tau], lr=lr)
    requires = [p.requires_grad for p in model.unet.parameters()]
    for p in model.unet.parameters():
        p.requires_grad_(False)  # only tau is optimised; no weight gradients are built
    losses: list[float] = []
    try:
        for _ in range(steps):
            loss = inversion_loss(model, tau, noise, lam, t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        final = float(inversion_loss(model, tau.detach(), noise, lam, t).detach())
    finally:
        for p, r in zip(model.unet.parameters(), requires, strict=True):
            p.requires_grad_(r)
    return Inversion(tau.detach().cpu(), final, losses)


def uniformity_score(images: torch.Tensor, trim: int = 4) -> float:
    """The mean pairwise distance of ``images`` (N, C, H, W): pixel RMSE between every pair, each row's distances
    sorted and ``trim`` cut from both ends (the self-distance 0 among them), then the row means sorted and trimmed
    the same way (the authors' trimmed LPIPS mean, with RMSE for LPIPS). Small: the images are alike."""
    n = images.shape[0]
    if n - 2 * trim < 1:
        raise ValueError(f"uniformity needs more than 2 * trim images: got {n} images and trim={trim}")
    flat = images.flatten(1).double()  # (N, D)
    dist = torch.cdist(flat, flat) / flat.shape[1] ** 0.5  # (N, N) RMSE
    rows = dist.sort(dim=1).values[:, trim:n - trim].mean(dim=1)  # (N,)
    return float(rows.sort().values[trim:n - trim].mean())


def total_variation(images: torch.Tensor) -> float:
    """Mean over images of the summed absolute differences between vertical and horizontal neighbours
    (torchmetrics' ``TotalVariation(reduction="mean")``); ``images`` (N, C, H, W) in [0, 1]."""
    dv = (images[..., 1:, :] - images[..., :-1, :]).abs().sum(dim=(1, 2, 3))  # (N,)
    dh = (images[..., :, 1:] - images[..., :, :-1]).abs().sum(dim=(1, 2, 3))  # (N,)
    return float((dv + dh).mean())


@register("diffusion_model_detectors", "elijah")
class Elijah(DiffusionModelDetector):
    """An, Chou, Zhang et al.'s Elijah: invert a distribution-shift trigger, flag if it collapses the samples.

    Args:
        lam: the shift scale ``lambda`` of the inversion loss (paper: 0.5 for BadDiffusion and TrojDiff;
            the authors' VillanDiffusion helper: 1.0).
        steps: Adam steps on ``tau`` (code: 100; VillanDiffusion: 10).
        lr: Adam learning rate (code: 0.1).
        batch_size: noises in the expectation (code: 100 at 32 px).
        init: ``"negative_uniform"`` (BadDiffusion helper: ``-U[0, 1)``), ``"uniform"`` (TrojDiff) or
            ``"symmetric_uniform"`` (VillanDiffusion: ``U[-1, 1)``).
        n_images: images generated from ``eps + tau`` (code: 16).
        trim: distances cut from each end in the uniformity score (code: 4).
        sampler: ``"ddim"`` or ``"ddpm"``, the sampler the images are generated with.
        sample_steps: inference steps (None: the model's default for the sampler).
        threshold: flag when ``1 - S(eps + tau) / S(eps) >= threshold`` (module docstring; our default).
    """

    name = "elijah"
    paper = "An, Chou, Zhang, Xu, Tao, Shen, Cheng, Ma, Chen, Ho, Zhang, AAAI 2024"

    def __init__(self, lam: float = 0.5, steps: int = 100, lr: float = 0.1, batch_size: int = 100,
                 init: str = "negative_uniform", n_images: int = 16, trim: int = 4, sampler: str = "ddim",
                 sample_steps: int | None = None, threshold: float = 0.5):
        self.lam = check_positive("lam", lam, 10.0, hint=" (the shift scale lambda; the paper's 0.5)")
        self.steps = check_int("steps", steps, 1)
        self.lr = check_positive("lr", lr, 100.0, hint=" (Adam learning rate on tau; the code's 0.1)")
        self.batch_size = check_int("batch_size", batch_size, 1)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS} (the BadDiffusion, TrojDiff and VillanDiffusion helpers' "
                             f"starting tau), got {init!r}")
        self.init = init
        self.trim = check_int("trim", trim, 0)
        self.n_images = check_int("n_images", n_images, 2 * self.trim + 2)
        self.sampler = check_sampler(sampler)
        self.sample_steps = None if sample_steps is None else check_int("sample_steps", sample_steps, 1)
        self.threshold = check_budget("threshold", threshold, 0.0, 1.0,
                                      hint=" (on the collapse 1 - S(eps + tau) / S(eps))")

    def __call__(self, model: Any, generator: torch.Generator | int | None = None) -> ModelVerdict:
        """Invert a trigger on ``model`` (not modified), generate from it, and judge.

        ``generator`` seeds the inversion's noises and starting ``tau`` and the generation's noises."""
        require_family(model, "diffusion", "Elijah")
        start = time.perf_counter()
        gen = make_generator(generator)
        inv = invert_trigger(model, self.lam, self.steps, self.lr, self.batch_size, self.init, gen)
        shape = tuple(inv.tau.shape)
        noise = torch.randn((self.n_images, *shape), generator=gen)  # (n, C, S, S)
        sample_gen = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        with torch.no_grad():  # generation only judges; nothing here is differentiated
            triggered = model.sample(noise + inv.tau, steps=self.sample_steps, sampler=self.sampler,
                                     generator=torch.Generator().manual_seed(sample_gen)).cpu()
            clean = model.sample(noise, steps=self.sample_steps, sampler=self.sampler,
                                 generator=torch.Generator().manual_seed(sample_gen)).cpu()
        u_trig, u_clean = uniformity_score(triggered, self.trim), uniformity_score(clean, self.trim)
        score = 1.0 - u_trig / max(u_clean, 1e-12)
        details = {"uniformity": u_trig, "uniformity_clean": u_clean, "tv_loss": total_variation(triggered),
                   "tv_loss_clean": total_variation(clean), "inversion_loss": inv.loss,
                   "trigger_norm": float(inv.tau.norm())}
        return ModelVerdict(flagged=bool(score >= self.threshold), score=float(score), threshold=self.threshold,
                            trigger=NoiseTrigger(inv.tau, 1.0), seconds=time.perf_counter() - start,
                            details=details)


__all__ = ["INITS", "Elijah", "Inversion", "initial_trigger", "invert_trigger", "inversion_loss",
           "total_variation", "uniformity_score"]
