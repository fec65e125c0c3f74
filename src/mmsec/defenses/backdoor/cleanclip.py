"""CleanCLIP: Hritik Bansal, Nishad Singhi, Yu Yang, Fan Yin, Aditya Grover, Kai-Wei Chang,
"CleanCLIP: Mitigating Data Poisoning Attacks in Multimodal Contrastive Learning", ICCV 2023
(code: github.com/nishadsinghi/CleanCLIP).

Threat model defended: a CLIP whose pre-training data held poisoned pairs (a trigger on images
paired with the target's captions); the defender does not know the trigger, the target or which
pairs were poisoned, and holds a clean image-caption set (the paper: 100K clean CC3M pairs) to
fine-tune the whole model on.

Objective: the poisoned model has learnt a spurious alignment of the trigger with the target's
text; CleanCLIP re-learns each modality on its own while keeping the cross-modal alignment::

    L = lambda1 * L_CLIP(I, T) + lambda2 * L_SS
    L_SS = ( CE(s * I I~^T) + CE(s * T T~^T) ) / 2

where ``I, T`` are the normalised image and text embeddings of a batch of clean pairs, ``I~, T~`` those
of an augmented view of each image and each caption, ``s`` the model's logit scale and ``CE`` the
cross-entropy whose target is each row's own partner (the code's ``inmodal`` term: a view is told
apart from the other images' views). Fine-tuning on the clean pairs with this loss pulls a
triggered image towards its own augmentations and its clean content, away from the target's text.

Defaults (the code's README command and ``train.py``): ``lambda1 = lambda2 = 1`` (``clip_weight``,
``inmodal_weight``), batch 64, 10 epochs, AdamW (the code's weight decay 0.1), lr 1e-5 with 50
warm-up steps and cosine decay, the whole model trained, one EDA-augmented caption per pair fixed
for the whole run (``utils/augment_text.py``), one augmented view per image.

Departures:

* Scale and learning rate. 10 epochs of 100K pairs at batch 64 is ~15,600 steps at lr 1e-5 on a
  100M-parameter CLIP. The zoo's models have 0.4M parameters and a spec's defense data has 2,000
  pairs: the default here is ``steps = 300`` at ``lr = 1e-4`` (the project's gentle fine-tuning
  setting, equal to ``clean_finetune``'s, so the two differ only in the loss), warm-up 10% of
  the steps, gradient clipping 1 (as every zoo training).
* Image augmentation. The code applies torchvision's AutoAugment (ImageNet policy: posterize,
  solarize, colour, invert, shear, ...). torchvision is not installed beside the CPU torch, and
  colour operations change a shapes-world class (shape x colour). The augmentation here is
  SimCLR's as :func:`mmsec.train.simclr.augment` does it (random resized crop, flip, brightness /
  contrast jitter that keeps hue), a fresh view each step.
* Text augmentation. EDA without WordNet (:func:`mmsec.data.text_augment.eda`): only random swap
  and deletion change a shapes-world caption.

Shapes: ``data.pixels`` (N, 3, H, W) in [0, 1] with captions; labels and prompts are not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_budget
from ...data.datasets import ImageTextData
from ...registry import register
from ...train.contrastive import LossFn
from .clean_finetune import CleanFineTune


def inmodal_loss(emb: torch.Tensor, aug_emb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CE of ``scale * cos`` logits in which row ``i``'s partner is its own augmented view ``i``."""
    logits = scale * F.normalize(emb, dim=-1) @ F.normalize(aug_emb, dim=-1).T  # (B, B)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


@register("defenses", "cleanclip")
class CleanCLIP(CleanFineTune):
    """Fine-tune a copy of a (suspect) CLIP with the CLIP loss plus unimodal self-supervised terms
    (the training itself is :class:`CleanFineTune`'s; only the loss differs).

    Args:
        steps: training batches (default 300; see the module docstring).
        batch_size: pairs per batch (paper: 64).
        lr: AdamW learning rate (paper: 1e-5 for a 100M-parameter CLIP; default 1e-4 here).
        lambda1: weight of the multimodal CLIP loss (paper: 1).
        lambda2: weight of the unimodal self-supervised loss (paper: 1).
        weight_decay: AdamW decoupled weight decay (code: 0.1).
    """

    name = "cleanclip"
    paper = "Bansal et al., ICCV 2023"

    def __init__(self, steps: int = 300, batch_size: int = 64, lr: float = 1e-4, lambda1: float = 1.0,
                 lambda2: float = 1.0, weight_decay: float = 0.1):
        super().__init__(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay)
        self.lambda1 = check_budget("lambda1", lambda1, 0.0, 1e3, hint=" (weight of the CLIP loss; paper 1)")
        self.lambda2 = check_budget("lambda2", lambda2, 0.0, 1e3, hint=" (weight of the unimodal loss; paper 1)")

    def loss_fn(self, data: ImageTextData, seed: int) -> LossFn:
        from ...train.contrastive import clip_loss
        from ...train.pair_views import seeded_pair_views

        if data.captions is None:
            raise ValueError("CleanCLIP fine-tunes on image-caption pairs: data has no captions")
        views = seeded_pair_views(data, seed)  # one EDA caption per caption for the run, fresh image views

        def loss(m: nn.Module, pixels: torch.Tensor, captions: list[str], step: int) -> torch.Tensor:
            n = pixels.shape[0]
            aug_pixels, aug_captions = views(pixels, captions)
            images = m.encode_image(torch.cat([pixels, aug_pixels]))  # (2B, D)
            texts = m.encode_text(m.tokenize(list(captions) + aug_captions))  # (2B, D)
            scale = m.logit_scale
            multimodal = clip_loss(images[:n], texts[:n], scale)
            unimodal = (inmodal_loss(images[:n], images[n:], scale) + inmodal_loss(texts[:n], texts[n:], scale)) / 2
            return self.lambda1 * multimodal + self.lambda2 * unimodal

        return loss


__all__ = ["CleanCLIP", "inmodal_loss"]
