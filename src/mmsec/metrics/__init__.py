"""Metrics: pure functions of scores and labels, each with a stated definition.

Every metric stored in the results store carries a :class:`MetricDefinition` (name, version,
what it measures and under which threat model), so two numbers are compared only when they
mean the same thing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    version: int
    description: str
    higher_is_better: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


DEFINITIONS: dict[str, MetricDefinition] = {d.name: d for d in [
    MetricDefinition("clean_accuracy", 1, "zero-shot top-1 accuracy on unperturbed images"),
    MetricDefinition("top5_accuracy", 1, "zero-shot top-5 accuracy on unperturbed images"),
    MetricDefinition("robust_accuracy", 1, "zero-shot top-1 accuracy on the attack's adversarial images"),
    MetricDefinition("noise_accuracy", 1, "zero-shot top-1 accuracy under uniform noise of the attack's budget"),
    MetricDefinition("attack_success_rate", 1,
                     "untargeted: fraction of originally-correct samples whose prediction changes; "
                     "targeted: fraction of samples predicted as their target", higher_is_better=False),
    MetricDefinition("i2t_r1", 1, "image-to-text retrieval recall@1"),
    MetricDefinition("i2t_r5", 1, "image-to-text retrieval recall@5"),
    MetricDefinition("i2t_r10", 1, "image-to-text retrieval recall@10"),
    MetricDefinition("t2i_r1", 1, "text-to-image retrieval recall@1"),
    MetricDefinition("t2i_r5", 1, "text-to-image retrieval recall@5"),
    MetricDefinition("t2i_r10", 1, "text-to-image retrieval recall@10"),
    MetricDefinition("mean_perturbation_linf", 1, "mean L-inf norm of (adversarial - clean) pixels",
                     higher_is_better=False),
]}


def _check_scores(scores: torch.Tensor, labels: torch.Tensor) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {tuple(scores.shape)}")
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels must be (N,) with N={scores.shape[0]}, got shape {tuple(labels.shape)}")


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose true label is among the k highest scores. scores (N, C), labels (N,)."""
    _check_scores(scores, labels)
    if scores.shape[0] == 0:
        raise ValueError("topk_accuracy of an empty set is undefined")
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (N, k)
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def clean_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy on clean inputs (alias of ``topk_accuracy(k=1)`` with its own definition)."""
    return topk_accuracy(scores, labels, 1)


def recall_at_k(sim: torch.Tensor, positives: list[set[int]] | torch.Tensor, k: int) -> float:
    """Retrieval recall@k: fraction of queries (rows of ``sim``) with a positive among the top k.

    ``sim`` is (Q, G) similarity of queries to gallery items; ``positives[q]`` is the set of gallery
    indices that match query q (a (Q,) tensor means exactly one positive per query).
    """
    if sim.ndim != 2:
        raise ValueError(f"sim must be (Q, G), got shape {tuple(sim.shape)}")
    if isinstance(positives, torch.Tensor):
        positives = [{int(p)} for p in positives]
    if len(positives) != sim.shape[0]:
        raise ValueError(f"need one positive set per query: {sim.shape[0]} queries, {len(positives)} sets")
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices.tolist()
    return sum(bool(set(row) & pos) for row, pos in zip(top, positives, strict=True)) / max(1, len(positives))


def retrieval_recalls(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: list[int] | torch.Tensor,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Image-to-text and text-to-image recall@k for images (N, D) and captions (M, D).

    ``text_to_image[j]`` is the index of the image that caption j describes (several captions
    may describe one image, as in COCO/Flickr). Embeddings are L2-normalised here.
    """
    t2i = torch.as_tensor(text_to_image, dtype=torch.long)
    if t2i.shape[0] != text_emb.shape[0]:
        raise ValueError(f"text_to_image has {t2i.shape[0]} entries for {text_emb.shape[0]} captions")
    img = torch.nn.functional.normalize(image_emb.float(), dim=-1)
    txt = torch.nn.functional.normalize(text_emb.float(), dim=-1)
    sim = img @ txt.T  # (N, M)
    img_pos: list[set[int]] = [set() for _ in range(img.shape[0])]
    for j, i in enumerate(t2i.tolist()):
        img_pos[i].add(j)
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = recall_at_k(sim, img_pos, k)
        out[f"t2i_r{k}"] = recall_at_k(sim.T, t2i, k)
    return out


def attack_success_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor,
                        targets: torch.Tensor | None = None) -> float:
    """Attack success rate.

    Untargeted (``targets`` is None): among samples the model got right when clean, the fraction
    whose adversarial prediction is wrong (samples already wrong are not counted as successes).
    Targeted: the fraction of samples whose adversarial prediction equals their target, over
    samples whose true label is not already the target.
    """
    if not (clean_pred.shape == adv_pred.shape == labels.shape):
        raise ValueError("clean_pred, adv_pred and labels must have the same shape, got "
                         f"{tuple(clean_pred.shape)}, {tuple(adv_pred.shape)}, {tuple(labels.shape)}")
    if targets is None:
        eligible = clean_pred == labels
        hits = adv_pred != labels
    else:
        if targets.shape != labels.shape:
            raise ValueError(f"targets must have shape {tuple(labels.shape)}, got {tuple(targets.shape)}")
        eligible = targets != labels
        hits = adv_pred == targets
    n = int(eligible.sum())
    return float((hits & eligible).sum()) / n if n else 0.0
