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
masked language model (``candidates="mlm:/path"``,
:class:`~mmsec.attacks.text.candidates.MaskedLMCandidates`, from a local transformers directory);
the default here is lexical neighbours then typos (``candidates="default"``), since no language
model of the field ships on PyPI. The lexical neighbours are groups of interchangeable words the
caller gives (``neighbours=``; for the shapes world
:func:`mmsec.data.shapes_text.shapes_lexical_groups`); without them the default is typos alone.
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
from ...registry import register
from ..embedding_losses import softmax_kl
from .base import TextAttack
from .candidates import STOP_WORDS, CandidateGenerator, candidate_generator, check_neighbours

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


@register("text_attacks", "bert_attack")
class BertAttack(TextAttack):
    """Word-level substitution attack (see module docstring).

    Args:
        max_words: words changed per caption at most (Co-Attack: 1).
        k: candidate substitutes tried per word (Co-Attack: 10).
        candidates: the candidate generator: a name (``"default"``: lexical neighbours, then typos;
            ``"lexical"``; ``"typos"``; ``"mlm:/path/to/local/masked-lm"``) or a generator object
            ``generator(words, position, k) -> list[str]`` (then the attack has no config).
        neighbours: groups of interchangeable words for the lexical neighbours (e.g. the shapes world's
            ``shapes_lexical_groups()``); None: no lexical candidates.
        mask_token: the token that replaces a word to score its importance (Co-Attack: "[UNK]").
        stop_words: words never attacked (default: :data:`~mmsec.attacks.text.candidates.STOP_WORDS`).
        batch_size: texts embedded per call of ``embed``.
    """

    name = "bert_attack"
    paper = "Li et al., EMNLP 2020"
    threat_model = "white-box"

    def __init__(self, max_words: int = 1, k: int = 10, candidates: str | CandidateGenerator = "default",
                 neighbours: Sequence[Sequence[str]] | None = None, mask_token: str = "[UNK]",
                 stop_words: Sequence[str] | None = None, batch_size: int = 64):
        self.max_words = check_int("max_words", max_words, 0)
        self.k = check_int("k", k, 1)
        if not (isinstance(candidates, str) or callable(candidates)):
            raise TypeError(f"candidates must be a generator name ('default', 'lexical', 'typos', 'mlm:/path') or "
                            f"callable as candidates(words, position, k), got {candidates!r}")
        self.neighbours = check_neighbours(neighbours)
        self.candidates = candidates
        self.candidate_fn = candidate_generator(candidates, self.neighbours)  # the resolved generator
        if not isinstance(mask_token, str) or not mask_token:
            raise ValueError(f"mask_token must be a non-empty string, got {mask_token!r}")
        self.mask_token = mask_token
        if stop_words is not None and (isinstance(stop_words, str) or not all(isinstance(w, str) for w in stop_words)):
            raise TypeError(f"stop_words must be a list of words or None (the default list), got {stop_words!r}")
        self.stop_words = None if stop_words is None else list(stop_words)
        self._stop = STOP_WORDS if stop_words is None else frozenset(stop_words)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def params(self) -> dict:
        """What pair attacks record of their text attack (the generator by its type)."""
        return {"max_words": self.max_words, "k": self.k, "candidates": type(self.candidate_fn).__name__,
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
                    if words[pos] in self._stop:
                        continue
                    subs = [s for s in self.candidate_fn(words, pos, self.k) if s and " " not in s]
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
