"""LID detector of poisoned samples: the maximum-likelihood estimate of local intrinsic dimensionality.

Papers: Amsaleg, Chelly, Furon, Girard, Houle, Kawarabayashi and Nett, "Estimating Local Intrinsic
Dimensionality", KDD 2015 (the MLE / Hill estimator used here); Houle, "Local Intrinsic
Dimensionality I: an extreme-value-theoretic foundation for similarity applications", SISAP
2017; used as a backdoor-sample detector by Huang, Erfani, Li, Ma and Bailey, "Detecting Backdoor
Samples in Contrastive Language Image Pretraining", ICLR 2025.

Threat model: a defender holding a possibly poisoned training set and the model trained on it
ranks its samples by suspicion, with no clean reference data.

Objective in words: the LID of ``x`` is the rate at which the number of neighbours grows with the
radius (``d`` for points spread over a d-dimensional manifold). From the distances
``r_1 <= ... <= r_k`` to the k nearest other points, the MLE is

    LID(x) = -( (1/k) * sum_{i=1..k} ln(r_i / r_k) )^(-1).

Huang et al. use the estimate itself as the score (a backdoor sample's neighbourhood of clean
points far away looks high-dimensional: its distances are nearly equal). Higher = more suspicious.

Defaults: k = 16, batches of 1,024 (Huang et al.); decision at the top 1% (see :mod:`.base`).
Departures: distances are floored at 1e-12 x the largest distance, and the mean log-ratio at
-1e-12 (all k distances equal), so the estimate stays finite (<= 1e12); Huang et al.'s code adds
1e-4 inside the logarithm instead.
"""

from __future__ import annotations

import torch

from ...registry import register
from ._floor import floor_distances
from .base import OutlierDetector
from .neighbors import KNNGraph


def lid_mle(graph: KNNGraph) -> torch.Tensor:
    """(Q,) MLE of the local intrinsic dimensionality of each query from its k neighbour distances."""
    r = floor_distances(graph.distances)  # (Q, k), ascending
    mean_log = torch.log(r / r[:, -1:]).mean(dim=1)  # (Q,) <= 0
    return -1.0 / mean_log.clamp_max(-1e-12)


@register("detectors", "lid")
class LIDDetector(OutlierDetector):
    """LID (MLE) as the score. Arguments as :class:`~.base.OutlierDetector`."""

    name = "lid"
    paper = "Amsaleg et al., KDD 2015; Huang et al., ICLR 2025"

    def scores_from_graph(self, graph: KNNGraph) -> torch.Tensor:
        return lid_mle(graph)


__all__ = ["LIDDetector", "lid_mle"]
