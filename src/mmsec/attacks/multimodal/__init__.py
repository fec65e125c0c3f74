"""Attacks that perturb both modalities of image-text pairs (Co-Attack, SGA); AdvCLIP's universal patch is in
:mod:`mmsec.attacks.universal`."""

from .co_attack import MODES, CoAttack, MultimodalAttackResult
from .sga import SGA, SGAResult

__all__ = ["MODES", "CoAttack", "MultimodalAttackResult", "SGA", "SGAResult"]
