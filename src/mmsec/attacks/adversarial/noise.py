"""Uniform random noise of a given budget: the baseline every evasion attack must beat.

Reference: the random-noise control used throughout the adversarial-examples literature, e.g.
Szegedy et al., "Intriguing properties of neural networks", ICLR 2014, and Goodfellow, Shlens,
Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015 (noise of the same norm
barely changes predictions while a gradient step of that norm flips them).

Threat model: black-box, no model access; a random perturbation in the same L-inf or L2 ball as
the attack it is compared with, images kept in [0, 1].

Objective: none is optimised. L-inf: each pixel gets independent noise uniform in [-eps, eps].
L2: a uniformly random direction (a normalised Gaussian) scaled to norm exactly ``eps``. The
result is clipped to [0, 1] (which can only shrink the perturbation).

Arguments (pixel units, images in [0, 1]):
    eps: budget, default 8/255 (matching PGD's default). For L2 the norm of the whole (3, H, W)
        perturbation.
    norm: "linf" (default) or "l2".

Shapes: pixels (B, 3, H, W) float in [0, 1]; labels (B,) long; targets (B,) long or None.
Result: adv_pixels (B, 3, H, W), success (B,) bool, loss_trace (1, B): the objective's loss of
the noisy images (so it is comparable with an attack's final losses).

Example (on a shipped model)::

    from mmsec.attacks import UniformNoise, ZeroShotObjective; from mmsec.zoo import load_model
    from mmsec.data.shapes import ShapesWorld, zeroshot_prompts

    model, batch = load_model("shapes-clip-resnet"), ShapesWorld().batch("test", 0, 64)
    objective = ZeroShotObjective(model, zeroshot_prompts())
    result = UniformNoise(eps=8/255)(objective, batch.pixels(), batch.labels, generator=0)

Departures: none (a baseline, not a paper's method).
"""

from __future__ import annotations

import torch

from ...checks import check_norm, check_radius
from ...registry import register
from ..base import EvasionAttack, EvasionResult, check_loss
from ..objectives import Objective
from ..projection import clamp_pixels, random_delta


@register("attacks", "noise")
class UniformNoise(EvasionAttack):
    """Random-noise baseline: uniform L-inf noise, or a random L2 direction of norm eps, clipped to [0, 1]."""

    name = "noise"
    threat_model = "black-box"

    def __init__(self, eps: float = 8 / 255,  # same budget as PGD's default
                 norm: str = "linf"):
        self.norm = check_norm(norm)
        self.eps = check_radius("eps", eps, self.norm)

    def perturb(self, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None, generator: torch.Generator) -> EvasionResult:
        clean = pixels.detach()  # (B, 3, H, W)
        delta = random_delta(clean, self.eps, self.norm, generator, radius="sphere")  # (B, 3, H, W)
        adv = clamp_pixels(clean + delta)
        with torch.no_grad():  # the trace only records the loss; nothing is optimised
            loss = objective.loss(adv, labels, targets)  # (B,)
        check_loss(loss, clean.shape[0])
        return self.result(objective, adv, labels, targets, loss.detach()[None])  # loss_trace (1, B)
