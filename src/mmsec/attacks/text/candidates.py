"""Substitute-word generators for word-level text attacks (pluggable into :class:`~mmsec.attacks.text.BertAttack`).

A generator is called as ``generator(words, position, k) -> list[str]``: up to ``k`` words that
could replace ``words[position]`` in the sentence ``words``, best first, never the word itself.

* :class:`LexicalNeighbours` -- words of the same kind from fixed groups, given by the caller (for
  the shapes world, :func:`mmsec.data.shapes_text.shapes_lexical_groups`: another colour for a
  colour, another shape for a shape, ...). The closest analogue of the synonym / counter-fitted
  neighbours of TextFooler and of what a masked language model proposes for a short caption, and
  deterministic.
* :class:`CharacterEdits` -- typos (swap two adjacent letters, delete one, duplicate one,
  substitute one), TextBugger's character-level "bugs" (Li et al., NDSS 2019). For a
  word-level tokenizer a typo usually becomes the unknown token, which is what a real
  misspelling does to such a model.
* :class:`MaskedLMCandidates` -- BERT-Attack's generator (Li et al., EMNLP 2020): a masked language
  model from a *local* transformers directory reads the whole, unmasked sentence and its top-k
  predictions at the word's position are the candidates (single-sub-word words; sub-word pieces
  "##..." and stop words dropped; predictions with a logit below ``min_score`` dropped, Co-Attack's
  ``threshold_pred_score`` 0.3).
* :class:`Candidates` -- several generators in turn (the default: lexical neighbours, when a word
  table is given, then typos).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

# Co-Attack's / BERT-Attack's list of words never attacked (articles, prepositions, pronouns, ...),
# abridged to the ones that can occur in captions.
STOP_WORDS = frozenset("""a about above across after again against all also am among an and another any are around as at
back be been before behind being below beside besides between beyond both but by can could down during each either
else for from he her here him his how i if in into is it its itself just me more most my near neither next no nor not
now of off on once one only onto or other our out over per same she so some such than that the their them then there
these they this those through to too toward towards under until up upon was we were what when where which while who
whom whose why with within without would you your""".split())


class CandidateGenerator(Protocol):
    def __call__(self, words: Sequence[str], position: int, k: int) -> list[str]: ...


def check_neighbours(neighbours: object) -> list[list[str]] | None:
    """None, or groups of interchangeable words: a list of lists of words (a copy)."""
    if neighbours is None:
        return None
    if isinstance(neighbours, (str, bytes)) or not isinstance(neighbours, Iterable):
        raise TypeError(f"neighbours must be a list of word groups (lists of interchangeable words, e.g. "
                        f"[['red', 'green'], ['circle', 'square']]), got {type(neighbours).__name__}")
    groups = []
    for i, group in enumerate(neighbours):
        if isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
            raise TypeError(f"neighbours[{i}] must be a list of words, got {group!r}")
        words = list(group)
        if not all(isinstance(w, str) and w and " " not in w for w in words):
            raise ValueError(f"neighbours[{i}] must hold single non-empty words, got {words!r}")
        groups.append(words)
    return groups


class LexicalNeighbours:
    """Words from the same group as the target word (groups of interchangeable words, e.g. the shapes
    world's :func:`mmsec.data.shapes_text.shapes_lexical_groups`)."""

    def __init__(self, groups: Iterable[Iterable[str]]):
        self.groups = [tuple(dict.fromkeys(g)) for g in groups]
        self.group_of = {w: g for g in self.groups for w in g}

    def __call__(self, words: Sequence[str], position: int, k: int) -> list[str]:
        word = words[position]
        return [w for w in self.group_of.get(word, ()) if w != word][:k]


class CharacterEdits:
    """Up to ``k`` typos of the word, drawn deterministically from ``seed`` and the word."""

    def __init__(self, seed: int = 0, min_length: int = 3):
        self.seed, self.min_length = seed, min_length

    def __call__(self, words: Sequence[str], position: int, k: int) -> list[str]:
        word = words[position]
        if len(word) < self.min_length or not word.isalpha():
            return []
        rng = random.Random(f"{self.seed}:{word}")
        edits = set()
        for i in range(len(word) - 1):
            edits.add(word[:i] + word[i + 1] + word[i] + word[i + 2:])  # swap
        for i in range(len(word)):
            edits.add(word[:i] + word[i + 1:])  # delete
            edits.add(word[:i] + word[i] + word[i:])  # duplicate
            edits.add(word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[i + 1:])  # substitute
        edits.discard(word)
        return rng.sample(sorted(edits), min(k, len(edits)))


class MaskedLMCandidates:
    """BERT-Attack's substitutes from a masked language model in a local transformers directory.

    Args:
        path: a directory with ``config.json``, tokenizer files and safetensors weights of an
            ``AutoModelForMaskedLM`` (no hub download; pickle weights are refused).
        min_score: drop predictions whose logit is below this (Co-Attack: 0.3).
        stop_words: never proposed.
    """

    def __init__(self, path: str | Path, min_score: float = 0.3, stop_words: Iterable[str] = STOP_WORDS):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"masked language model directory {str(path)!r} has no config.json")
        if not any(path.glob("*.safetensors")):
            raise FileNotFoundError(f"masked language model directory {str(path)!r} has no *.safetensors weights "
                                    "(pickle checkpoints are not loaded)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForMaskedLM.from_pretrained(str(path), local_files_only=True, use_safetensors=True).eval()
        self.min_score = min_score
        self.stop_words = frozenset(stop_words)
        self._cache: dict[tuple[str, ...], tuple[list[list[int]], object]] = {}

    def _predict(self, words: Sequence[str]):
        key = tuple(words)
        if key not in self._cache:
            import torch

            pieces = [self.tokenizer.tokenize(w) for w in words]
            ids = self.tokenizer.convert_tokens_to_ids([p for ps in pieces for p in ps])
            ids = [self.tokenizer.cls_token_id, *ids, self.tokenizer.sep_token_id]
            with torch.no_grad():
                logits = self.model(input_ids=torch.tensor([ids])).logits[0]  # (T, V)
            spans, start = [], 1
            for ps in pieces:
                spans.append(list(range(start, start + len(ps))))
                start += len(ps)
            self._cache = {key: (spans, logits)}  # one sentence at a time: keep the last only
        return self._cache[key]

    def __call__(self, words: Sequence[str], position: int, k: int) -> list[str]:
        spans, logits = self._predict(words)
        span = spans[position]
        if len(span) != 1:  # multi-piece words: BERT-Attack's perplexity search over combinations is not done
            return []
        scores, ids = logits[span[0]].topk(min(4 * k, logits.shape[-1]))
        out = []
        for score, token in zip(scores.tolist(), self.tokenizer.convert_ids_to_tokens(ids.tolist()), strict=True):
            if score < self.min_score:
                break
            if token is None or token.startswith("##") or token == words[position] or token in self.stop_words or not token.isalpha():
                continue
            out.append(token)
            if len(out) == k:
                break
        return out


class Candidates:
    """Several generators in turn, without duplicates, up to ``k`` in all."""

    def __init__(self, *generators: CandidateGenerator):
        if not generators:
            raise ValueError("Candidates needs at least one generator")
        self.generators = generators

    @classmethod
    def default(cls, neighbours: Iterable[Iterable[str]] | None = None, seed: int = 0) -> Candidates:
        """Lexical neighbours from the word groups ``neighbours`` (when given), then typos."""
        if neighbours is None:
            return cls(CharacterEdits(seed))
        return cls(LexicalNeighbours(neighbours), CharacterEdits(seed))

    def __call__(self, words: Sequence[str], position: int, k: int) -> list[str]:
        out: list[str] = []
        for g in self.generators:
            for w in g(words, position, k):
                if w not in out and w != words[position]:
                    out.append(w)
        return out[:k]


CANDIDATE_NAMES = ("default", "lexical", "typos")


def candidate_generator(name: str | CandidateGenerator,
                        neighbours: Iterable[Iterable[str]] | None = None) -> CandidateGenerator:
    """A generator from a spec-friendly name: ``"default"`` (lexical neighbours from the word groups
    ``neighbours`` when given, then typos), ``"lexical"`` (the neighbours alone: needs ``neighbours``),
    ``"typos"``, or ``"mlm:/path/to/local/masked-lm"``; a generator is returned as is."""
    if callable(name):
        return name
    if not isinstance(name, str):
        raise TypeError(f"candidates must be a name or a generator, got {type(name).__name__}")
    if name.startswith("mlm:"):
        return MaskedLMCandidates(name[4:])
    if name not in CANDIDATE_NAMES:
        raise ValueError(f"candidates must be one of {list(CANDIDATE_NAMES)} or 'mlm:/path/to/dir', got {name!r}")
    if name == "typos":
        return CharacterEdits()
    if name == "lexical":
        if neighbours is None:
            raise ValueError("candidates='lexical' needs neighbours= (groups of interchangeable words, e.g. the "
                             "shapes world's mmsec.data.shapes_text.shapes_lexical_groups())")
        return LexicalNeighbours(neighbours)
    return Candidates.default(neighbours)


__all__ = ["CANDIDATE_NAMES", "STOP_WORDS", "candidate_generator", "CandidateGenerator", "Candidates", "CharacterEdits",
           "LexicalNeighbours", "MaskedLMCandidates", "check_neighbours"]
