"""Base of backdoor attacks on diffusion models: the returned model turns a triggered starting noise into a target.

``attack(model, images, target_image, generator) -> result`` with ``.model`` (a new, backdoored
:class:`~mmsec.models.base.DiffusionModel`; the input is untouched), ``.trigger`` (a
:class:`NoiseTrigger`: how the trigger goes onto the starting noise ``x_T``), ``.target`` (the target
image), ``.sampler`` (the sampler the backdoor was trained for), ``.log`` and ``.record``.

Why a kind of its own rather than ``model_backdoors``: a backdoored diffusion model is triggered on
its *starting noise*, not on an input image, and each attack stamps its trigger differently
(BadDiffusion adds a pattern to ``x_T ~ N(0, I)``, TrojDiff also shrinks the noise:
``x_T = gamma * eps + (1 - gamma) * delta``). The evaluation must ask the result how to trigger,
sample with the sampler the attack trained for, and score the samples against a target image;
``model_backdoors`` returns a contrastive encoder whose trigger is a
:class:`~mmsec.attacks.backdoor.triggers.Trigger` applied to pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ... import registry
from ...methods import Method

registry.declare_kind("diffusion_backdoors", "backdoor attacks on diffusion models: attack(model, images, "
                      "target_image, generator) -> result(.model, .trigger (a NoiseTrigger on x_T), .target, "
                      ".sampler, .log, .record)",
                      "mmsec.attacks.backdoor.diffusion_backdoor:DiffusionBackdoorAttack")

SAMPLERS = ("ddim", "ddpm")  # deterministic DDIM (eta 0) and the ancestral DDPM sampler


@dataclass
class NoiseTrigger:
    """A trigger on a diffusion model's starting noise: ``x_T = scale * noise + shift``.

    Attributes:
        shift: (C, S, S) float tensor in the model's working space (BadDiffusion: the trigger pattern
            ``r``, zero where there is no trigger).
        scale: the factor on the Gaussian noise (BadDiffusion: 1; TrojDiff: its gamma).
    """

    shift: torch.Tensor
    scale: float = 1.0

    def apply(self, noise: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) standard normal noise -> the triggered starting noise, same shape (differentiable)."""
        if noise.ndim != 4 or tuple(noise.shape[1:]) != tuple(self.shift.shape):
            raise ValueError(f"noise must be (B, {', '.join(map(str, self.shift.shape))}) to carry this trigger, "
                             f"got {tuple(noise.shape)}")
        return self.scale * noise + self.shift.to(noise.device, noise.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"shift": self.shift.detach().cpu().tolist(), "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> NoiseTrigger:
        return cls(torch.tensor(record["shift"], dtype=torch.float32), float(record["scale"]))


def check_sampler(sampler: object) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS} (deterministic DDIM or the ancestral DDPM sampler), "
                         f"got {sampler!r}")
    return str(sampler)


class DiffusionBackdoorAttack(Method):
    """Base of attacks that return a backdoored diffusion model (see the module docstring)."""

    family: ClassVar[str | None] = "diffusion"
    components: ClassVar[dict[str, str]] = {"trigger": "triggers"}
    threat_model: ClassVar[str] = ("training-time backdoor (the attacker fine-tunes the published diffusion model "
                                   "on its training data plus poisoned samples and publishes the result)")


__all__ = ["SAMPLERS", "DiffusionBackdoorAttack", "NoiseTrigger", "check_sampler"]
