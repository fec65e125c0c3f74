"""BERT-Attack style word-substitution attack on the text side of a vision-language model.

Paper: Linyang Li, Ruotian Ma, Qipeng Guo, Xiangyang Xue, Xipeng Qiu, "BERT-ATTACK: Adversarial
Attack Against BERT Using BERT", EMNLP 2020; in the form Co-Attack (Zhang, Yi, Sang, ACM MM 2022,
``attack/bert_attack.py``) and SGA (Lu et al., ICCV 2023) use it against vision-language models,
where there is no label to flip and the attack pushes an *embedding* away instead.

Threat model: white-box access to an embedding of the text (a text tower's output for a dual
encoder, or the fused multimodal embedding with the paired image for a fusion model); the
attacker may change at most ``max_words`` whole words of each caption.

Algorithm, per caption (words split on spaces):
    1. Importance: replace each word in turn by ``mask_token`` ("[UNK]", Co-Attack's choice) and
       score how far that moves the embedding from the original one.
    2. Visit words from most to least important, skipping stop words; for each, take up to ``k``
       substitutes from the candidate generator (computed on the original sentence) and keep
       the substitute -- or the current word -- whose sentence scores highest.
    3. Stop once ``max_words`` words have changed.

Score (what the attacker maximises): by default Co-Attack's ``KL(softmax(e_orig) || softmax(e))``
between the original embedding and the candidate's (each embedding treated as logits); pass
``score=`` to guide the attack by something else (SGA: distance from adversarial images), and
``importance=`` to rank the words by a different score than the one that picks substitutes
(SGA ranks by the KL score and picks by distance from the image).

Defaults (Co-Attack's call): ``max_words`` 1 (``num_perturbation=1``), ``k`` 10 candidates.
The candidate generator is pluggable (:mod:`mmsec.attacks.text.candidates`): BERT-Attack's is a
masked language model (:class:`~mmsec.attacks.text.candidates.MaskedLMCandidates`, from a local
transformers directory); the default here, for the shapes world, is lexical neighbours then
typos (:meth:`Candidates.shapes_default`), since no language model of the field ships on PyPI.
Departures: BERT-Attack's handling of words split into several sub-word pieces (a perplexity
search over piece combinations) is not done: such words only get lexical / typo candidates.

Inputs: ``embed(texts, rows) -> (n, D)``, the embedding of each text, ``rows[j]`` naming the
original sample text j belongs to (a fusion embedder pairs it with image ``rows[j]``); see
:func:`text_tower_embedder` and :func:`fused_embedder`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ...checks import check_int
from ..embedding_losses import softmax_kl
from .candidates import STOP_WORDS, CandidateGenerator, Candidates

TextEmbedder = Callable[[list[str], list[int]], torch.Tensor]
Score = Callable[[torch.Tensor, int], torch.Tensor]  # (n, D) candidate embeddings, sample row -> (n,)


def kl_from(reference: torch.Tensor) -> Score:
    """Co-Attack's score: ``KL(softmax(reference[row]) || softmax(e))`` of each candidate embedding ``e``."""
    ref = reference.detach()  # (B, D)

    def score(embeds: torch.Tensor, row: int) -> torch.Tensor:
        return softmax_kl(ref[row], embeds)  # (n,)

    return score


def text_tower_embedder(model) -> TextEmbedder:
    """A dual encoder's (or fusion model's unimodal) text embedding; ``rows`` are ignored."""

    def embed(texts: list[str], rows: list[int]) -> torch.Tensor:
        return model.encode_text(model.tokenize(texts))

    return embed


def fused_embedder(model, pixels: torch.Tensor) -> TextEmbedder:
    """A fusion model's multimodal embedding of each text with its sample's image ``pixels[rows]``."""

    def embed(texts: list[str], rows: list[int]) -> torch.Tensor:
        return model.fuse(pixels[rows], model.tokenize(texts))

    return embed


@dataclass
class TextAttackResult:
    """Adversarial captions and what changed.

    Attributes:
        adv_texts: one caption per input.
        changes: per caption, the (word index, original word, substitute) of each change.
        queries: embeddings computed.
    """

    adv_texts: list[str]
    changes: list[list[tuple[int, str, str]]] = field(default_factory=list)
    queries: int = 0

    @property
    def words_changed(self) -> list[int]:
        return [len(c) for c in self.changes]


class BertAttack:
    """Word-level substitution attack (see module docstring)."""

    name = "bert_attack"
    threat_model = "white-box"

    def __init__(self, max_words: int = 1, k: int = 10, candidates: CandidateGenerator | None = None,
                 mask_token: str = "[UNK]", stop_words: Sequence[str] = tuple(sorted(STOP_WORDS)),
                 batch_size: int = 64):
        self.max_words = check_int("max_words", max_words, 0)
        self.k = check_int("k", k, 1)
        self.candidates = candidates if candidates is not None else Candidates.shapes_default()
        if not callable(self.candidates):
            raise TypeError(f"candidates must be callable as candidates(words, position, k), got {candidates!r}")
        self.mask_token = mask_token
        self.stop_words = frozenset(stop_words)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def params(self) -> dict:
        return {"max_words": self.max_words, "k": self.k, "candidates": type(self.candidates).__name__,
                "mask_token": self.mask_token}

    @torch.no_grad()
    def __call__(self, embed: TextEmbedder, texts: Sequence[str], score: Score | None = None,
                 importance: Score | None = None) -> TextAttackResult:
        """Attack ``texts``; ``score`` picks substitutes (default: KL from the original embedding) and
        ``importance`` ranks the words (default: ``score``)."""
        texts = list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("texts must be a non-empty list of non-empty strings")
        queries = 0

        def run(batch: list[str], row: int) -> torch.Tensor:
            nonlocal queries
            queries += len(batch)
            return torch.cat([embed(batch[s:s + self.batch_size], [row] * len(batch[s:s + self.batch_size]))
                              for s in range(0, len(batch), self.batch_size)])

        if score is None:
            original = torch.cat([embed(texts[s:s + self.batch_size], list(range(s, min(s + self.batch_size, len(texts)))))
                                  for s in range(0, len(texts), self.batch_size)])
            queries += len(texts)
            score = kl_from(original)
        rank = importance if importance is not None else score
        adv, changes = [], []
        for row, text in enumerate(texts):
            words = text.split()
            final, changed = list(words), []
            if self.max_words > 0:
                masked = [" ".join(words[:i] + [self.mask_token] + words[i + 1:]) for i in range(len(words))]
                word_scores = rank(run(masked, row), row)  # (n_words,)
                for pos in word_scores.argsort(descending=True).tolist():
                    if len(changed) >= self.max_words:
                        break
                    if words[pos] in self.stop_words:
                        continue
                    subs = [s for s in self.candidates(words, pos, self.k) if s and " " not in s]
                    if not subs:
                        continue
                    options = [final[pos], *subs]
                    sentences = [" ".join(final[:pos] + [w] + final[pos + 1:]) for w in options]
                    best = int(score(run(sentences, row), row).argmax())
                    if best > 0:
                        changed.append((pos, final[pos], options[best]))
                        final[pos] = options[best]
            adv.append(" ".join(final))
            changes.append(changed)
        return TextAttackResult(adv, changes, queries)


__all__ = ["BertAttack", "TextAttackResult", "TextEmbedder", "fused_embedder", "kl_from", "text_tower_embedder"]
