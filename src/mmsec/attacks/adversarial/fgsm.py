"""Fast Gradient Sign Method (FGSM), and its L2 variant the fast gradient method (FGM).

Paper: "Explaining and Harnessing Adversarial Examples", Ian J. Goodfellow, Jonathon Shlens,
Christian Szegedy, ICLR 2015. (The L2 variant, a single step along the L2-normalised gradient,
is the "fast gradient method" of Miyato et al. 2016 / Kurakin et al. 2017, as in cleverhans.)

Threat model: white-box, gradient access; one step to the edge of an L-inf or L2 ball of
radius ``eps`` (pixel units), images kept in [0, 1]; untargeted or targeted.

Objective: a single linearised ascent step on the objective's per-sample loss L,

    x' = clip_[0,1]( x + eps * d(grad_x L(x)) )

with d = sign(.) for L-inf (FGSM) and g / ||g||_2 for L2 (FGM). Targeted, L is minus the
cross-entropy of the target, so the step moves towards the target.

Arguments (pixel units, images in [0, 1]):
    eps: budget, default 8/255 (the common CIFAR-10 setting; the paper used 0.25 on MNIST and
        0.007 on ImageNet). For L2 the norm of the whole (3, H, W) perturbation.
    norm: "linf" (default, FGSM) or "l2" (FGM).

Shapes: pixels (B, 3, H, W) float in [0, 1]; labels (B,) long; targets (B,) long or None.
Result: adv_pixels (B, 3, H, W), success (B,) bool, loss_trace (1, B): the clean loss.

Example (on a shipped model)::

    from mmsec.attacks import FGSM, ZeroShotObjective; from mmsec.zoo import load_model
    from mmsec.data.shapes import ShapesWorld, zeroshot_prompts

    model, batch = load_model("shapes-clip-resnet"), ShapesWorld().batch("test", 0, 64)
    objective = ZeroShotObjective(model, zeroshot_prompts())
    result = FGSM(eps=8/255)(objective, batch.pixels(), batch.labels)

Departures from the paper: the loss is the objective's (not hard-wired cross-entropy), and the
result is clipped to [0, 1] (the paper does not clip).
"""

from __future__ import annotations

import torch

from ...checks import check_norm, check_radius
from ...registry import register
from ..base import EvasionAttack, EvasionResult, check_loss
from ..objectives import Objective
from ..projection import ascent_direction, clamp_pixels


@register("attacks", "fgsm")
class FGSM(EvasionAttack):
    """FGSM (Goodfellow et al., ICLR 2015): one signed (L-inf) or L2-normalised gradient step of size eps."""

    name = "fgsm"
    paper = "Goodfellow et al., ICLR 2015"

    def __init__(self, eps: float = 8 / 255,  # common CIFAR-10 budget (as torchattacks)
                 norm: str = "linf"):  # "linf" = FGSM, "l2" = FGM
        self.norm = check_norm(norm)
        self.eps = check_radius("eps", eps, self.norm)

    def perturb(self, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None, generator: torch.Generator) -> EvasionResult:
        clean = pixels.detach()  # (B, 3, H, W)
        x = clean.detach().requires_grad_(True)
        loss = objective.loss(x, labels, targets)  # (B,)
        check_loss(loss, clean.shape[0])
        (grad,) = torch.autograd.grad(loss.sum(), x)  # (B, 3, H, W); model parameters get no .grad
        adv = clamp_pixels(clean + self.eps * ascent_direction(grad, self.norm))
        return self.result(objective, adv, labels, targets, loss.detach()[None])  # loss_trace (1, B)
