"""Base classes and result types of the defenses, one per call contract (one registry kind each).

A defense is configured in ``__init__`` with typed hyper-parameters whose defaults are the paper's,
then called on what it defends. Each base declares its registry kind and contract:

* :class:`HardeningDefense` (kind ``defenses``): ``defense(model, data, prompts, generator) ->
  DefenseResult`` -- adversarial fine-tuning and backdoor clean-ups that return a new model::

      defense = FARE(eps=4/255, steps=10, epochs=2)
      result = defense(model, data, prompts=prompts, generator=torch.Generator().manual_seed(0))
      robust_model = result.model          # a new object; ``model`` is left bit-for-bit unchanged

* :class:`PretrainingDefense` (kind ``pretraining_defenses``): ``defense(data, recipe, seed)`` -- no
  model to harden: it *is* the pre-training of a recipe on untrusted pairs (RoCLIP, SafeCLIP).
* :class:`RepairDefense` (kind ``repairs``): ``defense(model, bug_input, reference, validation,
  generator)`` -- patches a model from one reported misbehaving input (Mudjacking).
* :class:`ModelDetector` (kind ``model_detectors``): ``detector(model, pixels, generator)`` -- a
  verdict on a whole model: ``.flagged``, ``.score`` (higher = more suspicious), ``.threshold`` and
  the named ``.target`` (SEER).

Detectors of poisoned *samples* have their own base (:mod:`mmsec.defenses.detection.base`, kind
``detectors``). No defense mutates the model it was given; each reports what it cost.
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
registry.declare_kind("repairs", "defenses that patch a model from one reported bug input: defense(model, bug_input, "
                      "reference, validation, generator) -> result with .model, .seconds",
                      "mmsec.defenses.base:RepairDefense")
registry.declare_kind("model_detectors", "detectors of backdoored models: detector(model, pixels, generator) -> result "
                      "with .flagged, .score (higher = more suspicious), .threshold, .target",
                      "mmsec.defenses.base:ModelDetector")


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

    ``defense(data, recipe, seed=None)`` trains the recipe ``recipe`` (a zoo recipe name, e.g.
    ``"shapes-clip-resnet"``: the caller's choice, there is no default) from scratch on ``data`` (an
    :class:`~mmsec.data.datasets.ImageTextData` with captions) and returns a result with ``.model``
    (eval mode) and ``.seconds``; ``seed`` (default: the defense's own) sets the batch order and
    augmentations, so a run can be paired with undefended training on one seed.
    """

    name: ClassVar[str]
    family: ClassVar[str | None] = "contrastive"
    threat: ClassVar[str] = "backdoor"
    model_kind: ClassVar[str] = "contrastive"

    def __call__(self, data: ImageTextData, recipe: str, seed: int | None = None, quiet: bool = True) -> Any:
        raise NotImplementedError


class RepairDefense(Method):
    """Base of defenses that patch a (backdoored) model from one reported bug instance.

    ``defense(model, bug_input, reference, validation, generator)``: ``bug_input`` one misbehaving
    input (it carries the unknown trigger), ``reference`` a correctly handled input of its true
    class, ``validation`` (N, 3, H, W) clean inputs; returns a result with ``.model`` (a new object)
    and ``.seconds``.
    """

    name: ClassVar[str]
    family: ClassVar[str | None] = "contrastive"
    threat: ClassVar[str] = "backdoor"

    def __call__(self, model: nn.Module, bug_input: torch.Tensor, reference: torch.Tensor,
                 validation: torch.Tensor, generator: torch.Generator | int | None = None) -> Any:
        raise NotImplementedError


class ModelDetector(Method):
    """Base of detectors that give a verdict on a whole model (is it backdoored?).

    ``detector(model, pixels, generator)`` with a few clean images ``pixels`` (N, 3, H, W) returns a
    result with ``.flagged`` (bool), ``.score`` (float, higher = more suspicious), ``.threshold``
    (flagged when ``score >= threshold``) and ``.target`` (the named target, or None). The model is
    only read.
    """

    name: ClassVar[str]
    family: ClassVar[str | None] = "contrastive"
    threat: ClassVar[str] = "backdoor"

    def __call__(self, model: nn.Module, pixels: torch.Tensor, generator: torch.Generator | int | None = None) -> Any:
        raise NotImplementedError


__all__ = ["DefenseResult", "HardeningDefense", "ModelDetector", "PretrainingDefense", "RepairDefense"]
