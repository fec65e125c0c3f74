"""Base class and result type of evasion attacks (the contract every later attack follows).

An evasion attack is configured in ``__init__`` with typed hyper-parameters whose defaults are
the paper's, then called on an objective (what to optimise, see :mod:`mmsec.attacks.objectives`)
and data::

    attack = PGD(eps=4/255, steps=10)
    result = attack(objective, pixels, labels)            # untargeted
    result = attack(objective, pixels, labels, targets)   # targeted

It never mutates its inputs or the model, returns pixels in [0, 1] inside the budget, and
reports per-sample success and a per-step loss trace. Every random choice is drawn from the
``generator`` given to ``__call__`` (an int seeds a fresh one; ``None`` means seed 0), so the
same seed gives the same adversarial images.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..models.base import check_pixels
from .objectives import Objective

NORMS = ("linf", "l2")


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


class EvasionAttack:
    """Base of all evasion attacks. Subclasses implement :meth:`perturb`."""

    name: ClassVar[str]
    threat_model: ClassVar[str] = "white-box"
    norms: ClassVar[tuple[str, ...]] = NORMS
    # False for evaluation ensembles that, like AutoAttack, leave already-misclassified images clean.
    perturbs_misclassified: ClassVar[bool] = True

    def params(self) -> dict[str, Any]:
        """The ``__init__`` arguments as configured (recorded with every result)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __call__(self, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                 targets: torch.Tensor | None = None,
                 generator: torch.Generator | int | None = None) -> EvasionResult:
        check_objective(objective)
        check_pixels(pixels)
        _check_indices("labels", labels, pixels.shape[0])
        if targets is not None:
            _check_indices("targets", targets, pixels.shape[0])
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


def _check_indices(name: str, values: object, batch: int) -> None:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(values).__name__}")
    if values.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one index per image), got {tuple(values.shape)}")
    if values.is_floating_point() or values.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices (torch.long), got dtype {values.dtype}")


def make_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A ``torch.Generator`` from a generator (returned as is), an int seed, or ``None`` (seed 0)."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


def check_budget(name: str, value: float, low: float = 0.0, high: float = 1.0, hint: str | None = None) -> float:
    """Validate a finite scalar hyper-parameter in [low, high] with a teaching error."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        if hint is None:
            hint = f" (pixel units, e.g. 8/255 = {8/255:.4f})"
        raise ValueError(f"{name} must be a finite number in [{low}, {high}]{hint}, got {value}")
    return float(value)


def check_positive(name: str, value: float, high: float, hint: str | None = None) -> float:
    """:func:`check_budget` in (0, high]: a learning rate or a step that must not be zero."""
    value = check_budget(name, value, 0.0, high, hint=hint)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got 0")
    return value


def check_norm(norm: object, allowed: tuple[str, ...] = NORMS) -> str:
    """Validate the threat-model norm name."""
    if not isinstance(norm, str):
        raise TypeError(f"norm must be a string, one of {allowed}, got {type(norm).__name__} {norm!r}")
    if norm not in allowed:
        raise ValueError(f"norm must be one of {allowed}, got {norm!r}")
    return norm


def check_radius(name: str, value: float, norm: str) -> float:
    """Validate a radius or step size in pixel units: in [0, 1] for L-inf, >= 0 for L2."""
    if norm == "linf":
        return check_budget(name, value, 0.0, 1.0)
    return check_budget(name, value, 0.0, math.inf,
                        hint=" (L2 norm of the whole perturbation in pixel units, e.g. 0.5 on 3x32x32)")


def check_int(name: str, value: int, low: int = 1) -> int:
    """Validate an integer hyper-parameter >= low."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return value


def check_bool(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value
