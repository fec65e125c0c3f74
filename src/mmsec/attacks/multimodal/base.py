"""Base of attacks on (image, caption) pairs of a vision-language model (Co-Attack, SGA).

``attack(model, pixels (B, 3, H, W), captions (B,), generator[, caption_sets]) ->
MultimodalAttackResult(adv_pixels, adv_texts, text, loss_trace, params)``; budgets: L-inf ``eps``
on pixels and ``max_words`` words per caption. A dual encoder is attacked through its towers, a
fusion model through its fused embedding.
"""

from __future__ import annotations

from typing import ClassVar

from ... import registry
from ...methods import Method

registry.declare_kind("pair_attacks", "attacks on (image, caption) pairs: attack(model, pixels, captions, generator) "
                      "-> MultimodalAttackResult", "mmsec.attacks.multimodal.base:PairAttack")


class PairAttack(Method):
    """Base of pair attacks; subclasses implement ``__call__``."""

    family: ClassVar[str | None] = "contrastive"  # a dual encoder, or a fusion model (which is one too)
    threat_model: ClassVar[str] = "white-box"


__all__ = ["PairAttack"]
