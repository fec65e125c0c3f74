"""k-distance detector of poisoned samples: the distance to the k-th nearest neighbour.

Paper: Huang, Erfani, Li, Ma and Bailey, "Detecting Backdoor Samples in Contrastive Language Image
Pretraining", ICLR 2025 (k-dist as their simplest local detector; the kNN outlier score of
Ramaswamy, Rastogi and Shim, SIGMOD 2000).

Threat model: a defender holding a possibly poisoned image-text training set and the CLIP model
trained on it ranks the training samples by suspicion, with no clean reference data.

Objective in words: in a random batch of 1,024 samples at a low poison rate, a backdoor sample's
k-th neighbour is most likely a clean sample far away (backdoor embeddings are locally sparse), so
``score(x) = d_k(x)``, the Euclidean distance to the k-th nearest other sample.

Defaults: k = 16, batches of 1,024 (Huang et al.); decision at the top 1% (see :mod:`.base`).
Departures: none in the score; the threshold rule is ours (the paper ranks without one).

Registered as ``kdist`` (kind ``detectors``). Example::

    emb = embed_images(poisoned_model, data.pixels)            # (N, D)
    res = KDistanceDetector()(emb)                             # OutlierResult
    res.scores, res.decisions, res.threshold
"""

from __future__ import annotations

import torch

from ...registry import register
from .base import OutlierDetector
from .neighbors import KNNGraph


def k_distance_scores(graph: KNNGraph) -> torch.Tensor:
    """(Q,) distance of each query to its k-th nearest neighbour."""
    return graph.distances[:, -1].double()


@register("detectors", "kdist")
class KDistanceDetector(OutlierDetector):
    """k-dist: ``score = d_k(x)``. Arguments as :class:`~.base.OutlierDetector`."""

    name = "kdist"
    paper = "Huang et al., ICLR 2025 (score: Ramaswamy, Rastogi, Shim, SIGMOD 2000)"

    def scores_from_graph(self, graph: KNNGraph) -> torch.Tensor:
        return k_distance_scores(graph)


__all__ = ["KDistanceDetector", "k_distance_scores"]
