"""Projected Gradient Descent (PGD).

Paper: "Towards Deep Learning Models Resistant to Adversarial Attacks", Aleksander Madry,
Aleksandar Makelov, Ludwig Schmidt, Dimitris Tsipras, Adrian Vladu, ICLR 2018.

Threat model: white-box, gradient access; perturbation of the image within an L-inf or L2 ball
of radius ``eps`` (pixel units), images kept in [0, 1]; untargeted or targeted.

Objective: maximise the objective's per-sample loss L(x') over the ball (for a zero-shot
classifier, the cross-entropy of the true class; targeted, minus the cross-entropy of the
target, i.e. pull towards it). Starting from a random point of the ball, repeat ``steps`` times

    x' <- Proj_{ball(x, eps) and [0, 1]} ( x' + alpha * d(grad_x' L(x')) )

where d is sign(.) for L-inf and g / ||g||_2 for L2 (steepest ascent of unit norm).

Arguments (pixel units, images in [0, 1]):
    eps: budget, default 8/255 (Madry et al.'s CIFAR-10 setting, as torchattacks). For L2 the
        norm of the whole (3, H, W) perturbation, e.g. 0.5 on 32x32 images.
    alpha: step size, default 2/255 (= 2.5 * eps / steps, Madry et al.'s rule). For L2 pass
        your own, e.g. 2.5 * eps / steps.
    steps: number of gradient steps, default 10.
    norm: "linf" (default) or "l2".
    random_start: start from a random point of the ball (default True, as Madry et al.).
        L-inf: uniform in the ball; L2: random direction, radius uniform in [0, eps] (torchattacks).

Shapes: pixels (B, 3, H, W) float in [0, 1]; labels (B,) long; targets (B,) long or None.
Result: adv_pixels (B, 3, H, W), success (B,) bool, loss_trace (steps, B): the loss at each
step's iterate, before its update (step 0 is the random start).

Example (on a shipped model)::

    from mmsec.attacks import PGD, ZeroShotObjective; from mmsec.zoo import load_model
    from mmsec.data.shapes import ShapesWorld, zeroshot_prompts

    model, batch = load_model("shapes-clip-resnet"), ShapesWorld().batch("test", 0, 64)
    objective = ZeroShotObjective(model, zeroshot_prompts())
    result = PGD(eps=8/255)(objective, batch.pixels(), batch.labels, generator=0)

Departures from the paper: the loss is the objective's (not hard-wired cross-entropy); the
gradient of the *sum* of per-sample losses is used (the paper and torchattacks use the mean;
the sign and the L2 direction are the same). One restart, no early stopping: every sample runs
all steps and the final iterate is returned (not the best one seen), as in the paper.
"""

from __future__ import annotations

import logging

import torch

from ...checks import check_bool, check_int, check_norm, check_radius
from ...registry import register
from ..base import EvasionAttack, EvasionResult, check_loss
from ..objectives import Objective
from ..projection import ascent_direction, project, random_start

logger = logging.getLogger(__name__)


@register("attacks", "pgd")
class PGD(EvasionAttack):
    """PGD (Madry et al., ICLR 2018): iterated signed / L2-normalised gradient ascent, projected on the ball."""

    name = "pgd"
    paper = "Madry et al., ICLR 2018"

    def __init__(self, eps: float = 8 / 255,  # Madry et al. CIFAR-10 / torchattacks default
                 alpha: float = 2 / 255,  # 2.5 * eps / steps
                 steps: int = 10,  # Madry et al. evaluate with 7-20; torchattacks default 10
                 norm: str = "linf",
                 random_start: bool = True):  # Madry et al. start uniformly in the ball
        self.norm = check_norm(norm)
        self.eps = check_radius("eps", eps, self.norm)
        self.alpha = check_radius("alpha", alpha, self.norm)
        self.steps = check_int("steps", steps, 1)
        self.random_start = check_bool("random_start", random_start)
        if self.alpha * self.steps < self.eps:
            logger.warning("PGD: alpha * steps = %.4g < eps = %.4g, so the iterates cannot reach the edge "
                           "of the budget from the clean image; use alpha >= eps / steps (e.g. 2.5 * eps / steps)",
                           self.alpha * self.steps, self.eps)

    def perturb(self, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None, generator: torch.Generator) -> EvasionResult:
        clean = pixels.detach()  # (B, 3, H, W)
        adv = random_start(clean, self.eps, self.norm, generator) if self.random_start else clean
        losses = []
        for _ in range(self.steps):
            adv = adv.detach().requires_grad_(True)
            loss = objective.loss(adv, labels, targets)  # (B,)
            check_loss(loss, clean.shape[0])
            # Gradient w.r.t. the image only: the model's parameters never receive a .grad.
            (grad,) = torch.autograd.grad(loss.sum(), adv)  # (B, 3, H, W)
            losses.append(loss.detach())
            step = torch.add(adv.detach(), ascent_direction(grad, self.norm), alpha=self.alpha)  # x' + alpha * d
            adv = project(step, clean, self.eps, self.norm)  # back into the ball and [0, 1]
        return self.result(objective, adv, labels, targets, torch.stack(losses))  # loss_trace (steps, B)
