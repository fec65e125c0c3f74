"""DAO (dimensionality-aware outlier) detector of poisoned samples.

Papers: Anderberg, Bailey, Campello, Houle, Marques, Radovanović and Zimek, "Dimensionality-Aware
Outlier Detection: Theoretical and Experimental Analysis", SIAM SDM 2024 (arXiv 2401.05453); used
as a backdoor-sample detector by Huang, Erfani, Li, Ma and Bailey, "Detecting Backdoor Samples in
Contrastive Language Image Pretraining", ICLR 2025 (their best detector).

Threat model: a defender holding a possibly poisoned training set and the model trained on it
ranks its samples by suspicion, with no clean reference data.

Objective in words: DAO estimates the expected ratio of the local density at a random close
neighbour ``o`` to the density at the query ``q``. With local intrinsic dimensionality, density
scales with ``d_k^(-LID)``, so where SLOF averages ``d_k(q) / d_k(o)`` DAO raises each ratio to
the neighbour's estimated LID:

    DAO(q) = (1/k) * sum over the k nearest neighbours o of q of (d_k(q) / d_k(o)) ** LID(o),

with ``LID(o)`` the MLE of :mod:`.lid` from ``o``'s own k neighbours. Higher = more suspicious.

Defaults: k = 16 for both the neighbourhood and the LID estimate, batches of 1,024 (Huang et
al.); decision at the top 1% (see :mod:`.base`).

Departures:
* The score returned is ``log DAO`` (computed by log-sum-exp): the same ranking, AUROC and
  decisions, without overflow of ``ratio ** LID`` in high dimension. The threshold is in the same
  log units.
* Huang et al.'s public code averages ``LID(o) * log(d_k(q) / d_k(o))``, i.e. the log of the
  *geometric* mean of the powered ratios; we follow the DAO paper's arithmetic mean.
* Zero distances are floored as in :mod:`.lid` / :mod:`.slof`.
"""

from __future__ import annotations

import math

import torch

from ...registry import register
from ._floor import floor_distances
from .base import OutlierDetector
from .lid import lid_mle
from .neighbors import KNNGraph


def log_dao_scores(graph: KNNGraph, k_distances: torch.Tensor | None = None,
                   lids: torch.Tensor | None = None) -> torch.Tensor:
    """(Q,) log DAO of the queries. ``k_distances`` and ``lids`` (N,) of every base point; default:
    from ``graph`` itself, which must then cover every base point (``rows = 0..N-1``)."""
    if (k_distances is None or lids is None) and not torch.equal(graph.rows, torch.arange(graph.rows.numel())):
        raise ValueError("log_dao_scores needs k_distances= and lids= unless the graph's queries are all base "
                         "points in order")
    kd_all = floor_distances(graph.distances[:, -1] if k_distances is None else k_distances)  # (N,)
    lid_all = lid_mle(graph) if lids is None else lids.double()  # (N,)
    kd_q = floor_distances(graph.distances[:, -1])  # (Q,)
    log_ratio = torch.log(kd_q)[:, None] - torch.log(kd_all[graph.indices])  # (Q, k)
    terms = lid_all[graph.indices] * log_ratio  # (Q, k) log of each powered ratio
    return torch.logsumexp(terms, dim=1) - math.log(graph.k)


@register("detectors", "dao")
class DAODetector(OutlierDetector):
    """DAO, scores in log units. Arguments as :class:`~.base.OutlierDetector`."""

    name = "dao"
    paper = "Anderberg et al., SDM 2024; Huang et al., ICLR 2025"

    def scores_from_graph(self, graph: KNNGraph) -> torch.Tensor:
        return log_dao_scores(graph)


__all__ = ["DAODetector", "log_dao_scores"]
