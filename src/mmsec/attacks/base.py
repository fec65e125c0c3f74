"""Base class and result type of evasion attacks (the contract every later attack follows).

An evasion attack is configured in ``__init__`` with typed hyper-parameters whose defaults are
the paper's, then called on an objective (what to optimise, see :mod:`mmsec.attacks.objectives`)
and data::

    attack = PGD(eps=4/255, steps=10)
    result = attack(objective, pixels, labels)            # untargeted
    result = attack(objective, pixels, labels, targets)   # targeted

The objective owns what a label and a target are (class indices for zero-shot classification, a
caption index for retrieval, a token sequence for a chat model) and checks them. The attack never
mutates its inputs or the model, returns pixels in [0, 1] inside the budget, and
reports per-sample success and a per-step loss trace. Every random choice is drawn from the
``generator`` given to ``__call__`` (an int seeds a fresh one; ``None`` means seed 0), so the
same seed gives the same adversarial images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .. import registry
from ..checks import NORMS, check_indices, check_pixels, make_generator
from ..methods import Method
from .objectives import Objective

registry.declare_kind("attacks", "evasion attacks on images: attack(objective, pixels, labels, targets, generator) "
                      "-> EvasionResult", "mmsec.attacks.base:EvasionAttack")


@dataclass
class EvasionResult:
    """What an evasion attack returns.

    Attributes:
        adv_pixels: (B, 3, H, W) adversarial images in [0, 1], same dtype and device as the input.
        success: (B,) bool, the objective's verdict on the final adversarial images.
        loss_trace: (steps, B) the objective's per-sample loss at each step (before the update).
        params: the attack's hyper-parameters (for the results store).
        extras: method-specific outputs (a patch, a prompt, ...).
    """

    adv_pixels: torch.Tensor
    success: torch.Tensor
    loss_trace: torch.Tensor
    params: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return self.success.float().mean().item() if self.success.numel() else 0.0


class EvasionAttack(Method):
    """Base of all evasion attacks. Subclasses implement :meth:`perturb`."""

    name: ClassVar[str]
    family: ClassVar[str | None] = "any"  # it reaches the model through the objective, whatever its family
    threat_model: ClassVar[str] = "white-box"
    norms: ClassVar[tuple[str, ...]] = NORMS
    # False for evaluation ensembles that, like AutoAttack, leave already-misclassified images clean.
    perturbs_misclassified: ClassVar[bool] = True

    def __call__(self, objective: Objective, pixels: torch.Tensor, labels: Any,
                 targets: Any = None,
                 generator: torch.Generator | int | None = None) -> EvasionResult:
        check_objective(objective)
        check_pixels(pixels)
        check_targets = getattr(objective, "check_targets", None)
        if callable(check_targets):  # the objective knows what its labels and targets are
            check_targets(labels, targets, pixels.shape[0])
        else:
            check_indices("labels", labels, pixels.shape[0])
            if targets is not None:
                check_indices("targets", targets, pixels.shape[0])
        return self.perturb(objective, pixels.detach(), labels, targets, make_generator(generator))

    def perturb(self, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None, generator: torch.Generator) -> EvasionResult:
        raise NotImplementedError

    def result(self, objective: Objective, adv_pixels: torch.Tensor, labels: torch.Tensor,
               targets: torch.Tensor | None, loss_trace: torch.Tensor, **extras: Any) -> EvasionResult:
        """Package the final adversarial images: one gradient-free forward for the verdict."""
        with torch.no_grad():  # the verdict is a bool; nothing differentiates through it
            success = objective.success(adv_pixels, labels, targets).bool()
        return EvasionResult(adv_pixels.detach(), success, loss_trace, self.params(), dict(extras))


def check_objective(objective: object) -> None:
    """Fail with a teaching error unless ``objective`` is an attack objective on an eval-mode model."""
    if not (callable(getattr(objective, "loss", None)) and callable(getattr(objective, "success", None))):
        raise TypeError(f"objective must be an attack objective with loss() and success() (e.g. "
                        f"ZeroShotObjective(model, prompts)), got {type(objective).__name__}; "
                        "an attack is called on an objective, not on the model itself")
    model = getattr(objective, "model", None)
    if isinstance(model, torch.nn.Module) and model.training:
        # Attacking in training mode would update BatchNorm statistics (mutating the model) and
        # attack a dropout-randomised network.
        raise ValueError(f"the objective's model ({type(model).__name__}) is in training mode; "
                         "call model.eval() before attacking it")


def check_loss(loss: torch.Tensor, batch: int) -> None:
    """Fail with a teaching error unless an objective returned a per-sample (B,) loss."""
    if not isinstance(loss, torch.Tensor) or loss.shape != (batch,):
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"objective.loss must return a per-sample loss of shape ({batch},), got {shape}; "
                         "use reduction='none'")
















