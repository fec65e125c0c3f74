"""Base of attacks on (image, caption) pairs of a vision-language model (Co-Attack, SGA).

``attack(model, pixels (B, 3, H, W), captions (B,), generator[, caption_sets]) ->
MultimodalAttackResult(adv_pixels, adv_texts, text, loss_trace, params)``; budgets: L-inf ``eps``
on pixels and ``max_words`` words per caption. A dual encoder is attacked through its towers, a
fusion model through its fused embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ... import registry
from ...methods import Method, build
from ..text.base import TextAttack
from ..text.bert_attack import BertAttack

registry.declare_kind("pair_attacks", "attacks on (image, caption) pairs: attack(model, pixels, captions, generator) "
                      "-> MultimodalAttackResult", "mmsec.attacks.multimodal.base:PairAttack")


class PairAttack(Method):
    """Base of pair attacks; subclasses implement ``__call__``.

    Pair attacks that change captions hold a text attack (``text_attack``, a component of kind
    ``text_attacks``, in specs ``{name: bert_attack, params: {...}}``); :func:`text_attack_from`
    also builds the default one from the shortcuts ``candidates`` / ``max_words`` / ``k`` /
    ``neighbours`` (which are then folded into it: stored as None).
    """

    family: ClassVar[str | None] = "contrastive"  # a dual encoder, or a fusion model (which is one too)
    components: ClassVar[dict[str, str]] = {"text_attack": "text_attacks"}
    threat_model: ClassVar[str] = "white-box"


def text_attack_from(text_attack: TextAttack | str | dict | None, candidates: Any = None,
                     max_words: int | None = None, k: int | None = None,
                     neighbours: Sequence[Sequence[str]] | None = None) -> TextAttack:
    """The text attack of a pair attack: ``text_attack`` (an object, a registered name or ``{name, params}``),
    or a :class:`~mmsec.attacks.text.BertAttack` from the shortcuts (its defaults where they are None)."""
    shortcuts = {k_: v for k_, v in (("candidates", candidates), ("max_words", max_words), ("k", k),
                                     ("neighbours", neighbours)) if v is not None}
    if text_attack is None:
        return BertAttack(**shortcuts)
    if shortcuts:
        raise ValueError(f"give the text attack either as text_attack or through the shortcuts {sorted(shortcuts)}, "
                         "not both (put them in text_attack's params)")
    if isinstance(text_attack, (str, dict)):
        text_attack = build("text_attacks", text_attack, "text_attack")
    if not isinstance(text_attack, TextAttack):
        raise TypeError(f"text_attack must be a text attack (e.g. BertAttack(), or a spec's {{name: bert_attack, "
                        f"params: ...}}), got {type(text_attack).__name__}")
    return text_attack


def text_params(text_attack: TextAttack) -> dict[str, Any]:
    """The text attack's parameters as a pair attack records them (``text_`` prefixed)."""
    return {f"text_{k}": v for k, v in text_attack.params().items()}


__all__ = ["PairAttack", "text_attack_from", "text_params"]
