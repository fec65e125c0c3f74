"""Defenses: hardening defenses that return a new model (adversarial fine-tuning), and later detectors.

Importing this package registers the built-in defenses (``mmsec.registry.entries("defenses")``).
"""

from . import adversarial
from .adversarial import FARE, VILLA, AdvPT, PromptTunedCLIP, TeCoA, embedding_drift
from .base import DefenseResult, HardeningDefense, image_tower_parameters, trainable_copy

__all__ = ["FARE", "AdvPT", "DefenseResult", "PromptTunedCLIP", "HardeningDefense", "TeCoA", "VILLA", "adversarial", "embedding_drift",
           "image_tower_parameters", "trainable_copy"]
