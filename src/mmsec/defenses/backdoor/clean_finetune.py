"""Clean fine-tuning: the first check of a backdoor's persistence, and the baseline of every
fine-tuning defense (CleanCLIP, Bansal et al. ICCV 2023, compare against it as "fine-tuning with
the CLIP loss only", their Table 1 "FT").

Threat model defended: a CLIP whose training data held poisoned pairs (the defender does not know
which, nor the trigger); the defender has a set of clean image-caption pairs and a training
budget. Objective: the symmetric CLIP loss (InfoNCE over the batch) on the clean pairs only, so
that the clean pairs' alignment is reinforced and, with luck, the trigger's spurious association
with the target's captions fades. It is :func:`mmsec.train.poisoned.clean_finetune` wrapped as a
registered defense (``clean_finetune``), so a spec can put it beside the other clean-ups.

Defaults (the project's fine-tuning of the zoo models, not a paper's): ``steps`` 300 batches of
``batch_size`` 64 at ``lr`` 1e-4 (AdamW, weight decay 0.1, warm-up 10% of the steps, cosine decay,
gradient clipping 1), the whole model trained. CleanCLIP's authors fine-tune 10 epochs of 100K
clean CC3M pairs at lr 1e-5, batch 128: a smaller step for a 100M-parameter model; on the zoo's
0.4M-parameter models 1e-4 is the gentle setting and 1e-3 the aggressive one
(``recipes/badclip_persistence.yaml`` measures both).

Data: ``data`` must have captions (``ImageTextData``; a spec's default defense data, 2,000 shapes
world train scenes, has them); labels and prompts are not used.
"""

from __future__ import annotations

import torch
from torch import nn

from ...checks import check_budget, check_int, check_positive
from ...data.datasets import ImageTextData
from ...registry import register
from ...train.contrastive import LossFn, pair_clip_loss
from ..base import DefenseResult, HardeningDefense


@register("defenses", "clean_finetune")
class CleanFineTune(HardeningDefense):
    """Fine-tune a copy of the (suspect) model on clean image-caption pairs with the CLIP loss.

    Args:
        steps: training batches (default 300).
        batch_size: pairs per batch (default 64).
        lr: AdamW learning rate (default 1e-4).
        weight_decay: AdamW decoupled weight decay (default 0.1, as the zoo's training).
    """

    name = "clean_finetune"
    paper = "Bansal et al., ICCV 2023 (their fine-tuning baseline)"
    needs_labels = False
    threat = "backdoor"

    def __init__(self, steps: int = 300, batch_size: int = 64, lr: float = 1e-4, weight_decay: float = 0.1):
        self.steps = check_int("steps", steps, 1)
        self.batch_size = check_int("batch_size", batch_size, 2)
        self.lr = check_positive("lr", lr, 1.0, hint=" (AdamW learning rate, e.g. 1e-4)")
        self.weight_decay = check_budget("weight_decay", weight_decay, 0.0, 10.0,
                                         hint=" (AdamW decoupled weight decay)")

    def loss_fn(self, data: ImageTextData, seed: int) -> LossFn:
        """The training loss (the CLIP loss here; fine-tuning defenses such as CleanCLIP add terms)."""
        return pair_clip_loss

    def harden(self, model: nn.Module, data: ImageTextData, prompts: list[list[str]] | None,
               generator: torch.Generator) -> DefenseResult:
        from ...train.poisoned import finetune_pairs

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        run = finetune_pairs(model, data, self.steps, batch_size=self.batch_size, lr=self.lr, seed=seed,
                             weight_decay=self.weight_decay, desc=self.name, loss_fn=self.loss_fn(data, seed))
        return DefenseResult(model=run.model, losses=list(run.log.losses), seconds=run.log.seconds,
                             steps=self.steps, params=self.params(), extras={"seed": seed})


__all__ = ["CleanFineTune"]
