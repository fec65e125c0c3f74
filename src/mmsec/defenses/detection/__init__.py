"""Detectors of poisoned training samples by local outlier scores on embeddings (Huang et al., ICLR 2025).

Each detector is called on embeddings ``(N, D)`` and returns an :class:`OutlierResult` (scores,
threshold, decisions); :mod:`mmsec.evaluation.detection` scores them against a
:class:`~mmsec.attacks.backdoor.poisoning.PoisonRecord`'s ground truth. Importing this package
registers them (kind ``detectors``: ``kdist``, ``slof``, ``lid``, ``dao``); ``DETECTORS`` is the same
table as a read-only mapping from registered name to class.
"""

from types import MappingProxyType

from ... import registry
from .base import BACKENDS, PAPER_BATCH, PAPER_K, OutlierDetector, OutlierResult
from .dao import DAODetector, log_dao_scores
from .k_distance import KDistanceDetector, k_distance_scores
from .lid import LIDDetector, lid_mle
from .neighbors import ExactKNN, FaissHNSW, KNNGraph, auto_backend
from .slof import SLOFDetector, slof_scores

DETECTORS = MappingProxyType({e.name: e.factory for e in registry.entries("detectors")})

__all__ = ["BACKENDS", "DAODetector", "DETECTORS", "ExactKNN", "FaissHNSW", "KDistanceDetector", "KNNGraph",
           "LIDDetector", "OutlierDetector", "OutlierResult", "PAPER_BATCH", "PAPER_K", "SLOFDetector", "auto_backend",
           "k_distance_scores", "lid_mle", "log_dao_scores", "slof_scores"]
