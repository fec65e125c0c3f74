"""Attacks that perturb both modalities of image-text pairs (Co-Attack; SGA and AdvCLIP to come)."""

from .co_attack import MODES, CoAttack, MultimodalAttackResult

__all__ = ["MODES", "CoAttack", "MultimodalAttackResult"]
