"""The robust-evaluation ensemble as one evasion attack, so specs and leaderboards can name it.

Untargeted: :func:`mmsec.attacks.adversarial.autoattack.robust_accuracy` — APGD-CE, APGD-T (targeted DLR
over the top wrong classes) and PGD with restarts, each run on the samples still robust, as
AutoAttack does (Croce & Hein, ICML 2020); a sample counts as robust only if every attack fails.
Targeted: APGD with the targeted cross-entropy, then PGD with restarts on the samples that did
not yet reach their target; a sample succeeds if any run reaches it.

Threat model: white-box, L-inf or L2 budget ``eps`` in pixel units.

Args:
    eps: budget (default 8/255).
    norm: "linf" or "l2".
    preset: "standard" (APGD 100 steps, PGD-50 x 2 restarts) or "fast" (for tests).

Example::

    result = RobustEnsemble(eps=4/255)(ZeroShotObjective(model, zeroshot_prompts()), pixels, labels)
    robust_accuracy = 1 - result.success.float().mean()

The loss trace has one row, the objective's loss on the returned images: an ensemble has no single
optimisation path (each member's is its own).
"""

from __future__ import annotations

import torch

from ...checks import check_norm, check_radius, make_generator
from ...registry import register
from ..base import EvasionAttack, EvasionResult
from ..objectives import Objective
from .apgd import APGD
from .autoattack import robust_accuracy
from .pgd import PGD

# APGD steps, PGD steps, PGD restarts of the targeted mode, per preset (the untargeted presets are
# mmsec.attacks.adversarial.autoattack's).
_TARGETED_STEPS = {"standard": (100, 50, 2), "fast": (25, 10, 1)}


@register("attacks", "ensemble", "Robust-evaluation ensemble: APGD-CE + APGD-T (DLR) + PGD with restarts, "
          "worst case per sample (AutoAttack-style)")
class RobustEnsemble(EvasionAttack):
    """Robust-evaluation ensemble (APGD-CE, APGD-T, PGD with restarts; worst case per sample)."""

    name = "ensemble"
    paper = "Croce & Hein, ICML 2020 (AutoAttack)"
    perturbs_misclassified = False  # clean-misclassified samples are returned unperturbed (AutoAttack)

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", preset: str = "standard"):
        self.norm = check_norm(norm)
        self.eps = check_radius("eps", eps, self.norm)
        if preset not in _TARGETED_STEPS:
            raise ValueError(f"preset must be one of {tuple(_TARGETED_STEPS)}, got {preset!r}")
        self.preset = preset

    def perturb(self, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None, generator: torch.Generator | None) -> EvasionResult:

        generator = make_generator(generator)
        if targets is None:
            r = robust_accuracy(objective, pixels, labels, self.eps, self.norm, attacks=self.preset,
                                generator=generator)
            return self.result(objective, r.adv_pixels, labels, None, self._final_loss(objective, r.adv_pixels, labels, None),
                               broken_by=r.broken_by)
        apgd_steps, pgd_steps, restarts = _TARGETED_STEPS[self.preset]
        runs = [APGD(eps=self.eps, steps=apgd_steps, norm=self.norm, loss="ce")]
        runs += [PGD(eps=self.eps, alpha=self.eps / 4 if self.norm == "linf" else 2.5 * self.eps / pgd_steps,
                     steps=pgd_steps, norm=self.norm)] * restarts
        adv = pixels.clone()
        done = torch.zeros(pixels.shape[0], dtype=torch.bool)
        for attack in runs:
            todo = (~done).nonzero().flatten()
            if len(todo) == 0:
                break
            r = attack(objective, pixels[todo], labels[todo], targets[todo], generator=generator)
            adv[todo] = r.adv_pixels
            done[todo] = r.success
        return self.result(objective, adv, labels, targets, self._final_loss(objective, adv, labels, targets))

    @staticmethod
    def _final_loss(objective: Objective, adv: torch.Tensor, labels: torch.Tensor,
                    targets: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            return objective.loss(adv, labels, targets).detach()[None]  # (1, B)
