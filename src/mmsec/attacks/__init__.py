"""Attacks: evasion (adversarial), text and image-text pair attacks, universal patches, backdoor
triggers; later poisoning, jailbreak and privacy attacks.

Importing this package registers the built-in attacks (``mmsec.registry.entries("attacks")``).
"""

from . import adversarial, backdoor, multimodal, text, universal
from .adversarial import FGSM, PGD, UniformNoise
from .base import EvasionAttack, EvasionResult
from .objectives import RetrievalObjective, ZeroShotObjective

__all__ = ["FGSM", "PGD", "EvasionAttack", "EvasionResult", "RetrievalObjective", "UniformNoise",
           "ZeroShotObjective", "adversarial", "backdoor", "multimodal", "text", "universal"]
