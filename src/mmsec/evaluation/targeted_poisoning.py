"""Text-to-image retrieval success of multimodal targeted poisoning (Yang et al., ICML 2023), and clean utility.

The paper measures its three attacks by text-to-image retrieval: the *test* captions of the text
class A are the queries, a gallery of test images is ranked by cosine similarity, and the targets are
the one target image ``x*`` (Attack I) or every test image of the image class B (Attacks II, III):

* MinRank of a query: the rank of its best-ranked target (1 = top; the authors' code counts from 0);
  reported as the mean (and median) over the queries -- lower is a stronger attack;
* Hit@K: the fraction of queries with a target among their top K (MinRank <= K).

Beside them, as in the authors' evaluation, the same numbers for as many *random* test captions
(here: of classes other than A and B, seeded) on the same model -- the floor a Hit@K is read
against -- and the clean retrieval utility (zoo protocol, R@1 both ways; a caption counts as correct
when its text equals the image's own) to compare with an unpoisoned control model.

:func:`poisoning_retrieval_report` runs all of it on shapes-world test batches for an attack's goals.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_pixels
from ..data.shapes import ShapesBatch, ShapesWorld
from ..models.base import require_contrastive
from ..models.zeroshot import embed_images, embed_texts

KS = (1, 5, 10)  # the paper's table columns (the authors' code also computes 20, 30, 50)
HIT_DEFINITION = ("fraction of text queries of the text class whose top-K text-to-image retrieval (cosine) among the "
                  "test gallery contains a target (the target image, or a test image of the image class)")


@dataclass
class RetrievalPoisonScore:
    """Hit@K and MinRank of one goal's queries (and of random queries) on one model.

    Attributes:
        goal: ``(text class name, target name)``: the image class, or ``"target image"``.
        hit: ``{K: Hit@K}`` of the text class's test captions.
        mean_min_rank, median_min_rank: MinRank over those queries (1 = top).
        random_hit, random_mean_min_rank: the same for random captions of other classes.
        n_queries, n_gallery, n_targets: sizes.
    """

    goal: tuple[str, str]
    hit: dict[int, float]
    mean_min_rank: float
    median_min_rank: float
    random_hit: dict[int, float]
    random_mean_min_rank: float
    n_queries: int
    n_gallery: int
    n_targets: int
    extras: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def min_ranks(query_emb: torch.Tensor, gallery_emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q,) 1-based rank of the best-ranked target in each query's ranking of the gallery.

    ``query_emb`` (Q, D), ``gallery_emb`` (G, D) (normalised here), ``targets`` (T,) gallery indices.
    Ties count against the target (rank = 1 + number of gallery items scoring strictly higher).
    """
    if targets.numel() == 0:
        raise ValueError("targets is empty: no gallery image is a target")
    sim = F.normalize(query_emb.float(), dim=-1) @ F.normalize(gallery_emb.float(), dim=-1).T  # (Q, G)
    best = sim[:, targets].max(1).values  # (Q,)
    return 1 + (sim > best[:, None]).sum(1)


def hit_at_k(ranks: torch.Tensor, k: int) -> float:
    """Fraction of queries whose MinRank is <= k."""
    return (ranks <= k).float().mean().item()


@torch.no_grad()
def retrieval_poison_score(model: nn.Module, gallery: torch.Tensor, targets: torch.Tensor, queries: list[str],
                           random_queries: list[str], goal: tuple[str, str],
                           ks: Sequence[int] = KS) -> RetrievalPoisonScore:
    """Hit@K / MinRank of ``queries`` (and ``random_queries``) for the ``targets`` among ``gallery`` (G, 3, H, W)."""
    require_contrastive(model, "retrieval_poison_score")
    check_pixels(gallery, "gallery")
    if not queries:
        raise ValueError(f"no query caption of the text class {goal[0]!r} in the test data")
    img = embed_images(model, gallery)  # (G, D)
    ranks = min_ranks(embed_texts(model, queries), img, targets)  # (Q,)
    rand = min_ranks(embed_texts(model, random_queries), img, targets) if random_queries else None
    return RetrievalPoisonScore(
        goal, {k: hit_at_k(ranks, k) for k in ks}, ranks.float().mean().item(), ranks.float().median().item(),
        {} if rand is None else {k: hit_at_k(rand, k) for k in ks},
        float("nan") if rand is None else rand.float().mean().item(), len(queries), gallery.shape[0],
        targets.numel())


