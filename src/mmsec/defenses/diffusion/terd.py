"""TERD's model detection: Mo, Huang, Li, Li, Wang, "TERD: A Unified Framework for Safeguarding Diffusion
Models Against Backdoors", ICML 2024.

Threat model: a defender holds a published diffusion model (white box: it can run and differentiate
the noise predictor, no training data) and asks whether it carries a backdoor on the starting noise
(BadDiffusion, TrojDiff, VillanDiffusion: ``x_T = gamma * eps + r`` generates the attacker's target).

Objective: reverse the trigger ``(r, gamma)`` in two stages (estimation from the prior, refinement with
a differential multi-step sampler; :mod:`.terd_reversal`), then compare the reversed backdoor
distribution ``N(r, gamma^2 I)`` with the benign prior ``N(0, I)`` dimension by dimension::

    KL_i = -log gamma + (gamma^2 + r_i^2 - 1) / 2
    M_r = mean_i KL_i - N_m,  V_r = var_i KL_i - N_v       (the code's N_m = -0.4, N_v = 0.003)

A benign model's reversal stays near ``N(0, I)`` (small ``M_r``, ``V_r``); a backdoored one's lands on the
trigger (large, uneven KL). The paper feeds ``(M_r, V_r)`` to a one-layer network trained on reversals of
benign and backdoored models.

Paper defaults: those of the reversal (3,000 + 1,000 iterations, batch 16, SGD lr 0.5, lambda 5e-5,
DDIM 10 steps), the normalisers ``N_m = -0.4``, ``N_v = 0.003`` (the code: "simply coefficients for
normalization").

Departure: there is no set of benign and backdoored models to train the one-layer network on, so the
decision is a threshold on the mean per-dimension KL, ``score = mean_i KL_i``. The default 0.02 nats
per dimension sits between a benign reversal (r shrinks towards 0: measured 0.00 on the analytic
clean predictor of the tests, 0.02-0.03 on tiny trained UNets after 300-1,000 iterations) and a
planted trigger (the shapes world's 4 x 4 checkerboard of +-1 on 3 x 8 x 8: 0.125). Calibrate it on
reversals of models known to be clean when they are at hand (``details`` holds every statistic).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ...attacks.backdoor.diffusion_backdoor import NoiseTrigger
from ...checks import check_budget, check_int, check_positive, make_generator
from ...registry import register
from .base import DiffusionModelDetector, ModelVerdict
from .terd_reversal import (
    PAPER_BATCH,
    PAPER_CLIP_NORM,
    PAPER_ITERATIONS,
    PAPER_LAMBDA,
    PAPER_LR,
    PAPER_REFINE_ITERATIONS,
    PAPER_SAMPLER_STEPS,
    PAPER_WINDOW,
    TriggerReversal,
    kl_per_dimension,
    reverse_trigger,
)

PAPER_N_M = -0.4  # the code's normaliser of the mean KL
PAPER_N_V = 0.003  # the code's normaliser of the KL's variance
DEFAULT_THRESHOLD = 0.02  # mean KL per dimension (module docstring: a departure, no detector network)

REVERSAL_PARAMS = ("iterations", "refine_iterations", "batch_size", "lr", "scale_lr", "lam", "window",
                   "sampler_steps", "clip_norm")


class TERDReversing:
    """The reversal hyper-parameters both TERD detectors take (validated once here, recorded by each)."""

    def _set_reversal(self, iterations: int, refine_iterations: int, batch_size: int, lr: float, scale_lr: float,
                      lam: float, window: int, sampler_steps: int, clip_norm: float, seed: int) -> None:
        self.iterations = check_int("iterations", iterations, 0)
        self.refine_iterations = check_int("refine_iterations", refine_iterations, 0)
        if self.iterations + self.refine_iterations == 0:
            raise ValueError("iterations + refine_iterations must be >= 1 (estimation and refinement steps), got 0")
        self.batch_size = check_int("batch_size", batch_size)
        self.lr = check_positive("lr", lr, math.inf, " (SGD step on the trigger r, the paper's 0.5)")
        self.scale_lr = check_budget("scale_lr", scale_lr, 0.0, math.inf, " (SGD step on gamma; 0: gamma stays 1)")
        self.lam = check_budget("lam", lam, 0.0, math.inf, " (weight of -||r||_1, the paper's 5e-5)")
        self.window = check_int("window", window)
        self.sampler_steps = check_int("sampler_steps", sampler_steps)
        self.clip_norm = check_positive("clip_norm", clip_norm, math.inf, " (the refinement's gradient norm)")
        self.seed = check_int("seed", seed, 0)

    def reverse(self, model: Any, generator: torch.Generator | int | None = None) -> TriggerReversal:
        """Reverse ``model``'s trigger with these settings (``generator``: None seeds it from ``seed``)."""
        gen = make_generator(self.seed if generator is None else generator)
        return reverse_trigger(model, generator=gen, **{k: getattr(self, k) for k in REVERSAL_PARAMS})


