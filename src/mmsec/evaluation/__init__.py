"""Robustness evaluation: worst-case robust accuracy under an attack ensemble, gradient-masking checks,
image-text matching accuracy of fusion models (clean and under embedding-space attack), pair
retrieval and attack success rate, and downstream-agnostic evaluation (post-hoc linear probes,
zero-shot, retrieval) of universal attacks."""

from ..attacks.adversarial.autoattack import (
           PRESETS,
           EnsembleMember,
           RobustAccuracy,
           ensemble,
           robust_accuracy,
)
from .downstream import DownstreamSuite, LinearProbe, fit_linear_probe, fooling_rate, linear_probe_accuracy
from .encoder_backdoor import encoder_probe_scores
from .itm import ITMPairs, itm_accuracy, itm_embedding_robustness, shapes_itm_pairs
from .pair_retrieval import attack_success, pair_retrieval
from .robustness import CHECKS, GradientMaskingReport, MaskingCheck, gradient_masking_checks

__all__ = ["CHECKS", "PRESETS", "DownstreamSuite", "EnsembleMember", "GradientMaskingReport", "ITMPairs",
           "LinearProbe", "MaskingCheck", "RobustAccuracy", "attack_success", "encoder_probe_scores", "ensemble", "fit_linear_probe",
           "fooling_rate", "gradient_masking_checks", "itm_accuracy", "itm_embedding_robustness",
           "linear_probe_accuracy", "pair_retrieval", "robust_accuracy", "shapes_itm_pairs"]
