"""Task ``zeroshot``: robustness of zero-shot classification to an evasion attack.

Each cell attacks the zero-shot classifier (class prompts ensembled, or a prompt-tuned model's
learnt class embeddings) of its model, optionally hardened by the cell's defense, and stores
clean, noise-baseline and robust top-1 accuracy, the attack success rate and the perturbation
size (definitions in :data:`ZeroShotTask.metrics`).

Robustness audits, computed only when the spec's ``metrics`` ask for them:

- the gradient-masking checks of :func:`mmsec.evaluation.robustness.gradient_masking_checks`
  (Carlini et al., 2019), run on the cell's (defended) zero-shot classifier at the cell's attack
  budget (its ``eps`` and ``norm``) with the white-box ensemble of the cell's ``ensemble`` attack's
  preset (``standard`` for any other attack), every threshold at its default: each check's value
  (``masking_<check>``) and ``masking_checks_failed``, how many of the six fail;
- the drift of the (defended) model's clean image embeddings from the published model's
  (:func:`mmsec.defenses.adversarial.fare.embedding_drift`, FARE's loss at delta = 0).
"""

from __future__ import annotations

from typing import Any

import torch

from ...metrics import DEFINITIONS, MetricDefinition, recall_at_k, topk_accuracy
from ...registry import register
from ..cells import derive_seed, format_eps, method_params
from ..task import CellOutput
from .common import build_method, class_prompts
from .evasion import DEFENSE_COST, EvasionTask, require_noise
from .retrieval import retrieval_objective

METRICS = ("clean_accuracy", "top5_accuracy", "robust_accuracy", "noise_accuracy", "attack_success_rate",
           "mean_perturbation_linf", "i2t_r1")

# The gradient-masking checks (mmsec.evaluation.robustness.CHECKS), each stored as its measured value; a check
# passes when its value is at most its threshold (the defaults of gradient_masking_checks).
_ENSEMBLE = "the white-box ensemble (the preset of the cell's ensemble attack; 'standard' for any other attack)"
MASKING = [
    MetricDefinition("masking_zero_gradients", 1, "gradient-masking check: fraction of the clean-correct test images "
                     "whose loss gradient w.r.t. the pixels is exactly zero (passes at <= 0)", higher_is_better=False),
    MetricDefinition("masking_large_eps", 1, f"gradient-masking check: robust accuracy of {_ENSEMBLE} at a large "
                     "budget, 8 x the cell's eps (L-inf: at least 64/255, at most 1) (passes at <= 0.05)",
                     higher_is_better=False),
    MetricDefinition("masking_monotone_eps", 1, "gradient-masking check: largest rise of the ensemble's robust "
                     "accuracy from one budget to the next over eps/2, eps, 2 eps and the large budget (passes at "
                     "<= 0.02)", higher_is_better=False),
    MetricDefinition("masking_black_box", 1, "gradient-masking check: fraction of the test images the ensemble could "
                     "not break at the cell's eps but the Square attack (score-based, no gradients, 1,000 queries) "
                     "can (passes at <= 0.02)", higher_is_better=False),
    MetricDefinition("masking_single_step", 1, "gradient-masking check: fraction of the test images the ensemble "
                     "could not break at the cell's eps but one-step FGSM can (passes at <= 0.02)",
                     higher_is_better=False),
    MetricDefinition("masking_unbounded", 1, "gradient-masking check: robust accuracy of APGD-CE at an unbounded "
                     "budget (L-inf eps 1; 100 steps with the standard preset, 25 with fast) (passes at <= 0)",
                     higher_is_better=False),
    MetricDefinition("masking_checks_failed", 1, "how many of the six gradient-masking checks (masking_zero_gradients "
                     "... masking_unbounded) fail their threshold at the cell's budget (0: no sign of masked gradients)",
                     higher_is_better=False),
]
DRIFT = [
    MetricDefinition("embedding_drift_sq_l2", 1, "mean over the clean test images of ||phi(x) - phi_0(x)||_2^2, "
                     "phi the cell's (defended) model's un-normalised image embedding and phi_0 the published "
                     "model's (0 without a defense; FARE's loss at delta = 0)", higher_is_better=False),
    MetricDefinition("embedding_drift_cosine", 1, "mean over the clean test images of cos(phi(x), phi_0(x)), the "
                     "(defended) model's image embedding against the published model's (1 without a defense)"),
    MetricDefinition("embedding_sq_norm", 1, "mean over the clean test images of ||phi_0(x)||_2^2, the published "
                     "model's image embeddings (the scale embedding_drift_sq_l2 is read against)"),
]
AUDIT = {d.name: d for d in MASKING + DRIFT}


