"""Scoring a poisoned-sample detector against the ground truth: AUROC and TPR at a fixed FPR.

The ground truth is a boolean mask over the training set (``PoisonRecord.poisoned_mask()``);
scores are higher for samples the detector finds more suspicious.

* :func:`auroc` -- area under the ROC curve (probability that a random poisoned sample scores
  above a random clean one, ties counting one half), via scikit-learn.
* :func:`tpr_at_fpr` -- the largest true-positive rate over the ROC's thresholds whose
  false-positive rate is at most ``fpr`` (no interpolation between operating points: a
  threshold that reaches it exists), with that threshold.
* :func:`detection_report` -- both, plus counts, as a :class:`DetectionMetrics`.
* :func:`roc_points` -- the ROC curve itself as plain lists (the ``roc.json`` artifact that
  ``mmsec report`` plots), thinned to a bounded number of points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class DetectionMetrics:
    auroc: float
    tpr_at_fpr: float
    fpr_target: float
    fpr_achieved: float
    threshold: float
    n_poisoned: int
    n_clean: int

    def to_dict(self) -> dict:
        return asdict(self)


def _check(scores: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D (one score per sample), got shape {s.shape}")
    if m.ndim != 1 or m.shape[0] != s.shape[0]:
        raise ValueError(f"mask must be 1-D with one entry per score ({s.shape[0]}), got shape {m.shape}")
    if m.dtype != bool:
        raise TypeError(f"mask must be boolean (True = poisoned, e.g. PoisonRecord.poisoned_mask()), got {m.dtype}")
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise TypeError(f"scores must be real numbers, got dtype {s.dtype}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores hold {int((~np.isfinite(s)).sum())} NaN or infinite values")
    if m.all() or not m.any():
        raise ValueError(f"mask must hold both poisoned and clean samples, got {int(m.sum())} poisoned of {m.size}")
    return s.astype(np.float64), m


def auroc(scores: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (higher = poisoned) against ``mask`` (True = poisoned)."""
    from sklearn.metrics import roc_auc_score

    s, m = _check(scores, mask)
    return float(roc_auc_score(m, s))


def _roc(s: np.ndarray, m: np.ndarray):
    from sklearn.metrics import roc_curve

    return roc_curve(m, s, drop_intermediate=False)


def tpr_at_fpr(scores: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray,
               fpr: float = 0.01) -> tuple[float, float]:
    """(TPR, threshold): the best TPR among thresholds ``t`` (flag ``score >= t``) with FPR <= ``fpr``."""
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not math.isfinite(fpr) or not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be a false-positive rate in [0, 1], got {fpr!r}")
    s, m = _check(scores, mask)
    fprs, tprs, thr = _roc(s, m)
    ok = fprs <= fpr + 1e-12  # the first point (threshold +inf, FPR 0) always qualifies
    i = int(np.flatnonzero(ok)[np.argmax(tprs[ok])])
    return float(tprs[i]), float(thr[i])


def detection_report(scores: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray,
                     fpr: float = 0.01) -> DetectionMetrics:
    """AUROC and TPR at ``fpr`` (default 1%) of ``scores`` against ``mask``."""
    s, m = _check(scores, mask)
    tpr, thr = tpr_at_fpr(s, m, fpr)
    achieved = float(((s >= thr) & ~m).sum() / (~m).sum())
    return DetectionMetrics(auroc(s, m), tpr, float(fpr), achieved, thr, int(m.sum()), int((~m).sum()))


def roc_points(scores: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray, max_points: int = 200) -> dict:
    """The ROC curve of ``scores`` (higher = poisoned) against ``mask`` as JSON-ready lists: ``fpr`` and ``tpr``
    from (0, 0) to (1, 1) (scikit-learn's curve without its collinear points, thinned evenly to at most
    ``max_points``, ends kept), ``auroc`` (of all the scores, not of the thinned curve), ``n_positive``,
    ``n_negative``."""
    from sklearn.metrics import roc_curve

    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points must be an integer >= 2 (the curve's two ends), got {max_points!r}")
    s, m = _check(scores, mask)
    fprs, tprs, _ = roc_curve(m, s, drop_intermediate=True)
    if len(fprs) > max_points:
        keep = np.unique(np.linspace(0, len(fprs) - 1, max_points).round().astype(int))
        fprs, tprs = fprs[keep], tprs[keep]
    return {"fpr": [round(float(v), 5) for v in fprs], "tpr": [round(float(v), 5) for v in tprs],
            "auroc": auroc(s, m), "n_positive": int(m.sum()), "n_negative": int((~m).sum())}


__all__ = ["DetectionMetrics", "auroc", "detection_report", "roc_points", "tpr_at_fpr"]
