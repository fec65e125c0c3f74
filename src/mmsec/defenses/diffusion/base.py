"""Contracts of the defenses against backdoored diffusion models, one registry kind each.

A diffusion backdoor lives in the *starting noise* ``x_T`` (BadDiffusion, TrojDiff: a
:class:`~mmsec.attacks.backdoor.diffusion_backdoor.NoiseTrigger`) or in the *prompt* (BadT2I: a
trigger word), so the defenses split by what they judge:

* :class:`DiffusionModelDetector` (kind ``diffusion_model_detectors``): ``detector(model, generator)
  -> ModelVerdict`` -- is this model backdoored? Usually by inverting a trigger on the starting noise
  (Elijah, TERD); ``.trigger`` holds the estimate, so a repair can use it.
* :class:`DiffusionInputDetector` (kind ``diffusion_input_detectors``): ``detector(model, x_T,
  prompts=None, generator) -> InputVerdict`` -- which of these starting noises (and prompts) carry a
  trigger (UFID, TERD's input detection)? Scores per row, higher = more suspicious.
* :class:`DiffusionRepair` (kind ``diffusion_repairs``): ``defense(model, images, trigger,
  generator) -> RepairResult`` -- a new model without the backdoor (Elijah's removal), from a few clean
  images and an estimated trigger (None: the defense inverts one itself).

No defense mutates the model it is given; each reports the seconds it took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ... import registry
from ...methods import Method

registry.declare_kind("diffusion_model_detectors", "detectors of backdoored diffusion models: detector(model, "
                      "generator) -> ModelVerdict(.flagged, .score, .threshold, .trigger, .seconds)",
                      "mmsec.defenses.diffusion.base:DiffusionModelDetector")
registry.declare_kind("diffusion_input_detectors", "detectors of triggered inputs of a diffusion model: "
                      "detector(model, x_T, prompts, generator) -> InputVerdict(.scores, .flagged, .threshold)",
                      "mmsec.defenses.diffusion.base:DiffusionInputDetector")
registry.declare_kind("diffusion_repairs", "backdoor removal from diffusion models: defense(model, images, trigger, "
                      "generator) -> RepairResult(.model, .trigger, .losses, .seconds)",
                      "mmsec.defenses.diffusion.base:DiffusionRepair")


@dataclass
class ModelVerdict:
    """A verdict on a whole diffusion model.

    Attributes:
        flagged: the model is judged backdoored (``score >= threshold``).
        score: higher = more suspicious (the method's own statistic).
        threshold: the decision threshold on ``score`` (the paper's, or calibrated as the method says).
        trigger: the estimated trigger on ``x_T`` (a NoiseTrigger), or None if the method estimates none.
        seconds: wall time.
        details: further statistics by name (JSON-safe floats), e.g. each criterion of a two-criterion rule.
    """

    flagged: bool
    score: float
    threshold: float
    trigger: Any | None
    seconds: float
    details: dict[str, float] = field(default_factory=dict)


@dataclass
class InputVerdict:
    """Per-input scores of a triggered-input detector.

    Attributes:
        scores: (B,) float, higher = more likely triggered.
        flagged: (B,) bool, ``scores >= threshold``.
        threshold: the decision threshold.
        seconds: wall time.
        details: further outputs (JSON-safe).
    """

    scores: torch.Tensor
    flagged: torch.Tensor
    threshold: float
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RepairResult:
    """A repaired diffusion model (a new object) and what the repair used and cost."""

    model: nn.Module
    trigger: Any | None  # the trigger the repair removed (estimated or given)
    losses: list[float]
    seconds: float
    params: dict[str, Any]
    details: dict[str, float] = field(default_factory=dict)


class DiffusionModelDetector(Method):
    """Base of model-level backdoor detectors for diffusion models (see the module docstring)."""

    family: ClassVar[str | None] = "diffusion"
    threat: ClassVar[str] = "backdoor"

    def __call__(self, model: Any, generator: torch.Generator | None = None) -> ModelVerdict:
        raise NotImplementedError


class DiffusionInputDetector(Method):
    """Base of triggered-input detectors for diffusion models (see the module docstring).

    ``x_T``: (B, C, S, S) starting noises in the model's working space; ``prompts``: None for an
    unconditional model, or B prompts (a text trigger lives there)."""

    family: ClassVar[str | None] = "diffusion"
    threat: ClassVar[str] = "backdoor"

    def __call__(self, model: Any, x_T: torch.Tensor, prompts: list[str] | None = None,
                 generator: torch.Generator | None = None) -> InputVerdict:
        raise NotImplementedError


class DiffusionRepair(Method):
    """Base of backdoor removal for diffusion models (see the module docstring).

    ``images``: (N, 3, H, W) clean images in [0, 1] the defender holds (may be few); ``trigger``: the
    estimated NoiseTrigger, or None for the defense to estimate its own."""

    family: ClassVar[str | None] = "diffusion"
    threat: ClassVar[str] = "backdoor"

    def __call__(self, model: Any, images: torch.Tensor | None, trigger: Any | None = None,
                 generator: torch.Generator | None = None) -> RepairResult:
        raise NotImplementedError


__all__ = ["DiffusionInputDetector", "DiffusionModelDetector", "DiffusionRepair", "InputVerdict", "ModelVerdict",
           "RepairResult"]
