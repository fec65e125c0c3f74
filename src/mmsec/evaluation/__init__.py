"""Robustness evaluation: worst-case robust accuracy under an attack ensemble, gradient-masking checks."""

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

__all__ = ["CHECKS", "PRESETS", "EnsembleMember", "GradientMaskingReport", "MaskingCheck", "RobustAccuracy",
           "ensemble", "gradient_masking_checks", "robust_accuracy"]
