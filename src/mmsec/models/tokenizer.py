"""A word-level tokenizer for the tiny zoo models.

Lower-cases, splits on non-letters, maps each word to an id from a fixed vocabulary
(unknown words to ``<unk>``), and wraps the sequence in ``<sos> ... <eos>`` padded to
``context_length``, as CLIP's BPE tokenizer does. The vocabulary is stored in the checkpoint's
metadata, so a checkpoint always carries the tokenizer it was trained with.
"""

from __future__ import annotations

import re

import torch

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)
_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class WordTokenizer:
    def __init__(self, vocab: list[str], context_length: int = 16):
        if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"vocab must start with the special tokens {SPECIALS}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab has duplicate words")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = context_length

    @classmethod
    def from_corpus(cls, texts: list[str], context_length: int = 16) -> WordTokenizer:
        vocab = sorted({w for t in texts for w in words(t)})
        return cls(list(SPECIALS) + vocab, context_length)

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), self.index[PAD], dtype=torch.long)
        unk = self.index[UNK]
        for row, text in enumerate(texts):
            ids = [self.index[SOS]] + [self.index.get(w, unk) for w in words(text)]
            ids = ids[: self.context_length - 1] + [self.index[EOS]]  # truncate, always end with <eos>
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def eos_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) index of the ``<eos>`` token in each row (where text features are pooled)."""
        return (tokens == self.index[EOS]).int().argmax(dim=-1)
