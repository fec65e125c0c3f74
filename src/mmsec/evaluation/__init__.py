"""Robustness evaluation: worst-case robust accuracy under an attack ensemble, gradient-masking checks,
and image-text matching accuracy of fusion models (clean and under embedding-space attack)."""

from .itm import ITMPairs, itm_accuracy, itm_embedding_robustness, shapes_itm_pairs
from .robustness import (
    CHECKS,
    PRESETS,
    EnsembleMember,
    GradientMaskingReport,
    MaskingCheck,
    RobustAccuracy,
    ensemble,
    gradient_masking_checks,
    robust_accuracy,
)

__all__ = ["CHECKS", "PRESETS", "EnsembleMember", "GradientMaskingReport", "ITMPairs", "MaskingCheck",
           "RobustAccuracy", "ensemble", "gradient_masking_checks", "itm_accuracy", "itm_embedding_robustness",
           "robust_accuracy", "shapes_itm_pairs"]
