"""Defenses: hardening defenses that return a new model (adversarial fine-tuning; backdoor clean-ups),
and detectors of poisoned training samples (``defenses.detection``).

Importing this package registers the built-in defenses (``mmsec.registry.entries("defenses")``).
"""

from ..models.towers import image_tower_parameters, trainable_copy  # kept importable from here
from . import adversarial, backdoor, detection
from .adversarial import FARE, VILLA, AdvPT, PromptTunedCLIP, TeCoA, embedding_drift
from .backdoor import CleanFineTune
from .base import DefenseResult, HardeningDefense

__all__ = ["FARE", "AdvPT", "CleanFineTune", "DefenseResult", "PromptTunedCLIP", "HardeningDefense", "TeCoA", "VILLA", "adversarial", "backdoor", "detection", "embedding_drift",
           "image_tower_parameters", "trainable_copy"]
