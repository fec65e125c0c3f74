"""A defense against diffusion backdoors measured: verdicts on backdoored and clean models, triggered-input
detection, and the backdoor left after a repair.

The three contracts of :mod:`mmsec.defenses.diffusion.base`, each scored the way its paper reports it:

* a model detector (Elijah, TERD) is run on the backdoored model and on clean models (the clean model the
  attack started from and clean fine-tunes of it): did it flag the one and none of the others, and how close
  is the trigger it estimated to the true one (cosine of the two shifts on the starting noise);
* an input detector (UFID, TERD's input detection) scores starting noises with and without the trigger on
  the backdoored model: AUROC (triggered = positive), and the rates it flags at its own threshold; the same
  noises on the clean model are the control (a detector that fires on the trigger pattern itself, not on
  the backdoor, scores high there too);
* a repair (Elijah's removal) returns a new model, sampled from the same noises as the backdoored one: the
  target hit rate, MSE to the target and clean recognition after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..checks import make_generator


def trigger_cosine(estimate: Any | None, truth: Any) -> float | None:
    """Cosine similarity of an estimated trigger's shift and the true one's (flattened); None without an estimate."""
    if estimate is None or getattr(estimate, "shift", None) is None:
        return None
    a, b = estimate.shift.detach().float().flatten().cpu(), truth.shift.detach().float().flatten().cpu()
    if a.shape != b.shape:
        raise ValueError(f"the estimated trigger's shift has {a.numel()} values, the true one {b.numel()}: "
                         "they must be on the same starting noise")
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else 0.0


@dataclass
class ModelDetectionReport:
    flagged: bool
    score: float
    threshold: float
    flagged_control: float  # fraction of the clean models flagged
    score_control: float  # the highest score among the clean models
    trigger_cosine: float | None
    seconds: float
    controls: list[dict[str, float]] = field(default_factory=list)  # each clean model's score and verdict
    details: dict[str, float] = field(default_factory=dict)


def model_detection_report(detector: Any, model: Any, clean_models: list[Any], trigger: Any,
                           generator: torch.Generator | int | None = None) -> ModelDetectionReport:
    """Run ``detector`` on the backdoored ``model`` and on each of ``clean_models`` (one seed per model, drawn
    from ``generator``); ``trigger`` is the true trigger, for the estimate's cosine."""
    if not clean_models:
        raise ValueError("clean_models must hold at least one clean model (the false-positive control)")
    gen = make_generator(generator)
    seeds = torch.randint(0, 2**31 - 1, (1 + len(clean_models),), generator=gen).tolist()
    verdict = detector(model, generator=torch.Generator().manual_seed(int(seeds[0])))
    controls = [detector(m, generator=torch.Generator().manual_seed(int(s))) for m, s in zip(clean_models, seeds[1:],
                                                                                             strict=True)]
    return ModelDetectionReport(
        flagged=bool(verdict.flagged), score=float(verdict.score), threshold=float(verdict.threshold),
        flagged_control=sum(bool(v.flagged) for v in controls) / len(controls),
        score_control=max(float(v.score) for v in controls),
        trigger_cosine=trigger_cosine(verdict.trigger, trigger), seconds=float(verdict.seconds),
        controls=[{"score": float(v.score), "flagged": float(bool(v.flagged))} for v in controls],
        details={k: float(v) for k, v in verdict.details.items()})


@dataclass
class InputDetectionReport:
    auroc: float  # triggered (positive) vs clean starting noises, on the backdoored model
    tpr: float  # triggered noises flagged at the detector's threshold
    fpr: float  # clean noises flagged
    auroc_control: float | None  # the same noises on the clean model
    seconds: float
    n: int


def input_detection_report(detector: Any, model: Any, trigger: Any, n: int, clean_model: Any | None = None,
                           generator: torch.Generator | int | None = None) -> InputDetectionReport:
    """Score ``n`` starting noises with ``trigger`` and the same ``n`` without it (unconditional models)."""
    from sklearn.metrics import roc_auc_score

    gen = make_generator(generator)
    noise = torch.randn(n, int(model.channels), int(model.image_size), int(model.image_size), generator=gen)
    inputs = torch.cat([trigger.apply(noise), noise])  # (2N, C, S, S): triggered first
    labels = [1] * n + [0] * n
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    verdict = detector(model, inputs, generator=torch.Generator().manual_seed(seed))
    scores = verdict.scores.detach().float().cpu()
    flagged = verdict.flagged.detach().bool().cpu()
    control = None
    if clean_model is not None:
        other = detector(clean_model, inputs, generator=torch.Generator().manual_seed(seed))
        control = float(roc_auc_score(labels, other.scores.detach().float().cpu().numpy()))
    return InputDetectionReport(auroc=float(roc_auc_score(labels, scores.numpy())),
                                tpr=float(flagged[:n].float().mean()), fpr=float(flagged[n:].float().mean()),
                                auroc_control=control, seconds=float(verdict.seconds), n=n)


__all__ = ["InputDetectionReport", "ModelDetectionReport", "input_detection_report", "model_detection_report",
           "trigger_cosine"]
