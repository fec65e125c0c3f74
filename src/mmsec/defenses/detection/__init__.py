"""Detectors of poisoned training samples.

* Local outlier scores on embeddings (Huang et al., ICLR 2025): each detector is called on embeddings
  ``(N, D)`` and returns an :class:`OutlierResult` (scores, threshold, decisions).
* PSBD (Li et al., CVPR 2025), on a classifier: ``PSBD()(model, images, validation)`` returns a
  :class:`PSBDResult` with the same scores / threshold / decisions (higher score = more suspicious).

:mod:`mmsec.evaluation.detection` scores either against the ground truth (a boolean mask of the poisoned
samples). Importing this package registers them (kind ``detectors``: ``kdist``, ``slof``, ``lid``, ``dao``,
``psbd``); ``DETECTORS`` is the same table as a read-only mapping from registered name to class.
"""

from types import MappingProxyType

from ... import registry
from .base import BACKENDS, PAPER_BATCH, PAPER_K, OutlierDetector, OutlierResult
from .dao import DAODetector, log_dao_scores
from .k_distance import KDistanceDetector, k_distance_scores
from .lid import LIDDetector, lid_mle
from .neighbors import ExactKNN, FaissHNSW, KNNGraph, auto_backend
from .psbd import PSBD, PSBDResult
from .slof import SLOFDetector, slof_scores

DETECTORS = MappingProxyType({e.name: e.factory for e in registry.entries("detectors")})

__all__ = ["BACKENDS", "DAODetector", "DETECTORS", "ExactKNN", "FaissHNSW", "KDistanceDetector", "KNNGraph",
           "LIDDetector", "OutlierDetector", "OutlierResult", "PAPER_BATCH", "PAPER_K", "PSBD", "PSBDResult",
           "SLOFDetector", "auto_backend", "k_distance_scores", "lid_mle", "log_dao_scores", "slof_scores"]
