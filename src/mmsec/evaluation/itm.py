"""Image-text matching (ITM) evaluation of a fusion model: clean accuracy and embedding-space robustness.

The pairs: shapes-world scenes each with one true caption (label 1, "match") and, where one
exists, the same caption made false by one attribute edit (label 0; colours or shapes swapped
between the two objects, or the colour, size or position changed: :func:`mmsec.zoo.train.false_caption`).
A model that only checks which words occur cannot tell them apart; the fusion encoder must bind
attributes to objects. Robustness is measured with :class:`~mmsec.attacks.adversarial.FusedEmbeddingPGD`
(the threat model VILLA trains against), one modality at a time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks.adversarial.fused_embedding import MODALITIES, FusedEmbeddingPGD


@dataclass
class ITMPairs:
    """Row-aligned (image, caption, label) pairs: pixels (P, 3, H, W), P captions, labels (P,) in {0, 1}."""

    pixels: torch.Tensor
    captions: list[str]
    labels: torch.Tensor


def shapes_itm_pairs(split: str = "test", n: int = 256, image_size: int = 32, template: int = 0,
                     seed: int = 0, start: int = 0, world_seed: int = 0) -> ITMPairs:
    """Scenes ``start .. start+n-1`` of ``split`` (world seed ``world_seed``): n matching pairs, then one
    false-caption pair per scene that has one (the false captions drawn with ``seed``)."""
    from ..data.shapes import ShapesWorld
    from ..zoo.train import false_caption

    batch = ShapesWorld(image_size=image_size, seed=world_seed).batch(split, start, n)
    rng = random.Random(seed)
    pixels = batch.pixels()  # (n, 3, H, W)
    true = [caps[template] for caps in batch.captions]
    false = [false_caption(s, template, rng) for s in batch.scenes]
    kept = [i for i, c in enumerate(false) if c is not None]
    return ITMPairs(torch.cat([pixels, pixels[kept]]), true + [false[i] for i in kept],
                    torch.cat([torch.ones(n), torch.zeros(len(kept))]).long())


@torch.no_grad()
def itm_accuracy(model: nn.Module, pairs: ITMPairs, batch_size: int = 256) -> float:
    """Fraction of pairs whose ITM decision (argmax of ``itm_logits``) equals the label."""
    correct = 0
    for s in range(0, len(pairs.captions), batch_size):
        tokens = model.tokenize(pairs.captions[s:s + batch_size])
        pred = model.itm_logits(pairs.pixels[s:s + batch_size], tokens).argmax(-1)
        correct += int((pred == pairs.labels[s:s + batch_size]).sum())
    return correct / len(pairs.captions)


def itm_embedding_robustness(model: nn.Module, pairs: ITMPairs, eps: float, steps: int = 10,
                             modalities: tuple[str, ...] = MODALITIES, batch_size: int = 256) -> dict[str, float]:
    """Robust ITM accuracy under :class:`FusedEmbeddingPGD` at relative radius ``eps``, per modality."""
    out: dict[str, float] = {}
    for modality in modalities:
        attack = FusedEmbeddingPGD(eps=eps, steps=steps, modality=modality)
        robust = 0
        for s in range(0, len(pairs.captions), batch_size):
            tokens = model.tokenize(pairs.captions[s:s + batch_size])
            with torch.no_grad():
                feats = model.image_features(pairs.pixels[s:s + batch_size])
                embeds = model.text_token_embeddings(tokens)
            result = attack(model, feats, embeds, tokens, pairs.labels[s:s + batch_size])
            robust += int(result.adv_correct.sum())
        out[modality] = robust / len(pairs.captions)
    return out


__all__ = ["ITMPairs", "itm_accuracy", "itm_embedding_robustness", "shapes_itm_pairs"]
