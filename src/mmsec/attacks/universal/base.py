"""Base of universal, downstream-agnostic attacks on a pre-trained encoder: one perturbation for every image.

``attack(model, data, generator) -> result`` with ``.patch`` (3, h, h) in [0, 1], ``.fraction`` (the
patch side / image side), ``.position`` (its trained placement), ``.seconds`` and ``.apply(pixels)``:
learnt on surrogate image-caption ``data`` (an ``ImageTextData`` or a ``(pixels, captions)`` pair)
against a frozen, eval-mode ``model``, which is never modified.
"""

from __future__ import annotations

from typing import ClassVar

from ... import registry
from ...methods import Method

registry.declare_kind("universal_attacks", "universal patches against a pre-trained encoder: attack(model, data, "
                      "generator) -> PatchResult(.patch, .fraction, .position, .seconds)",
                      "mmsec.attacks.universal.base:UniversalAttack")


class UniversalAttack(Method):
    """Base of universal-patch attacks; subclasses implement ``__call__``."""

    family: ClassVar[str | None] = "contrastive"
    threat_model: ClassVar[str] = "white-box encoder, downstream-agnostic, universal patch"


__all__ = ["UniversalAttack"]
