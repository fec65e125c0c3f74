"""Text-side attacks on vision-language models: word substitution (BERT-Attack style) and its candidate generators.

Importing this package registers the built-in text attacks (``mmsec.registry.entries("text_attacks")``).
"""

from .base import TextAttack
from .bert_attack import BertAttack, TextAttackResult, fused_embedder, kl_from, text_tower_embedder
from .candidates import Candidates, CharacterEdits, LexicalNeighbours, MaskedLMCandidates, candidate_generator

__all__ = ["BertAttack", "Candidates", "CharacterEdits", "LexicalNeighbours", "MaskedLMCandidates", "TextAttack",
           "TextAttackResult", "candidate_generator", "fused_embedder", "kl_from", "text_tower_embedder"]