def kl_statistics(reversal: TriggerReversal) -> dict[str, float]:
    """The model-detection statistics of a reversal: mean and variance of the per-dimension KL, and the
    code's normalised ``M_r``, ``V_r``."""
    kl = kl_per_dimension(reversal.shift, reversal.scale)
    mean, var = kl.mean().item(), (kl - kl.mean()).square().mean().item()
    return {"kl_mean": mean, "kl_var": var, "M_r": mean - PAPER_N_M, "V_r": var - PAPER_N_V,
            "scale": float(reversal.scale), "shift_l2": reversal.shift.norm().item()}


@register("diffusion_model_detectors", "terd")
class TERD(TERDReversing, DiffusionModelDetector):
    """TERD's model detection: ``TERD()(model, generator) -> ModelVerdict`` (module docstring).

    Args:
        iterations: trigger-estimation iterations (3,000). refine_iterations: refinement iterations (1,000).
        batch_size: noises per iteration (16). lr: SGD step on ``r`` (0.5). scale_lr: SGD step on ``gamma``
            (0: gamma stays 1, as for BadDiffusion; the TrojDiff code's 0.002). lam: weight of
            ``-||r||_1`` (5e-5). window: timesteps at each end of the schedule (10). sampler_steps: DDIM
            steps of the refinement's generator (10). clip_norm: refinement gradient norm (0.01).
        threshold: flag when the mean per-dimension KL reaches it (0.02; a departure, see above).
        seed: seeds the reversal when the call gives no generator.
    """

    name = "terd"
    paper = "Mo, Huang, Li, Li, Wang, ICML 2024"
    threat_model = ("a defender with white-box access to a published diffusion model and no training data asks "
                    "whether a trigger on the starting noise is planted in it")

    def __init__(self, iterations: int = PAPER_ITERATIONS, refine_iterations: int = PAPER_REFINE_ITERATIONS,
                 batch_size: int = PAPER_BATCH, lr: float = PAPER_LR, scale_lr: float = 0.0, lam: float = PAPER_LAMBDA,
                 window: int = PAPER_WINDOW, sampler_steps: int = PAPER_SAMPLER_STEPS,
                 clip_norm: float = PAPER_CLIP_NORM, threshold: float = DEFAULT_THRESHOLD, seed: int = 0):
        self._set_reversal(iterations, refine_iterations, batch_size, lr, scale_lr, lam, window, sampler_steps,
                           clip_norm, seed)
        self.threshold = check_budget("threshold", threshold, 0.0, math.inf, " (mean KL per dimension, nats)")

    def __call__(self, model: Any, generator: torch.Generator | int | None = None) -> ModelVerdict:
        start = time.perf_counter()
        reversal = self.reverse(model, generator)
        stats = kl_statistics(reversal)
        score = stats["kl_mean"]
        details = {**stats, "reversal_seconds": reversal.seconds,
                   "final_loss": (reversal.losses["refinement"] or reversal.losses["estimation"])[-1]}
        return ModelVerdict(flagged=score >= self.threshold, score=score, threshold=self.threshold,
                            trigger=NoiseTrigger(reversal.shift, reversal.scale),
                            seconds=time.perf_counter() - start, details=details)


__all__ = ["DEFAULT_THRESHOLD", "PAPER_N_M", "PAPER_N_V", "TERD", "TERDReversing", "kl_statistics"]
