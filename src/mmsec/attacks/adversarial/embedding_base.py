"""Base of attacks in a fusion model's embedding space (the inputs of its fusion encoder), not on pixels or words.

``attack(model, image_feats (B, N, W), text_embeds (B, L, W'), tokens (B, L), labels (B,), generator)
-> FusedEmbeddingResult``: a perturbation of one modality's fusion-encoder inputs against the model's
image-text matching decision; the model and the inputs are never modified.
"""

from __future__ import annotations

from typing import ClassVar

from ... import registry
from ...methods import Method

registry.declare_kind("embedding_attacks", "attacks on a fusion model's input embeddings: attack(model, image_feats, "
                      "text_embeds, tokens, labels, generator) -> FusedEmbeddingResult",
                      "mmsec.attacks.adversarial.embedding_base:EmbeddingAttack")


class EmbeddingAttack(Method):
    """Base of embedding-space attacks on fusion models; subclasses implement ``__call__``."""

    family: ClassVar[str | None] = "fusion"
    threat_model: ClassVar[str] = "white-box, perturbation of the fusion encoder's input embeddings"


__all__ = ["EmbeddingAttack"]
