"""Base of text attacks: word-level changes of captions against an embedding of the text.

``attack(embed, texts, score=None, importance=None) -> TextAttackResult(adv_texts, changes, queries)``
where ``embed(texts, rows) -> (n, D)`` embeds texts (``rows[j]``: the sample text j belongs to, so a
fusion embedder pairs it with that sample's image). The attack reaches the model only through
``embed`` (family "any"); candidate words and word lists are its inputs (``neighbours=``,
``candidates=``), never a world's vocabulary.
"""

from __future__ import annotations

from typing import ClassVar

from ... import registry
from ...methods import Method

registry.declare_kind("text_attacks", "word-substitution attacks on captions: attack(embed, texts, score=..., "
                      "importance=...) -> TextAttackResult", "mmsec.attacks.text.base:TextAttack")


class TextAttack(Method):
    """Base of text attacks; subclasses implement ``__call__``."""

    family: ClassVar[str | None] = "any"  # it reaches the model through the embed function it is given
    threat_model: ClassVar[str] = "white-box on a text embedding; at most max_words words changed per caption"


__all__ = ["TextAttack"]
