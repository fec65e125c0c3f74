"""Losses on embeddings shared by the multimodal attacks (Co-Attack, the text attack, SGA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def softmax_kl(reference: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(reference) || softmax(logits))`` per row, (B,), each embedding read as logits.

    What Co-Attack's ``KLDivLoss(log_softmax(logits), softmax(reference))`` computes per sample;
    ``reference`` broadcasts against ``logits`` (one reference row for many candidates).
    """
    ref = reference.float()
    p = F.softmax(ref, -1)
    return (p * (F.log_softmax(ref, -1) - F.log_softmax(logits.float(), -1))).sum(-1)


__all__ = ["softmax_kl"]
