"""Shared frame of the local-outlier detectors of poisoned training samples (k-dist, SLOF, LID, DAO).

Huang, Erfani, Li, Ma and Bailey, "Detecting Backdoor Samples in Contrastive Language Image
Pretraining", ICLR 2025: backdoor pairs are *locally sparse* in the embedding space of the CLIP
model trained on them, so classic local outlier scores computed on the training set's image
embeddings find them. Threat model: the defender holds the (possibly poisoned) training set and
the model trained on it, and ranks the training samples by suspicion (to remove the top ones and
retrain); no clean reference set, no knowledge of the trigger or target.

A detector is configured in ``__init__`` and called on embeddings ``(N, D)``:

* neighbourhoods: ``batch_size=1024`` (the paper's setting: the training set is shuffled into
  random batches of 1,024 and each sample's neighbours are the other samples of its batch), or
  ``batch_size=None``: neighbours from the whole set through a kNN backend named by ``backend``
  (exact torch search for small sets, faiss HNSW for large ones: :mod:`.neighbors`); a backend
  with settings of its own is used directly, ``det.decide(det.scores_from_graph(FaissHNSW(m=64).knn(x, det.k)))``.
  Euclidean distance on the embeddings as given (the paper's code uses the un-normalised image features).
* score: a subclass's :meth:`scores_from_graph`, higher = more suspicious.
* decision: ``threshold`` if given, else the ``(1 - flag_fraction)`` quantile of the scores
  (``flag_fraction=0.01``: flag the top 1%, the defender's removal budget; the paper ranks and
  removes a fixed fraction rather than stating a threshold). The result states which.

Inputs are never modified; numpy arrays are accepted and read without a copy.

Each detector is registered (kind ``detectors``: ``kdist``, ``slof``, ``lid``, ``dao``) and built
from a spec as any method: ``build("detectors", {"name": "dao", "params": {"k": 16}})``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ... import registry
from ...methods import Method
from .neighbors import ExactKNN, KNNGraph, check_k, check_points, resolve_backend

PAPER_K = 16  # Huang et al.'s detectors (their README example: DAODetector(k=16))
PAPER_BATCH = 1024  # random batches of 1,024 training samples (their section 4 / appendix)
BACKENDS = ("auto", "exact", "faiss")

registry.declare_kind("detectors", "detectors of poisoned training samples: detector(embeddings (N, D)) -> "
                      "OutlierResult(scores, threshold, decisions); family classifier (PSBD): "
                      "detector(model, images, validation) -> a result with the same fields",
                      "mmsec.defenses.detection.base:OutlierDetector")


@dataclass
class OutlierResult:
    """Scores of one detector on one set of embeddings.

    Attributes:
        scores: (N,) float64, higher = more likely poisoned.
        threshold: the score at or above which a sample is flagged.
        decisions: (N,) bool, ``scores >= threshold``.
        threshold_rule: how the threshold was chosen (``"given"`` or ``"top 1.00%"``).
        params: the detector's registered name (``detector``) and settings (k, batch size, backend, ...).
        seconds: wall time of the neighbour search and scoring.
    """

    scores: torch.Tensor
    threshold: float
    decisions: torch.Tensor
    threshold_rule: str
    params: dict[str, Any]
    seconds: float


class OutlierDetector(Method):
    """Base class: neighbourhoods, the threshold and input checks; subclasses define the score.

    Args:
        k: neighbours per sample (default 16, Huang et al.).
        batch_size: size of the random batches whose members are each other's neighbourhoods
            (default 1024, Huang et al.); None: the whole set.
        backend: ``"auto"`` (exact up to 50,000 points, faiss HNSW above), ``"exact"`` or
            ``"faiss"`` (:class:`ExactKNN` / :class:`FaissHNSW` with their defaults). Used when
            ``batch_size`` is None (batches of 1,024 are always searched exactly).
        threshold: flag scores ``>= threshold``; None: flag the top ``flag_fraction``.
        flag_fraction: fraction flagged when ``threshold`` is None (default 0.01).
        seed: seed of the random batch partition.
    """

    name = "outlier"
    family = None  # works on embeddings, whichever model made them
    paper = "Huang et al., ICLR 2025"

    def __init__(self, k: int = PAPER_K, batch_size: int | None = PAPER_BATCH,
                 backend: str = "auto", threshold: float | None = None,
                 flag_fraction: float = 0.01, seed: int = 0) -> None:
        self.k = check_k(k, None)
        if batch_size is not None:
            batch_size = check_k(batch_size, None, "batch_size")
            if batch_size <= self.k:
                raise ValueError(f"batch_size={batch_size} must exceed k={self.k} (a batch holds each sample's "
                                 "k neighbours besides itself)")
        self.batch_size = batch_size
        if not isinstance(backend, str) or backend not in BACKENDS:
            hint = (" (a backend object cannot be stored in a config: pass its name, or search with it directly: "
                    "det.decide(det.scores_from_graph(backend.knn(x, det.k))))" if not isinstance(backend, str) else "")
            raise ValueError(f"backend must be 'auto', 'exact' or 'faiss', got {backend!r}{hint}")
        self.backend = backend
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
        self.threshold = None if threshold is None else float(threshold)
        if isinstance(flag_fraction, bool) or not isinstance(flag_fraction, (int, float)) \
                or not 0 < flag_fraction < 1:
            raise ValueError(f"flag_fraction must be in (0, 1) (fraction of samples flagged), got {flag_fraction!r}")
        self.flag_fraction = float(flag_fraction)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed

    def scores_from_graph(self, graph: KNNGraph) -> torch.Tensor:
        """(N,) scores from the kNN graph of all N points (``graph.rows`` = 0..N-1)."""
        raise NotImplementedError

    def batches(self, n: int) -> list[torch.Tensor]:
        """The random partition into batches: ``ceil(n / batch_size)`` near-equal parts (so no
        remainder batch is smaller than ``k + 1``); one batch of everything when ``batch_size`` is None."""
        if self.batch_size is None or n <= self.batch_size:
            return [torch.arange(n)]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        return list(torch.tensor_split(perm, math.ceil(n / self.batch_size)))

    def __call__(self, embeddings: torch.Tensor | np.ndarray) -> OutlierResult:
        points = check_points(embeddings, "embeddings")
        n = points.shape[0]
        check_k(self.k, n)
        t0 = time.perf_counter()
        scores = torch.empty(n, dtype=torch.float64)
        parts = self.batches(n)
        if self.batch_size is not None and len(parts) > 1 and min(len(p) for p in parts) <= self.k:
            raise ValueError(f"k={self.k} is too large for batches of {min(len(p) for p in parts)} points")
        for part in parts:
            sub = points[part] if len(parts) > 1 else points  # (n_b, D), a copy only when batching
            backend = ExactKNN() if self.batch_size is not None else resolve_backend(self.backend, sub.shape[0])
            graph = backend.knn(sub, self.k)
            scores[part] = self.scores_from_graph(graph).double()
        seconds = time.perf_counter() - t0
        return self.decide(scores, seconds)

    def decide(self, scores: torch.Tensor, seconds: float = 0.0) -> OutlierResult:
        if self.threshold is not None:
            thr, rule = self.threshold, "given"
        else:
            # the (1 - f) quantile: ~f * N samples flagged (ties at the threshold are all flagged)
            thr = float(torch.quantile(scores, 1 - self.flag_fraction, interpolation="higher")) \
                if scores.numel() <= 16_000_000 else float(np.quantile(scores.numpy(), 1 - self.flag_fraction,
                                                                        method="higher"))
            rule = f"top {100 * self.flag_fraction:.2f}%"
        return OutlierResult(scores, thr, scores >= thr, rule, {"detector": self.name, **self.params()}, seconds)


__all__ = ["BACKENDS", "PAPER_BATCH", "PAPER_K", "OutlierDetector", "OutlierResult"]
