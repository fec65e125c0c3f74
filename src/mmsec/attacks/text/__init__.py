"""Text-side attacks on vision-language models: word substitution (BERT-Attack style) and its candidate generators."""

from .bert_attack import BertAttack, TextAttackResult, fused_embedder, kl_from, text_tower_embedder
from .candidates import Candidates, CharacterEdits, LexicalNeighbours, MaskedLMCandidates

__all__ = ["BertAttack", "Candidates", "CharacterEdits", "LexicalNeighbours", "MaskedLMCandidates",
           "TextAttackResult", "fused_embedder", "kl_from", "text_tower_embedder"]
