"""A first-in-first-out pool of embeddings with nearest-neighbour look-up (NNCLR's support set).

Dwibedi et al., "With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
Representations" (ICCV 2021) replace a sample's own view by its nearest neighbour in a queue of past
embeddings. RoCLIP matches each image to the nearest caption of such a pool; SafeCLIP's unimodal
warm-up uses one pool per modality. The pool holds detached, L2-normalised embeddings; the
neighbour is the entry of highest cosine similarity (what the methods' code computes); it carries no
gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class NearestNeighbourPool:
    """``size`` embeddings, oldest replaced first.

    Args:
        size: number of entries kept (RoCLIP: 2% of the data set; SafeCLIP's code: 256).
    """

    def __init__(self, size: int):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be an int >= 1 (entries in the pool), got {size!r}")
        self.size = size
        self.bank: torch.Tensor | None = None  # (n <= size, D), normalised
        self._next = 0  # slot the next entry overwrites once the pool is full

    def __len__(self) -> int:
        return 0 if self.bank is None else self.bank.shape[0]

    def push(self, emb: torch.Tensor) -> None:
        """Add the rows of ``emb`` (B, D), dropping the oldest entries beyond ``size``."""
        if emb.ndim != 2:
            raise ValueError(f"emb must be (B, D), got shape {tuple(emb.shape)}")
        new = F.normalize(emb.detach().float(), dim=-1)
        if self.bank is None:
            self.bank = new[-self.size:].clone()
            self._next = self.bank.shape[0] % self.size
            return
        if new.shape[1] != self.bank.shape[1]:
            raise ValueError(f"emb has width {new.shape[1]}, the pool holds width {self.bank.shape[1]}")
        for row in new[-self.size:]:
            if self.bank.shape[0] < self.size:
                self.bank = torch.cat([self.bank, row[None]])
            else:
                self.bank[self._next] = row
            self._next = (self._next + 1) % self.size

    def nearest(self, query: torch.Tensor) -> torch.Tensor:
        """For each row of ``query`` (B, D), the pool entry of highest cosine similarity (B, D), detached."""
        if self.bank is None:
            raise RuntimeError("the pool is empty: push embeddings before looking up neighbours")
        sims = F.normalize(query.detach().float(), dim=-1) @ self.bank.T  # (B, n)
        return self.bank[sims.argmax(dim=1)]


__all__ = ["NearestNeighbourPool"]
