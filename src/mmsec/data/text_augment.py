"""EDA text augmentation: Jason Wei, Kai Zou, "EDA: Easy Data Augmentation Techniques for Boosting
Performance on Text Classification Tasks", EMNLP-IJCNLP 2019.

CleanCLIP, RoCLIP and SafeCLIP augment captions with EDA (CleanCLIP: one augmented caption per
pair, fixed for the whole fine-tuning). EDA has four operations on a sentence of ``n`` words, each
changing ``max(1, int(alpha * n))`` words: synonym replacement (SR), random insertion of a synonym
of a random word (RI), random swap of two words (RS), random deletion of each word with probability
``p_rd`` (RD; one word always survives). ``eda(..., num_aug=1)`` draws one sentence from the pool of
``num_aug // 4 + 1`` sentences per operation, as the reference code does.

Defaults: ``alpha_sr = alpha_ri = alpha_rs = p_rd = 0.1``, ``num_aug = 1`` (CleanCLIP's use).

Departure: EDA's synonyms come from WordNet (not installed; no downloads here). ``synonyms`` maps a
word to its synonyms; by default it is empty, and then SR and RI return the sentence unchanged, as
EDA itself does for a sentence without WordNet synonyms. The shapes world's vocabulary has no true
synonyms (a colour for another colour changes the caption's meaning), so for it only swap and
deletion change a caption.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from ..checks import check_budget


def _changes(n: int, alpha: float) -> int:
    return max(1, int(alpha * n))


def synonym_replacement(words: list[str], n: int, rng: random.Random, synonyms: Mapping[str, Sequence[str]]) -> list[str]:
    out = list(words)
    candidates = [w for w in dict.fromkeys(words) if synonyms.get(w)]
    rng.shuffle(candidates)
    replaced = 0
    for w in candidates:
        pick = rng.choice(list(synonyms[w]))
        out = [pick if x == w else x for x in out]
        replaced += 1
        if replaced >= n:
            break
    return out


def random_insertion(words: list[str], n: int, rng: random.Random, synonyms: Mapping[str, Sequence[str]]) -> list[str]:
    out = list(words)
    with_synonyms = [w for w in words if synonyms.get(w)]
    for _ in range(n if with_synonyms else 0):
        out.insert(rng.randrange(len(out) + 1), rng.choice(list(synonyms[rng.choice(with_synonyms)])))
    return out


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(words)
    for _ in range(n if len(out) > 1 else 0):
        i, j = rng.randrange(len(out)), rng.randrange(len(out))
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() > p]
    return kept or [rng.choice(words)]


def eda(sentence: str, rng: random.Random, alpha_sr: float = 0.1, alpha_ri: float = 0.1, alpha_rs: float = 0.1,
        p_rd: float = 0.1, num_aug: int = 1, synonyms: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """``num_aug`` EDA augmentations of ``sentence`` (lower-case words split on spaces)."""
    if not isinstance(sentence, str) or not sentence.strip():
        raise ValueError(f"sentence must be a non-empty string, got {sentence!r}")
    for name, value in (("alpha_sr", alpha_sr), ("alpha_ri", alpha_ri), ("alpha_rs", alpha_rs), ("p_rd", p_rd)):
        check_budget(name, value, 0.0, 1.0)
    if not isinstance(num_aug, int) or num_aug < 1:
        raise ValueError(f"num_aug must be an int >= 1, got {num_aug!r}")
    syn = synonyms or {}
    words = sentence.lower().split()
    n = len(words)
    per_op = num_aug // 4 + 1
    pool: list[list[str]] = []
    for _ in range(per_op):
        pool.append(synonym_replacement(words, _changes(n, alpha_sr), rng, syn))
    for _ in range(per_op):
        pool.append(random_insertion(words, _changes(n, alpha_ri), rng, syn))
    for _ in range(per_op):
        pool.append(random_swap(words, _changes(n, alpha_rs), rng))
    for _ in range(per_op):
        pool.append(random_deletion(words, p_rd, rng))
    rng.shuffle(pool)
    return [" ".join(w) for w in pool[:num_aug]]


__all__ = ["eda", "random_deletion", "random_insertion", "random_swap", "synonym_replacement"]
