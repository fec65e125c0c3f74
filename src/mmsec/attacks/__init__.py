"""Attacks: evasion (adversarial), text and image-text pair attacks, universal patches; later backdoor,
jailbreak and privacy attacks.

Importing this package registers the built-in attacks (``mmsec.registry.entries("attacks")``).
"""

from . import adversarial, multimodal, text, universal
from .adversarial import FGSM, PGD, UniformNoise
from .base import EvasionAttack, EvasionResult
from .objectives import RetrievalObjective, ZeroShotObjective

__all__ = ["FGSM", "PGD", "EvasionAttack", "EvasionResult", "RetrievalObjective", "UniformNoise",
           "ZeroShotObjective", "adversarial", "multimodal", "text", "universal"]
