"""Detectors of poisoned training samples by local outlier scores on embeddings (Huang et al., ICLR 2025).

Each detector is called on embeddings ``(N, D)`` and returns an :class:`OutlierResult` (scores,
threshold, decisions); :mod:`mmsec.evaluation.detection` scores them against a
:class:`~mmsec.attacks.backdoor.poisoning.PoisonRecord`'s ground truth.
"""

from .base import PAPER_BATCH, PAPER_K, OutlierDetector, OutlierResult
from .dao import DAODetector, log_dao_scores
from .k_distance import KDistanceDetector, k_distance_scores
from .lid import LIDDetector, lid_mle
from .neighbors import ExactKNN, FaissHNSW, KNNGraph, auto_backend
from .slof import SLOFDetector, slof_scores

DETECTORS = {"k_distance": KDistanceDetector, "slof": SLOFDetector, "lid": LIDDetector, "dao": DAODetector}

__all__ = ["DAODetector", "DETECTORS", "ExactKNN", "FaissHNSW", "KDistanceDetector", "KNNGraph", "LIDDetector",
           "OutlierDetector", "OutlierResult", "PAPER_BATCH", "PAPER_K", "SLOFDetector", "auto_backend",
           "k_distance_scores", "lid_mle", "log_dao_scores", "slof_scores"]
