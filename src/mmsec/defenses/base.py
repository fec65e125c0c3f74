"""Base class and result type of defenses that harden a model (the contract later defenses follow).

A hardening defense is configured in ``__init__`` with typed hyper-parameters whose defaults
are the paper's, then called on a model and training data::

    defense = FARE(eps=4/255, steps=10, epochs=2)
    result = defense(model, data, prompts=zeroshot_prompts(), generator=torch.Generator().manual_seed(0))
    robust_model = result.model          # a new object; ``model`` is left bit-for-bit unchanged

It never mutates the model it was given (it trains a deep copy) and reports what it cost.
A pre-training defense (:class:`PretrainingDefense`: RoCLIP, SafeCLIP) has no model to harden: it
*is* the pre-training of a zoo recipe on untrusted pairs and returns the model it trained.
Detectors have their own base returning scores (:mod:`mmsec.defenses.detection`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .. import registry
from ..data.datasets import ImageTextData
from ..methods import Method
from ..models.base import require_contrastive


@dataclass
class DefenseResult:
    """What a hardening defense returns.

    Attributes:
        model: the hardened model (a new object), or the original model when only a prompt is learnt.
        losses: training loss per optimisation step.
        seconds: wall time of the defense's training.
        steps: optimisation steps taken.
        params: the defense's hyper-parameters (for the results store).
        extras: method-specific outputs (e.g. learnt prompt context vectors, class embeddings).
    """

    model: nn.Module
    losses: list[float]
    seconds: float
    steps: int
    params: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)


registry.declare_kind("defenses", "defenses that return a new model: defense(model, data, prompts, generator) -> "
                      "DefenseResult (adversarial fine-tuning, backdoor clean-ups)", "mmsec.defenses.base:HardeningDefense")
registry.declare_kind("pretraining_defenses", "defenses that are the pre-training itself on untrusted pairs: "
                      "defense(data, recipe, seed) -> result with .model", "mmsec.defenses.base:PretrainingDefense")


class HardeningDefense(Method):
    """Base of defenses that return a hardened model. Subclasses implement :meth:`harden`."""

    name: ClassVar[str]
    family: ClassVar[str | None] = "contrastive"
    needs_labels: ClassVar[bool] = True  # supervised (TeCoA, AdvPT) vs unsupervised (FARE)
    model_kind: ClassVar[str] = "contrastive"  # what it hardens: any ContrastiveModel, or "fusion" (VILLA)
    threat: ClassVar[str] = "evasion"  # what it defends against: "evasion" (adversarial examples) or "backdoor"

    def __call__(self, model: nn.Module, data: ImageTextData, prompts: list[list[str]] | None = None,
                 generator: torch.Generator | None = None) -> DefenseResult:
        require_contrastive(model, type(self).__name__)
        if not isinstance(data, ImageTextData):
            raise TypeError(f"data must be an ImageTextData (mmsec.data.load_dataset returns one), "
                            f"got {type(data).__name__}")
        if self.needs_labels and data.labels is None:
            raise ValueError(f"{type(self).__name__} is supervised: data must have labels")
        if self.needs_labels and prompts is None:
            raise ValueError(f"{type(self).__name__} needs prompts: for each class, its prompt strings")
        if prompts is not None and data.labels is not None and int(data.labels.max()) >= len(prompts):
            raise ValueError(f"labels go up to {int(data.labels.max())} but only {len(prompts)} classes have prompts")
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        return self.harden(model, data, prompts, generator)

    def harden(self, model: nn.Module, data: ImageTextData, prompts: list[list[str]] | None,
               generator: torch.Generator) -> DefenseResult:
        raise NotImplementedError


class PretrainingDefense(Method):
    """Base of defenses that replace a CLIP's pre-training on (possibly poisoned) pairs.

    ``defense(data, recipe="shapes-clip-resnet", seed=None)`` trains the zoo recipe from scratch on
    ``data`` (an :class:`~mmsec.data.datasets.ImageTextData` with captions) and returns a result
    with ``.model`` (eval mode) and ``.seconds``; ``seed`` (default: the defense's own) sets the
    batch order and augmentations, so a run can be paired with undefended training on one seed.
    """

    name: ClassVar[str]
    family: ClassVar[str | None] = "contrastive"
    threat: ClassVar[str] = "backdoor"
    model_kind: ClassVar[str] = "contrastive"