@register("tasks", "zeroshot")
class ZeroShotTask(EvasionTask):
    """Zero-shot classification under an evasion attack (clean, noise and robust accuracy, ASR)."""

    metrics = {**{m: DEFINITIONS[m] for m in METRICS}, DEFENSE_COST.name: DEFENSE_COST, **AUDIT}
    default_metrics = ("clean_accuracy", "robust_accuracy", "noise_accuracy", "attack_success_rate",
                       "mean_perturbation_linf")
    noise_metric = "noise_accuracy"
    noise_metrics = ("noise_accuracy",)
    adv_metrics = ("robust_accuracy",)

    def check(self, spec: Any, block: Any) -> list[str]:
        issues = []
        if {"masking_black_box", "masking_checks_failed"} & set(spec.metrics or ()):
            for i, a in enumerate(spec.attacks):
                norms = a.params.get("norm", "linf")
                if "l2" in (norms if isinstance(norms, list) else [norms]):
                    at = f"attack[{i}]" if isinstance(spec.attack, list) else "attack"
                    issues.append(f"{at}.params.norm: the masking checks run at the attack's budget and black_box "
                                  "runs the L-inf Square attack; with norm l2 leave masking_black_box and "
                                  "masking_checks_failed out of metrics")
        return issues

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        self._ctx = ctx  # compute() loads the published model through it (the drift metrics)
        return super().run(cell, ctx)

    def metric_kind(self, name: str) -> str:
        if name in AUDIT:
            return "masking" if name.startswith("masking_") else "drift"
        return super().metric_kind(name)

    @staticmethod
    def threat_models(cell: dict, attack: Any) -> dict[str, str]:
        out = EvasionTask.threat_models(cell, attack)
        p = method_params(attack)
        preset = p.get("preset", "standard") if cell["attack"]["name"] == "ensemble" else "standard"
        budget = " ".join(x for x in (p.get("norm", "linf"), f"eps={format_eps(p['eps'])}" if "eps" in p else None)
                          if x)
        out["masking"] = f"gradient-masking audit at {budget}: the {preset} ensemble, Square, FGSM, unbounded APGD-CE"
        out["drift"] = "clean inputs: the cell's (defended) model's image embeddings against the published model's"
        return out

    def objective(self, model: Any, dataset: Any, data_name: str) -> tuple[Any, torch.Tensor, int]:
        from ...attacks.objectives import ZeroShotObjective

        prompts = class_prompts(dataset, data_name)
        labels = torch.as_tensor(dataset.labels, dtype=torch.long)
        learnt = getattr(model, "class_embeddings", None)  # a prompt-tuned model (AdvPT) classifies with its own
        if learnt is not None:
            if learnt.shape[0] != len(prompts):
                raise ValueError(f"the prompt-tuned model has {learnt.shape[0]} learnt classes but the data set has "
                                 f"{len(prompts)}; tune the prompts on data with the same classes")
            return ZeroShotObjective(model, class_embeddings=learnt), labels, len(prompts)
        return ZeroShotObjective(model, prompts), labels, len(prompts)

    def compute(self, cell: dict, clean: torch.Tensor, adv: torch.Tensor, noise: torch.Tensor | None,
                labels: torch.Tensor, targets: torch.Tensor | None, model: Any, dataset: Any) -> dict[str, float]:
        wanted = set(cell["metrics"])
        out: dict[str, float] = {}
        if "clean_accuracy" in wanted:
            out["clean_accuracy"] = topk_accuracy(clean, labels, 1)
        if "top5_accuracy" in wanted:
            out["top5_accuracy"] = topk_accuracy(clean, labels, 5)
        if "robust_accuracy" in wanted:
            out["robust_accuracy"] = topk_accuracy(adv, labels, 1)
        if "noise_accuracy" in wanted:
            out["noise_accuracy"] = topk_accuracy(require_noise(noise), labels, 1)
        if "i2t_r1" in wanted:
            out["i2t_r1"] = clean_i2t_r1(model, dataset)
        if wanted & {d.name for d in MASKING}:
            objective, _, _ = self.objective(model, dataset, cell["data"]["name"])
            out.update(masking_checks(cell, objective, dataset.pixels, labels, wanted))
        if wanted & {d.name for d in DRIFT}:
            from ...defenses.adversarial.fare import embedding_drift

            drift = embedding_drift(model, self._ctx.load_model(cell["model"]), dataset.pixels)
            out.update({"embedding_drift_sq_l2": drift["sq_l2"], "embedding_drift_cosine": drift["cosine"],
                        "embedding_sq_norm": drift["orig_sq_norm"]})
        return out


def masking_checks(cell: dict, objective: Any, pixels: torch.Tensor, labels: torch.Tensor,
                   wanted: set[str]) -> dict[str, float]:
    """The gradient-masking checks the metrics ask for (all six for ``masking_checks_failed``), at the cell's
    attack budget, with the ensemble preset of the cell's ``ensemble`` attack (else ``standard``)."""
    from ...evaluation.robustness import CHECKS, gradient_masking_checks

    attack, _ = build_method(ZeroShotTask.attack_kinds, cell["attack"])
    p = method_params(attack)
    preset = p.get("preset", "standard") if cell["attack"]["name"] == "ensemble" else "standard"
    checks = CHECKS if "masking_checks_failed" in wanted else tuple(c for c in CHECKS if f"masking_{c}" in wanted)
    report = gradient_masking_checks(objective, pixels, labels, float(p["eps"]), p.get("norm", "linf"),
                                     attacks=preset, generator=derive_seed(int(cell["seed"]), "masking_checks"),
                                     checks=checks, batch_size=int(cell["batch_size"]))
    out = {f"masking_{name}": check.value for name, check in report.checks.items()}
    out["masking_checks_failed"] = float(len(report.failed))
    return out


def clean_i2t_r1(model: Any, dataset: Any) -> float:
    """Image-to-text R@1 of clean images against the data's (deduplicated) first captions."""
    if not getattr(dataset, "captions", None):
        raise ValueError("metric i2t_r1 needs captions, but the data set has none")
    objective, labels, _ = retrieval_objective(model, dataset, "")
    with torch.no_grad():
        return recall_at_k(torch.cat([objective.logits(x) for x in dataset.pixels.split(250)]), labels, 1)


__all__ = ["AUDIT", "ZeroShotTask", "clean_i2t_r1", "masking_checks"]
