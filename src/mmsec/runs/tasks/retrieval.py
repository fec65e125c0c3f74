"""Task ``retrieval``: robustness of image-to-text retrieval to an evasion attack.

The gallery is the data set's (deduplicated) first captions; an image's label is the index of its
own caption, and a targeted attack names the caption it must retrieve. Stored: clean R@1/5/10 in
both directions, R@K of the adversarial images, R@1 under the noise baseline, the attack success
rate and the perturbation size.
"""

from __future__ import annotations

from typing import Any

import torch

from ...metrics import DEFINITIONS, MetricDefinition, recall_at_k
from ...registry import register
from .common import first_caption
from .evasion import DEFENSE_COST, EvasionTask, require_noise

_OWN = [
    MetricDefinition("i2t_r1_adv", 1, "image-to-text retrieval recall@1 of the attack's adversarial images "
                                      "against the clean caption gallery", higher_is_better=True),
    MetricDefinition("i2t_r5_adv", 1, "image-to-text retrieval recall@5 of the attack's adversarial images "
                                      "against the clean caption gallery"),
    MetricDefinition("i2t_r10_adv", 1, "image-to-text retrieval recall@10 of the attack's adversarial images "
                                       "against the clean caption gallery"),
    MetricDefinition("t2i_r1_adv", 1, "text-to-image retrieval recall@1 when the image gallery is the attack's "
                                      "adversarial images"),
    MetricDefinition("i2t_r1_noise", 1, "image-to-text retrieval recall@1 under uniform noise of the attack's "
                                        "budget"),
]
SHARED = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "attack_success_rate",
          "mean_perturbation_linf")


@register("tasks", "retrieval")
class RetrievalTask(EvasionTask):
    """Image-to-text retrieval under an evasion attack (clean, noise and adversarial recall@K, ASR)."""

    metrics = {**{m: DEFINITIONS[m] for m in SHARED}, **{d.name: d for d in _OWN}, DEFENSE_COST.name: DEFENSE_COST}
    default_metrics = ("i2t_r1", "i2t_r1_adv", "i2t_r1_noise", "attack_success_rate", "mean_perturbation_linf")
    noise_metric = "i2t_r1_noise"
    noise_metrics = ("i2t_r1_noise",)
    adv_metrics = ("i2t_r1_adv", "i2t_r5_adv", "i2t_r10_adv", "t2i_r1_adv")

    def objective(self, model: Any, dataset: Any, data_name: str) -> tuple[Any, torch.Tensor, int]:
        return retrieval_objective(model, dataset, data_name)

    def compute(self, cell: dict, clean: torch.Tensor, adv: torch.Tensor, noise: torch.Tensor | None,
                labels: torch.Tensor, targets: torch.Tensor | None, model: Any, dataset: Any) -> dict[str, float]:
        wanted = set(cell["metrics"])
        out: dict[str, float] = {}
        # Gallery texts may describe several images: text j's positives are all images with label j.
        images_of_text: list[set[int]] = [set() for _ in range(clean.shape[1])]
        for i, j in enumerate(labels.tolist()):
            images_of_text[j].add(i)
        for k in (1, 5, 10):
            if f"i2t_r{k}" in wanted:
                out[f"i2t_r{k}"] = recall_at_k(clean, labels, k)
            if f"t2i_r{k}" in wanted:
                out[f"t2i_r{k}"] = recall_at_k(clean.T, images_of_text, k)
            if f"i2t_r{k}_adv" in wanted:
                out[f"i2t_r{k}_adv"] = recall_at_k(adv, labels, k)
        if "t2i_r1_adv" in wanted:
            out["t2i_r1_adv"] = recall_at_k(adv.T, images_of_text, 1)
        if "i2t_r1_noise" in wanted:
            out["i2t_r1_noise"] = recall_at_k(require_noise(noise), labels, 1)
        return out


def retrieval_objective(model: Any, dataset: Any, data_name: str) -> tuple[Any, torch.Tensor, int]:
    """(objective over the deduplicated first-caption gallery, each image's caption index, gallery size)."""
    from ...attacks.objectives import RetrievalObjective

    if not getattr(dataset, "captions", None):
        raise ValueError(f"task 'retrieval' needs captions, but data set {data_name!r} has none")
    texts = [first_caption(c) for c in dataset.captions]
    # Deduplicate the gallery (shapes captions repeat): label = index of the image's caption text.
    gallery = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(gallery)}
    labels = torch.tensor([index[t] for t in texts], dtype=torch.long)
    return RetrievalObjective(model, gallery), labels, len(gallery)


__all__ = ["RetrievalTask", "retrieval_objective"]
