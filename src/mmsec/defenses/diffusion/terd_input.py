"""TERD's input detection: Mo, Huang, Li, Li, Wang, "TERD: A Unified Framework for Safeguarding Diffusion
Models Against Backdoors", ICML 2024.

Threat model: a defender serving a possibly backdoored diffusion model screens the starting noises
``x_T`` it is asked to denoise (white box on the model, no training data); a triggered noise is
``x_T = gamma * eps + r`` (BadDiffusion: ``gamma = 1``; TrojDiff: ``gamma < 1``).

Objective: with the trigger ``(r, gamma)`` reversed on the model (:mod:`.terd_reversal`, both stages),
score each input by the log-likelihood ratio of the estimated backdoor distribution to the benign
prior, ``log N(x_T; r, gamma^2 I) - log N(x_T; 0, I)``, and flag it when the backdoor one is the likelier
(``threshold = 0``, the paper's and the code's rule: ``prob_poison > prob_benign``).

Paper defaults: those of the reversal (3,000 + 1,000 iterations, batch 16, SGD lr 0.5, lambda 5e-5,
DDIM 10 steps) and the threshold 0.

Departures: ``gamma`` is one scalar (see :mod:`.terd_reversal`). The reversal is cached per model object
(weakly: a model that is modified in place after a call keeps its old reversal; pass ``trigger`` or
make a new detector); a caller that already reversed the trigger (:class:`~.terd.TERD`'s verdict) can
pass it as ``trigger`` and skip the reversal.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Any

import torch

from ...attacks.backdoor.diffusion_backdoor import NoiseTrigger
from ...checks import check_budget
from ...registry import register
from .base import DiffusionInputDetector, InputVerdict
from .terd import TERDReversing
from .terd_reversal import (
    PAPER_BATCH,
    PAPER_CLIP_NORM,
    PAPER_ITERATIONS,
    PAPER_LAMBDA,
    PAPER_LR,
    PAPER_REFINE_ITERATIONS,
    PAPER_SAMPLER_STEPS,
    PAPER_WINDOW,
    log_likelihood_ratio,
)


@register("diffusion_input_detectors", "terd_input")
class TERDInput(TERDReversing, DiffusionInputDetector):
    """TERD's input detection: ``TERDInput()(model, x_T, prompts=None, generator, trigger=None) -> InputVerdict``.

    Args: the reversal's, as :class:`~.terd.TERD` (iterations 3,000, refine_iterations 1,000, batch_size 16,
    lr 0.5, scale_lr 0, lam 5e-5, window 10, sampler_steps 10, clip_norm 0.01, seed 0), and
        threshold: flag when the log-likelihood ratio reaches it (0: the backdoor distribution is the likelier).
    """

    name = "terd_input"
    paper = "Mo, Huang, Li, Li, Wang, ICML 2024"
    threat_model = ("a defender serving a possibly backdoored diffusion model (white box, no training data) screens "
                    "the starting noises it is given for a trigger")

    def __init__(self, iterations: int = PAPER_ITERATIONS, refine_iterations: int = PAPER_REFINE_ITERATIONS,
                 batch_size: int = PAPER_BATCH, lr: float = PAPER_LR, scale_lr: float = 0.0, lam: float = PAPER_LAMBDA,
                 window: int = PAPER_WINDOW, sampler_steps: int = PAPER_SAMPLER_STEPS,
                 clip_norm: float = PAPER_CLIP_NORM, threshold: float = 0.0, seed: int = 0):
        self._set_reversal(iterations, refine_iterations, batch_size, lr, scale_lr, lam, window, sampler_steps,
                           clip_norm, seed)
        self.threshold = check_budget("threshold", threshold, -math.inf, math.inf, " (log-likelihood ratio, nats)")
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> NoiseTrigger

    def trigger_for(self, model: Any, generator: torch.Generator | int | None = None) -> NoiseTrigger:
        """The reversed trigger of ``model`` (reversed on the first call, cached for the model object)."""
        if model not in self._cache:
            reversal = self.reverse(model, generator)
            self._cache[model] = NoiseTrigger(reversal.shift, reversal.scale)
        return self._cache[model]

    def __call__(self, model: Any, x_T: torch.Tensor, prompts: list[str] | None = None,
                 generator: torch.Generator | int | None = None, trigger: NoiseTrigger | None = None) -> InputVerdict:
        """Score ``x_T`` (B, C, S, S) starting noises; ``prompts`` are ignored (the trigger lives in the noise);
        ``trigger``: an already reversed trigger (None: reverse or reuse this model's)."""
        start = time.perf_counter()
        want = (model.channels, model.image_size, model.image_size)
        if not isinstance(x_T, torch.Tensor) or x_T.ndim != 4 or tuple(x_T.shape[1:]) != want:
            got = tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else type(x_T).__name__
            raise ValueError(f"x_T must be (B, {want[0]}, {want[1]}, {want[2]}) starting noises in the model's "
                             f"working space, got {got}")
        if trigger is not None and not isinstance(trigger, NoiseTrigger):
            raise TypeError(f"trigger must be None or a NoiseTrigger (TERD's verdict.trigger), got "
                            f"{type(trigger).__name__}")
        if trigger is not None and tuple(trigger.shift.shape) != want:
            raise ValueError(f"trigger.shift must be {want} for this model, got {tuple(trigger.shift.shape)}")
        trig = trigger if trigger is not None else self.trigger_for(model, generator)
        scores = log_likelihood_ratio(x_T.detach(), trig.shift, trig.scale).cpu()  # (B,)
        return InputVerdict(scores=scores, flagged=scores >= self.threshold, threshold=self.threshold,
                            seconds=time.perf_counter() - start,
                            details={"trigger_scale": float(trig.scale), "trigger_l2": trig.shift.norm().item(),
                                     "trigger_given": trigger is not None})


__all__ = ["TERDInput"]
