"""Defenses: hardening defenses that return a new model (adversarial fine-tuning; backdoor clean-ups),
pre-training defenses, repairs from one bug input, model-level backdoor detectors, and detectors of
poisoned training samples (``defenses.detection``). One base class per call contract, each its own
registry kind (:mod:`.base`, :mod:`.detection.base`).

Importing this package registers the built-in defenses (``mmsec.registry.entries("defenses")``,
``"pretraining_defenses"``, ``"repairs"``, ``"model_detectors"``, ``"detectors"``).
"""

from ..models.towers import image_tower_parameters, trainable_copy  # kept importable from here
from . import adversarial, backdoor, detection, diffusion
from .adversarial import FARE, VILLA, AdvPT, PromptTunedCLIP, TeCoA, embedding_drift
from .backdoor import CleanFineTune
from .base import DefenseResult, HardeningDefense, ModelDetector, PretrainingDefense, RepairDefense

__all__ = ["FARE", "AdvPT", "CleanFineTune", "DefenseResult", "HardeningDefense", "ModelDetector",
           "PretrainingDefense", "PromptTunedCLIP", "RepairDefense", "TeCoA", "VILLA", "adversarial", "backdoor",
           "detection", "diffusion", "embedding_drift", "image_tower_parameters", "trainable_copy"]
