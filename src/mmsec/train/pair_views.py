"""Augmented views of image-caption pairs, as CleanCLIP, RoCLIP and SafeCLIP make them.

Each caption string gets one EDA-augmented caption, fixed for the whole run (the methods' code
augments its caption file once); each call draws a fresh SimCLR-style view of every image
(:func:`mmsec.train.simclr.augment`: crop, flip, hue-preserving jitter), as their data loaders
augment images on the fly.
"""

from __future__ import annotations

import random

import torch

from ..data.datasets import ImageTextData
from ..data.text_augment import eda


class PairViews:
    """``views(pixels, captions) -> (augmented pixels, augmented captions)`` for pairs of ``data``.

    Args:
        data: the pairs whose caption strings are augmented (all variants of every pair).
        rng: draws the EDA edits (consumed here, in the order of ``data.captions``).
        generator: draws the image views, call after call.
    """

    def __init__(self, data: ImageTextData, rng: random.Random, generator: torch.Generator):
        from .simclr import AugmentConfig

        if data.captions is None:
            raise ValueError("augmented pair views need captions: data has none")
        self.captions = {c: eda(c, rng)[0] for caps in data.captions for c in caps}
        self.generator = generator
        self.config = AugmentConfig(size=int(data.pixels.shape[-1]))

    def __call__(self, pixels: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, list[str]]:
        from .simclr import augment

        return augment(pixels, self.generator, self.config), [self.captions[c] for c in captions]


def seeded_pair_views(data: ImageTextData, seed: int) -> PairViews:
    """The views CleanCLIP and RoCLIP use: EDA drawn from ``Random(seed)``, images from seed + 1."""
    return PairViews(data, random.Random(seed), torch.Generator().manual_seed(seed + 1))


__all__ = ["PairViews", "seeded_pair_views"]