def class_captions(batch: ShapesBatch, label: int) -> list[str]:
    """Every distinct caption of the scenes of class ``label`` in ``batch`` (the test queries ``T^A_test``)."""
    return list(dict.fromkeys(c for caps, lab in zip(batch.captions, batch.labels.tolist(), strict=True)
                              if lab == label for c in caps))


def random_captions(batch: ShapesBatch, exclude: Sequence[int], n: int, seed: int = 0) -> list[str]:
    """``n`` distinct captions drawn (seeded) from the scenes of ``batch`` whose class is not in ``exclude``."""
    pool = list(dict.fromkeys(c for caps, lab in zip(batch.captions, batch.labels.tolist(), strict=True)
                              if lab not in set(exclude) for c in caps))
    return random.Random(seed).sample(pool, min(n, len(pool)))


@torch.no_grad()
def poisoning_retrieval_report(model: nn.Module, test: ShapesBatch, goals: Sequence[tuple[int, int | None]],
                               class_names: Sequence[str], target_index: int | None = None,
                               utility_world: ShapesWorld | None = None, utility_n: int = 1000,
                               ks: Sequence[int] = KS, seed: int = 0) -> dict:
    """All the paper's numbers for one model on the test scenes ``test`` (the gallery).

    Args:
        goals: ``[(text label A, image label B), ...]``; for Attack I one goal ``(A, None)`` with
            ``target_index``, the gallery index of ``x*`` in ``test``.
        utility_world / utility_n: clean retrieval R@1 (zoo protocol) on that many test scenes
            (default: single-object 32 px scenes, the zoo card's world).
    Returns ``{"goals": [RetrievalPoisonScore.to_dict(), ...], "mean_hit": {K: mean over goals},
    "mean_min_rank": ..., "i2t_r1": ..., "t2i_r1": ...}``.
    """
    from ..zoo.evaluate import retrieval

    require_contrastive(model, "poisoning_retrieval_report")
    gallery, labels = test.pixels(), test.labels
    scores = []
    for i, (a, b) in enumerate(goals):
        if b is None:
            if target_index is None or not 0 <= target_index < len(labels):
                raise ValueError(f"Attack I needs target_index, the gallery index of the target image in test "
                                 f"(0 .. {len(labels) - 1}), got {target_index!r}")
            targets, name, excl = torch.tensor([target_index]), "target image", [a, int(labels[target_index])]
        else:
            targets, name, excl = (labels == b).nonzero().flatten(), class_names[b], [a, b]
            if targets.numel() == 0:
                raise ValueError(f"no test image of the image class {class_names[b]!r} in the gallery")
        queries = class_captions(test, a)
        score = retrieval_poison_score(model, gallery, targets, queries,
                                       random_captions(test, excl, len(queries), seed + i), (class_names[a], name), ks)
        scores.append(score)
    world = utility_world or ShapesWorld(image_size=int(gallery.shape[-1]))
    util = retrieval(model, world, utility_n)
    return {"goals": [s.to_dict() for s in scores],
            "mean_hit": {k: sum(s.hit[k] for s in scores) / len(scores) for k in ks},
            "mean_random_hit": {k: sum(s.random_hit.get(k, 0.0) for s in scores) / len(scores) for k in ks},
            "mean_min_rank": sum(s.mean_min_rank for s in scores) / len(scores),
            "i2t_r1": util["i2t_r1"], "t2i_r1": util["t2i_r1"]}


__all__ = ["HIT_DEFINITION", "KS", "RetrievalPoisonScore", "class_captions", "hit_at_k", "min_ranks",
           "poisoning_retrieval_report", "random_captions", "retrieval_poison_score"]
