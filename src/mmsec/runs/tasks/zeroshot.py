"""Task ``zeroshot``: robustness of zero-shot classification to an evasion attack.

Each cell attacks the zero-shot classifier (class prompts ensembled, or a prompt-tuned model's
learnt class embeddings) of its model, optionally hardened by the cell's defense, and stores
clean, noise-baseline and robust top-1 accuracy, the attack success rate and the perturbation
size (definitions in :data:`ZeroShotTask.metrics`).
"""

from __future__ import annotations

from typing import Any

import torch

from ...metrics import DEFINITIONS, recall_at_k, topk_accuracy
from ...registry import register
from .common import class_prompts
from .evasion import DEFENSE_COST, EvasionTask, require_noise
from .retrieval import retrieval_objective

METRICS = ("clean_accuracy", "top5_accuracy", "robust_accuracy", "noise_accuracy", "attack_success_rate",
           "mean_perturbation_linf", "i2t_r1")


@register("tasks", "zeroshot")
class ZeroShotTask(EvasionTask):
    """Zero-shot classification under an evasion attack (clean, noise and robust accuracy, ASR)."""

    metrics = {**{m: DEFINITIONS[m] for m in METRICS}, DEFENSE_COST.name: DEFENSE_COST}
    default_metrics = ("clean_accuracy", "robust_accuracy", "noise_accuracy", "attack_success_rate",
                       "mean_perturbation_linf")
    noise_metric = "noise_accuracy"
    noise_metrics = ("noise_accuracy",)
    adv_metrics = ("robust_accuracy",)

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
        return out


def clean_i2t_r1(model: Any, dataset: Any) -> float:
    """Image-to-text R@1 of clean images against the data's (deduplicated) first captions."""
    if not getattr(dataset, "captions", None):
        raise ValueError("metric i2t_r1 needs captions, but the data set has none")
    objective, labels, _ = retrieval_objective(model, dataset, "")
    with torch.no_grad():
        return recall_at_k(torch.cat([objective.logits(x) for x in dataset.pixels.split(250)]), labels, 1)


__all__ = ["ZeroShotTask", "clean_i2t_r1"]
