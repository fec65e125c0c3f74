"""RoCLIP: Wenhan Yang, Jingdong Gao, Baharan Mirzasoleiman, "Robust Contrastive Language-Image
Pretraining against Data Poisoning and Backdoor Attacks", NeurIPS 2023
(code: github.com/BigML-CS-UCLA/RoCLIP).

Threat model defended: the defender pre-trains a CLIP from scratch on image-caption pairs of which
an unknown few are poisoned (targeted poisoning, or a trigger on images paired with the target's
captions); the defender controls the training, knows neither the trigger, the target nor the
poisoned pairs, and has no clean data of its own.

Objective: a poisoned pair is learnt because its image is pulled towards its own (adversarial)
caption. RoCLIP keeps a large pool ``P`` of caption embeddings that changes every batch (first in,
first out) and, every ``K``-th epoch, pairs each image not with its own caption but with the pool
caption nearest to the image embedding, ``nn(j) = argmax_p cos(z_j^I, z_p^T)``::

    L_RoCLIP = - 1/2N sum_j log exp(<z_j^I, z_nn(j)^T> / tau) / sum_k exp(<z_j^I, z_nn(k)^T> / tau)
               - 1/2N sum_k log exp(<z_k^I, z_nn(k)^T> / tau) / sum_j exp(<z_j^I, z_nn(k)^T> / tau)

A clean image's nearest caption describes the same content, so clean learning goes on; a poisoned
image's nearest caption describes what the image shows, not the attacker's target, so the poisoned
association is not reinforced. The other epochs train the CLIP loss. Images and captions are
augmented throughout.

Defaults (paper and code): pool = **2%** of the data set, **K = 3** (epochs 3, 6, 9, ... of
1, 2, 3, ... are RoCLIP epochs, as the code's ``epoch % break_epoch == 0``), the pool filled with the
batch's caption embeddings after each look-up (the code's memory bank ``update=True``), pool
captions detached (no gradient reaches the text encoder through them: in the code's RoCLIP epochs
the text tower learns nothing), image augmentation (random resized crop, flip, colour jitter,
grayscale, blur) and EDA caption augmentation; the rest of the training is plain CLIP
pre-training (the zoo recipe's optimiser, schedule, batch size and initialisation here).

Departures:

* Scale: the paper pre-trains on 1M CC3M pairs for 24 epochs; here the zoo recipe
  (``shapes-clip-resnet``, batch 256, lr 2e-3) for ``epochs`` (default 12) over a fixed set of
  shapes-world pairs (:func:`mmsec.train.poisoned.pretrain_pairs`).
* Pool start: the code starts its memory bank with random vectors; here, at the first RoCLIP epoch,
  with the caption embeddings of ``P`` random pairs of the data set ("a pool of random captions").
* Image augmentation: :func:`mmsec.train.simclr.augment` (crop, flip, brightness / contrast /
  saturation jitter). Hue jitter and grayscale change a shapes-world class (shape x colour) and
  blur at 32 px erases the shapes, so they are not used (as for CleanCLIP here). One fresh view per
  image per step, as the code's data loader augments on the fly.
* Caption augmentation: EDA without WordNet (:mod:`mmsec.data.text_augment`), one augmented
  caption per caption string fixed for the run (the code augments its caption file once).
"""

from __future__ import annotations

import torch
from torch import nn

from ...checks import check_budget, check_int
from ...data.datasets import ImageTextData
from ...registry import register
from ...train.contrastive import LossFn, clip_loss
from ...train.nn_pool import NearestNeighbourPool
from ...train.pair_views import seeded_pair_views
from ...train.poisoned import TrainedModel, pairs_recipe, pretrain_pairs
from ..base import PretrainingDefense


@register("pretraining_defenses", "roclip")
class RoCLIP(PretrainingDefense):
    """Pre-train a zoo CLIP from scratch on (possibly poisoned) pairs with RoCLIP:
    ``RoCLIP()(data, recipe, seed=None)``, ``recipe`` the zoo recipe to train (the caller's choice).

    Args:
        epochs: passes over the data (default 12; see the module docstring).
        period: ``K``, every ``K``-th epoch is a RoCLIP epoch (paper: 3).
        pool_fraction: pool size as a fraction of the data set (paper: 0.02).
        augment: augment images and captions (paper: yes).
        seed: default seed of the batch order, the augmentations and the pool's first captions.
    """

    name = "roclip"
    paper = "Yang, Gao, Mirzasoleiman, NeurIPS 2023"

    def __init__(self, epochs: int = 12, period: int = 3, pool_fraction: float = 0.02, augment: bool = True,
                 seed: int = 0):
        self.epochs = check_int("epochs", epochs, 1)
        self.period = check_int("period", period, 1)  # K
        self.pool_fraction = check_budget("pool_fraction", pool_fraction, 0.0, 1.0,
                                          hint=" (caption pool size as a fraction of the data set; paper 0.02)")
        if self.pool_fraction == 0:
            raise ValueError("pool_fraction must be > 0 (paper: 0.02)")
        self.augment = bool(augment)
        self.seed = check_int("seed", seed, 0)

    def roclip_epoch(self, epoch: int) -> bool:
        """Whether 1-indexed ``epoch`` matches images to pool captions."""
        return epoch % self.period == 0

    def loss_fn(self, data: ImageTextData, seed: int = 0) -> LossFn:
        n = len(data)
        pool = NearestNeighbourPool(max(1, round(self.pool_fraction * n)))
        views = seeded_pair_views(data, seed) if self.augment else None

        def start_pool(m: nn.Module) -> None:
            # "a pool of random captions": P random pairs' captions, embedded by the current model
            pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 2))[:pool.size]
            caps = [data.captions[i][0] for i in pick.tolist()]
            with torch.no_grad():
                for k in range(0, len(caps), 256):
                    pool.push(m.encode_text(m.tokenize(caps[k:k + 256])))

        def loss(m: nn.Module, pixels: torch.Tensor, captions: list[str], step: int) -> torch.Tensor:
            epoch = step * pixels.shape[0] // n + 1
            if views is not None:
                pixels, captions = views(pixels, captions)
            images = m.encode_image(pixels)
            texts = m.encode_text(m.tokenize(list(captions)))
            if not self.roclip_epoch(epoch):
                return clip_loss(images, texts, m.logit_scale)
            if len(pool) == 0:
                start_pool(m)
            matched = pool.nearest(images)  # (B, D), no gradient: the code's RoCLIP epochs train the image tower
            pool.push(texts)
            return clip_loss(images, matched, m.logit_scale)  # image j's positive: its pool neighbour

        return loss

    def __call__(self, data: ImageTextData, recipe: str, seed: int | None = None, quiet: bool = True) -> TrainedModel:
        """Pre-train the zoo recipe ``recipe`` (e.g. ``"shapes-clip-resnet"``: the caller's choice) from scratch
        on ``data`` with RoCLIP; the result's ``extras`` list the RoCLIP epochs and the pool size."""
        pairs_recipe(data, recipe)  # checked before the loss reads the captions
        seed = self.seed if seed is None else check_int("seed", seed, 0)
        out = pretrain_pairs(data, recipe, self.epochs, seed=seed, loss_fn=self.loss_fn(data, seed), quiet=quiet,
                             desc=f"RoCLIP pre-training {recipe} on {len(data)} pairs")
        out.extras.update({"defense": self.name, "period": self.period,
                           "pool_size": max(1, round(self.pool_fraction * len(data))),
                           "roclip_epochs": [e for e in range(1, self.epochs + 1) if self.roclip_epoch(e)]})
        return out


__all__ = ["RoCLIP"]
