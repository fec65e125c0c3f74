"""Adversarial (evasion) attacks on images: norm-bounded perturbations against an objective."""

from .fgsm import FGSM
from .noise import UniformNoise
from .pgd import PGD

__all__ = ["FGSM", "PGD", "UniformNoise"]
