"""Simplified LOF (SLOF) detector of poisoned samples.

Papers: Schubert, Zimek and Kriegel, "Local outlier detection reconsidered: a generalized view on
locality with applications to spatial, video, and network outlier detection", Data Mining and
Knowledge Discovery 28, 2014 (Simplified-LOF); used as a backdoor-sample detector by Huang,
Erfani, Li, Ma and Bailey, "Detecting Backdoor Samples in Contrastive Language Image
Pretraining", ICLR 2025.

Threat model: a defender holding a possibly poisoned training set and the model trained on it
ranks its samples by suspicion, with no clean reference data.

Objective in words: LOF compares a point's local density with its neighbours'; Simplified-LOF
drops LOF's reachability distance and takes the density of ``x`` as ``1 / d_k(x)``, so

    SLOF(x) = mean over the k nearest neighbours o of x of  d_k(x) / d_k(o),

~1 inside a homogeneous region, > 1 for a point sparser than its neighbourhood.

Defaults: k = 16, batches of 1,024 (Huang et al.); decision at the top 1% (see :mod:`.base`).
Departures: zero k-distances (more than k exact duplicates) are floored at 1e-12 x the largest
distance so the ratio stays finite.
"""

from __future__ import annotations

import torch

from ...registry import register
from ._floor import floor_distances
from .base import OutlierDetector
from .neighbors import KNNGraph


def slof_scores(graph: KNNGraph, k_distances: torch.Tensor | None = None) -> torch.Tensor:
    """(Q,) SLOF of the queries. ``k_distances`` (N,): the k-distance of every base point; default:
    read from ``graph`` itself, which must then cover every base point (``rows = 0..N-1``)."""
    kd_all = graph.distances[:, -1] if k_distances is None else k_distances
    if k_distances is None and not torch.equal(graph.rows, torch.arange(graph.rows.numel())):
        raise ValueError("slof_scores needs k_distances= unless the graph's queries are all base points in order")
    kd_all = floor_distances(kd_all)  # (N,)
    kd_q = floor_distances(graph.distances[:, -1])  # (Q,)
    return (kd_q[:, None] / kd_all[graph.indices]).mean(dim=1)  # (Q,)


@register("detectors", "slof")
class SLOFDetector(OutlierDetector):
    """Simplified LOF. Arguments as :class:`~.base.OutlierDetector`."""

    name = "slof"
    paper = "Schubert, Zimek, Kriegel, DMKD 2014; Huang et al., ICLR 2025"

    def scores_from_graph(self, graph: KNNGraph) -> torch.Tensor:
        return slof_scores(graph)


__all__ = ["SLOFDetector", "slof_scores"]
