"""Adversarial (evasion) attacks on images: norm-bounded perturbations against an objective."""

from .apgd import APGD
from .ensemble import RobustEnsemble
from .fgsm import FGSM
from .noise import UniformNoise
from .pgd import PGD
from .square import SquareAttack

__all__ = ["APGD", "FGSM", "PGD", "RobustEnsemble", "SquareAttack", "UniformNoise"]
