"""Adversarial (evasion) attacks: norm-bounded perturbations of images against an objective, and of a
fusion model's input embeddings against its image-text matching head (FusedEmbeddingPGD)."""

from .apgd import APGD
from .embedding_base import EmbeddingAttack
from .ensemble import RobustEnsemble
from .fgsm import FGSM
from .fused_embedding import FusedEmbeddingPGD, FusedEmbeddingResult
from .noise import UniformNoise
from .pgd import PGD
from .square import SquareAttack

__all__ = ["APGD", "EmbeddingAttack", "FGSM", "FusedEmbeddingPGD", "FusedEmbeddingResult", "PGD", "RobustEnsemble", "SquareAttack", "UniformNoise"]
