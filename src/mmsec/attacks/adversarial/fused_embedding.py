"""Embedding-space PGD against a fusion model's image-text matching (ITM) head.

The threat model VILLA (Gan et al., NeurIPS 2020) trains against: the adversary adds a
perturbation to the *inputs of the fusion encoder* -- the image tokens (region features in
UNITER/LXMERT, our image encoder's output tokens) or the word embeddings of the text -- one
modality at a time, the other left clean, and wants the ITM decision of each (image, text) pair
to flip (a matching pair called "no match", a non-matching one "match"). It is not an attack on
raw inputs (no pixel or word changes); it measures how smooth the fused decision is around the
data in the space where VILLA's adversarial training acts, so it is the direct test of what VILLA
claims to improve. Pixel- and word-space attacks on the same model are separate
(:mod:`mmsec.attacks`).

Algorithm: untargeted PGD under an L2 ball per example (VILLA's ``norm_type l2``), maximising the
ITM cross-entropy of the true label; each step moves by ``alpha`` along the gradient normalised
by its per-example L2 norm (VILLA's / FreeLB's update), then projects onto the ball; zero start
(VILLA's ``adv_init_mag 0``). The budget is *relative*: ``eps`` is a fraction of each example's
clean embedding norm over the whole sequence (``||delta||_2 <= eps * ||e||_2``), because embedding
spaces have no natural unit and a fixed radius would mean different things for different models
and modalities. Padding positions of the text are never perturbed.

Defaults: ``steps`` 10, ``alpha`` 2.5 eps / steps (Madry et al.'s rule), zero start (VILLA's), the
L2 norm (VILLA's ``norm_type``); ``eps`` 0.05 of the clean embedding's norm.

Departures: VILLA's adversary is a training-time inner loop (a few steps inside FreeLB-style
adversarial training, with a KL consistency term); here it is an evaluation attack that maximises
the ITM cross-entropy alone, and its budget is relative to each example's embedding norm (see
above) instead of VILLA's absolute ``adv_max_norm`` (0 in its defaults: there K steps of
``adv_lr`` bound the norm).

Shapes: ``image_feats`` (B, N, W_img), ``text_embeds`` (B, L, W_txt), ``tokens`` (B, L) long,
``labels`` (B,) long in {0 no match, 1 match}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_budget, check_int
from ...registry import register
from .embedding_base import EmbeddingAttack

MODALITIES = ("image", "text")


def l2_normalized_step(delta: torch.Tensor, grad: torch.Tensor, step: float) -> torch.Tensor:
    """``delta + step * grad / ||grad||_2``, the norm taken per example over all but the batch dim."""
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
    return delta + step * grad / norm


def project_l2(delta: torch.Tensor, radius: torch.Tensor | float) -> torch.Tensor:
    """Scale each example's ``delta`` back onto the L2 ball of ``radius`` (a float or a (B,) tensor)."""
    norm = delta.flatten(1).norm(dim=1)  # (B,)
    radius = torch.as_tensor(radius, dtype=delta.dtype, device=delta.device).expand_as(norm)
    scale = torch.where(norm > radius, radius / norm.clamp_min(1e-12), torch.ones_like(norm))
    return delta * scale.view(-1, *([1] * (delta.ndim - 1)))


@dataclass
class FusedEmbeddingResult:
    """Outcome of :class:`FusedEmbeddingPGD` on B pairs.

    Attributes:
        clean_correct: (B,) bool, ITM right on the clean pair.
        adv_correct: (B,) bool, ITM right after the attack (the attack keeps its best point: a
            pair counts as broken if any iterate flipped it).
        delta_norm: (B,) final perturbation's L2 norm relative to the clean embedding's.
        modality: "image" or "text".
    """

    clean_correct: torch.Tensor
    adv_correct: torch.Tensor
    delta_norm: torch.Tensor
    modality: str

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct.float().mean().item()

    @property
    def robust_accuracy(self) -> float:
        return self.adv_correct.float().mean().item()


@register("embedding_attacks", "fused_embedding_pgd")
class FusedEmbeddingPGD(EmbeddingAttack):
    """L2 PGD on one modality's fusion-encoder inputs, against the ITM decision (see module docstring).

    Args:
        eps: radius relative to each example's clean embedding norm (e.g. 0.05 = 5%).
        steps: PGD iterations (default 10).
        alpha: step length, relative like ``eps``; default 2.5 * eps / steps (Madry et al.).
        modality: "image" (perturb the image tokens) or "text" (perturb the word embeddings).
    """

    paper = "Gan et al., NeurIPS 2020 (VILLA's adversary)"

    def __init__(self, eps: float = 0.05, steps: int = 10, alpha: float | None = None, modality: str = "image"):
        self.eps = check_budget("eps", eps, 0.0, 10.0, hint=" (a fraction of the embedding's norm)")
        self.steps = check_int("steps", steps, 1)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else check_budget("alpha", alpha, 0.0, 10.0)
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        self.modality = modality

    def __call__(self, model: nn.Module, image_feats: torch.Tensor, text_embeds: torch.Tensor,
                 tokens: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator | int | None = None) -> FusedEmbeddingResult:
        """Attack B pairs; ``generator`` is accepted for the kind's contract and unused (zero start, no
        random choice)."""
        if not (image_feats.shape[0] == text_embeds.shape[0] == tokens.shape[0] == labels.shape[0]):
            raise ValueError(f"image_feats, text_embeds, tokens and labels must share the batch size, got "
                             f"{image_feats.shape[0]}, {text_embeds.shape[0]}, {tokens.shape[0]}, {labels.shape[0]}")
        image_feats, text_embeds = image_feats.detach(), text_embeds.detach()
        keep = (~model.padding_mask(tokens)).unsqueeze(-1).to(text_embeds.dtype)  # (B, L, 1)
        base = image_feats if self.modality == "image" else text_embeds * keep
        scale = base.flatten(1).norm(dim=1)  # (B,) the clean embedding's norm
        radius, step = self.eps * scale, (self.alpha * scale).view(-1, *([1] * (base.ndim - 1)))

        def logits(delta: torch.Tensor) -> torch.Tensor:
            if self.modality == "image":
                return model.itm_head(model.fuse_features(image_feats + delta, text_embeds, tokens))
            return model.itm_head(model.fuse_features(image_feats, text_embeds + delta * keep, tokens))

        clean_correct: torch.Tensor | None = None
        delta = torch.zeros_like(base)  # zero start: the first iterate is the clean pair
        for _ in range(self.steps):
            delta.requires_grad_(True)
            out = logits(delta)
            grad, = torch.autograd.grad(F.cross_entropy(out, labels, reduction="sum"), delta)
            now = out.detach().argmax(-1) == labels
            if clean_correct is None:
                clean_correct, correct = now, now.clone()
            correct &= now
            with torch.no_grad():
                delta = project_l2(l2_normalized_step(delta, grad, step), radius)
                if self.modality == "text":
                    delta = delta * keep
        with torch.no_grad():
            correct &= logits(delta).argmax(-1) == labels
        rel = delta.detach().flatten(1).norm(dim=1) / scale.clamp_min(1e-12)
        return FusedEmbeddingResult(clean_correct, correct, rel, self.modality)


__all__ = ["FusedEmbeddingPGD", "FusedEmbeddingResult", "l2_normalized_step", "project_l2"]
