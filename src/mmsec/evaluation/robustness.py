"""Checks that a robustness evaluation is not fooled by gradient masking (the ensemble it audits,
``robust_accuracy``, is :mod:`mmsec.attacks.adversarial.autoattack`: an attack, re-exported here).

References:
    - Francesco Croce, Matthias Hein, "Reliable evaluation of adversarial robustness with an
      ensemble of diverse parameter-free attacks", ICML 2020 (AutoAttack: APGD-CE, APGD-T, FAB-T,
      Square; a sample is robust only if every attack fails on it).
    - Nicholas Carlini, Anish Athalye, Nicolas Papernot, Wieland Brendel, Jonas Rauber, Dimitris
      Tsipras, Ian Goodfellow, Aleksander Madry, Alexey Kurakin, "On Evaluating Adversarial
      Robustness", arXiv:1902.06705, 2019 (the checklist the masking checks follow).
    - Anish Athalye, Nicholas Carlini, David Wagner, "Obfuscated Gradients Give a False Sense of
      Security: Circumventing Defenses to Adversarial Examples", ICML 2018.

Threat model: white-box (the ensemble) plus black-box score queries (Square, in the checks);
a perturbation within an L-inf or L2 ball of radius ``eps`` (pixel units), images in [0, 1];
untargeted: a sample counts as robust when the objective still gets it right.

``robust_accuracy`` runs an ensemble of attacks and reports, per sample, whether it is correct
under EVERY attack (the worst case over the ensemble). As in AutoAttack, each attack only runs on
the samples that are still robust (``individual=False``): the worst case is the same as running
all of them on every sample, at a fraction of the cost; ``per_attack`` then gives the robust
accuracy after each attack (AutoAttack's log). With ``individual=True`` every attack runs on every
clean-correct sample and ``per_attack`` gives each attack's own robust accuracy.

The ensembles (``attacks=`` a preset name, or your own list):

    "standard"  APGD-CE (100 steps, 1 restart) -> APGD-T (targeted DLR, 100 steps, against each of
                the 3 highest-scoring wrong classes in turn) -> PGD-50 (alpha = 2.5 eps / 50,
                2 random restarts).
    "fast"      APGD-CE (25 steps) -> APGD-T (25 steps, 2 target classes) -> PGD-10 (alpha = 2.5 eps / 10).
                For tests and quick looks: it can overstate robustness; report "standard".

Relation to AutoAttack's standard version (APGD-CE, APGD-T with 9 target classes, FAB-T with 9,
Square with 5,000 queries): the two APGD attacks are the same algorithm and defaults; APGD-T
uses 3 target classes instead of 9 (on CPU, and CLIP zero-shot heads have many classes of which
only the top few are plausible targets); FAB-T (a minimum-norm attack; in the AutoAttack
paper's experiments it changes the result little once APGD-CE and APGD-T have run) is not included; Square runs as the black-box
check of :func:`gradient_masking_checks` rather than inside the ensemble (add it with
``attacks=[..., EnsembleMember("square", SquareAttack(eps=eps, n_queries=5000))]`` for an
AutoAttack-like ensemble); and a PGD with restarts is added as the baseline reviewers expect.
APGD-T here, as in AutoAttack, counts a sample as broken when it is misclassified at all, not
only when it reaches the target; the returned image of each targeted run is APGD's best point for
the target (so an intermediate iterate that was misclassified as a third class is not kept:
AutoAttack's APGD-T keeps it; the untargeted members cover such samples).

``gradient_masking_checks`` runs sanity checks from Carlini et al. (2019; its recommendations
and checklist; Athalye et al. 2018 for the failure modes) that catch an evaluation whose
gradients are masked (non-differentiable or zero-gradient pre-processing, a saturated softmax,
randomness); each check reports its measured value, its threshold and whether it passed
(value <= threshold):

    zero_gradients   fraction of clean-correct samples whose loss gradient w.r.t. the pixels is
                     exactly zero (AutoAttack's ``check_zero_gradients``); threshold 0.
    large_eps        robust accuracy of the ensemble at a large budget (default 8 x eps; for L-inf
                     at least 64/255) must be near 0: a large enough distortion breaks any
                     model, so a model still "robust" there hides its gradients; threshold 0.05.
    black_box        fraction of samples the ensemble could not break but Square (score-based,
                     gradient-free) can, at the evaluation eps: a gradient-free attack should not
                     beat gradient-based ones; threshold ``tolerance`` (0.02). Implies Square's
                     robust accuracy >= the ensemble's - tolerance (AutoAttack's ``check_square_sr``
                     is the same test with a 0.002 tolerance).
    monotone_eps     largest rise of the ensemble's robust accuracy from one budget to the next
                     of (eps/2, eps, 2 eps, large eps): robust accuracy must not increase with the
                     budget; threshold ``tolerance``.
    single_step      fraction of samples the ensemble could not break but one-step FGSM can:
                     iterative attacks should beat single-step ones; threshold ``tolerance``.
                     (We test this rather than "more PGD steps never lower success": APGD keeps
                     its best iterate, so the latter cannot fail in a way that reveals masking.)
    unbounded        robust accuracy of APGD-CE at an unbounded budget (L-inf 1, L2 the diagonal
                     of the image cube) must be 0: an unbounded attack must reach 100% success,
                     or the attack (or its gradient) is broken; threshold 0.

Which check catches what: a zero gradient (rounding, a detach, a step function) fails
zero_gradients and black_box, and usually large_eps and unbounded; a saturated softmax fails
zero_gradients (the cross-entropy gradient underflows) while the DLR loss of APGD-T still breaks
the model, so the ensemble's numbers stay honest; a randomised defence can fail monotone_eps
(use expectation over transformation, not implemented here). Passing every check is necessary,
not sufficient: an adaptive attack designed for the defence is still the gold standard.

Shapes: pixels (B, 3, H, W) float in [0, 1]; labels (B,) long. Samples are processed in chunks of
``batch_size``; every random draw comes from ``generator``.

Example (on a shipped model)::

    from mmsec.attacks import ZeroShotObjective; from mmsec.zoo import load_model
    from mmsec.data.shapes import ShapesWorld, zeroshot_prompts
    from mmsec.evaluation import gradient_masking_checks, robust_accuracy

    model, batch = load_model("shapes-clip-resnet"), ShapesWorld().batch("test", 0, 100)
    objective = ZeroShotObjective(model, zeroshot_prompts())
    print(robust_accuracy(objective, batch.pixels(), batch.labels, eps=4/255, generator=0).summary())
    print(gradient_masking_checks(objective, batch.pixels(), batch.labels, eps=4/255, generator=0).summary())
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attacks.adversarial.apgd import APGD
from ..attacks.adversarial.autoattack import (
    PRESETS,
    EnsembleMember,
    RobustAccuracy,
    _check_inputs,
    _misclassified,
    robust_accuracy,
)
from ..attacks.adversarial.fgsm import FGSM
from ..attacks.adversarial.square import SquareAttack
from ..attacks.base import EvasionAttack
from ..attacks.objectives import Objective
from ..checks import (
    check_budget,
    check_int,
    check_radius,
    make_generator,
)

logger = logging.getLogger(__name__)

CHECKS = ("zero_gradients", "large_eps", "black_box", "monotone_eps", "single_step", "unbounded")


# ----------------------------------------------------------------------------------------------
# Gradient-masking checks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskingCheck:
    """One check: it passes when ``value <= threshold``."""

    name: str
    description: str
    value: float
    threshold: float

    @property
    def passed(self) -> bool:
        return bool(self.value <= self.threshold)


@dataclass
class GradientMaskingReport:
    """The result of :func:`gradient_masking_checks`.

    Attributes:
        checks: name -> :class:`MaskingCheck`, in the order they ran.
        eps, norm: the evaluation's threat model.
        accuracy_by_eps: the ensemble's robust accuracy at each budget it was run at.
        details: other measured numbers (Square's and FGSM's accuracies on the ensemble's
            survivors, the unbounded budget, ...).
    """

    checks: dict[str, MaskingCheck]
    eps: float
    norm: str
    accuracy_by_eps: dict[float, float]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, c in self.checks.items() if not c.passed]

    def __getitem__(self, name: str) -> MaskingCheck:
        return self.checks[name]

    def summary(self) -> str:
        eps = f"{self.eps * 255:.3g}/255" if self.norm == "linf" else f"{self.eps:.3g}"
        lines = [f"gradient-masking checks ({self.norm}, eps={eps}): "
                 f"{'all passed' if self.passed else 'FAILED: ' + ', '.join(self.failed)}"]
        for c in self.checks.values():
            lines.append(f"  [{'pass' if c.passed else 'FAIL'}] {c.name:<15} {c.value:.3f} <= {c.threshold:.3f}  "
                         f"{c.description}")
        return "\n".join(lines)


def _zero_gradient_fraction(objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                            batch_size: int) -> float:
    """Fraction of samples whose loss gradient w.r.t. the pixels is exactly zero."""
    zero = 0
    for i in range(0, pixels.shape[0], batch_size):
        x = pixels[i:i + batch_size].detach().clone().requires_grad_(True)
        loss = objective.loss(x, labels[i:i + batch_size], None)
        if not loss.requires_grad:
            zero += x.shape[0]
            continue
        (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
        zero += x.shape[0] if grad is None else int((grad.flatten(1).abs().amax(1) == 0).sum())
    return zero / max(pixels.shape[0], 1)


def gradient_masking_checks(objective: Objective, pixels: torch.Tensor, labels: torch.Tensor, eps: float,
                            norm: str = "linf",
                            attacks: str | Sequence[EnsembleMember | EvasionAttack] = "standard",
                            generator: torch.Generator | int | None = None, *,
                            large_eps: float | None = None, square_queries: int = 1000,
                            tolerance: float = 0.02, large_eps_accuracy: float = 0.05,
                            checks: Sequence[str] = CHECKS, batch_size: int = 256) -> GradientMaskingReport:
    """Sanity checks that a robust-accuracy evaluation at ``eps`` is not fooled by masked gradients.

    Args:
        objective, pixels, labels, eps, norm, generator, batch_size: as :func:`robust_accuracy`.
        attacks: the white-box ensemble (preset name or list of members built at ``eps``; a list
            can only be used for the checks at ``eps`` itself: large_eps and monotone_eps need a
            preset, which is rebuilt at each budget).
        large_eps: the large budget of ``large_eps`` and the top of ``monotone_eps``; default
            8 x eps (for L-inf at least 64/255, at most 1).
        square_queries: Square's query budget for ``black_box`` (default 1000; AutoAttack 5000).
        tolerance: threshold of black_box, monotone_eps and single_step (fraction of samples).
        large_eps_accuracy: threshold of large_eps (default 0.05).
        checks: which checks to run (default all, see the module docstring).
    """
    norm, eps = _check_inputs(objective, pixels, labels, norm, eps)
    tolerance = check_budget("tolerance", tolerance, 0.0, 1.0, hint=" (a fraction of samples)")
    large_eps_accuracy = check_budget("large_eps_accuracy", large_eps_accuracy, 0.0, 1.0, hint=" (an accuracy)")
    square_queries = check_int("square_queries", square_queries, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    unknown = [c for c in checks if c not in CHECKS]
    if isinstance(checks, str) or unknown or not checks:
        raise ValueError(f"checks must be a non-empty list of names from {CHECKS}, got {checks!r}")
    if large_eps is None:
        large_eps = min(max(8 * eps, 64 / 255), 1.0) if norm == "linf" else 8 * eps
    large_eps = check_radius("large_eps", large_eps, norm)
    if large_eps <= eps:
        raise ValueError(f"large_eps must exceed eps={eps}, got {large_eps}")
    if "black_box" in checks and norm != "linf":
        raise ValueError("the black_box check runs the L-inf Square Attack; for norm='l2' leave it out of checks")
    needs_preset = {"large_eps", "monotone_eps"} & set(checks)
    if needs_preset and not isinstance(attacks, str):
        raise ValueError(f"checks {sorted(needs_preset)} run the ensemble at other budgets, so attacks must be a "
                         f"preset name {PRESETS}; leave them out of checks to use a custom list")
    generator = make_generator(generator)
    pixels = pixels.detach()
    clean_correct = ~_misclassified(objective, pixels, labels, batch_size)
    if not clean_correct.any():
        raise ValueError("the objective gets every clean sample wrong, so robustness checks are meaningless; "
                         "check the labels, the prompts and the model")
    n = pixels.shape[0]
    results: dict[str, MaskingCheck] = {}
    accuracy_by_eps: dict[float, float] = {}
    details: dict[str, Any] = {"samples": n, "clean_accuracy": clean_correct.float().mean().item()}

    def evaluate(e: float) -> RobustAccuracy:
        run = robust_accuracy(objective, pixels, labels, e, norm, attacks, generator, batch_size=batch_size)
        accuracy_by_eps[e] = run.robust_accuracy
        return run

    def extra_breaks(attack: EvasionAttack, survivors: torch.Tensor) -> float:
        """Fraction of all samples that ``attack`` breaks among the ensemble's survivors."""
        idx = survivors.nonzero().squeeze(1)
        broken = 0
        for start in range(0, idx.numel(), batch_size):
            part = idx[start:start + batch_size]
            adv = attack(objective, pixels[part], labels[part], generator=generator).adv_pixels
            broken += int(_misclassified(objective, adv, labels[part], batch_size).sum())
        return broken / n

    def add(name: str, description: str, value: float, threshold: float) -> None:
        results[name] = MaskingCheck(name, description, float(value), float(threshold))

    if "zero_gradients" in checks:
        correct = clean_correct.nonzero().squeeze(1)
        value = _zero_gradient_fraction(objective, pixels[correct], labels[correct], batch_size)
        add("zero_gradients", "fraction of clean-correct samples whose loss gradient is exactly zero", value, 0.0)

    at_eps = evaluate(eps) if {"black_box", "single_step", "monotone_eps"} & set(checks) else None

    if "large_eps" in checks or "monotone_eps" in checks:
        grid = sorted({eps / 2, eps, min(2 * eps, large_eps), large_eps})
        for e in grid:
            if e not in accuracy_by_eps and (e == large_eps or "monotone_eps" in checks):
                evaluate(e)
        if "large_eps" in checks:
            shown = f"{large_eps * 255:.3g}/255" if norm == "linf" else f"{large_eps:.3g}"
            add("large_eps", f"robust accuracy at large eps={shown} (should be near 0)",
                accuracy_by_eps[large_eps], large_eps_accuracy)
        if "monotone_eps" in checks:
            accs = [accuracy_by_eps[e] for e in grid]
            rise = max([b - a for a, b in itertools.pairwise(accs)] + [0.0])
            shown = ", ".join(f"{e * 255:.3g}/255" if norm == "linf" else f"{e:.3g}" for e in grid)
            add("monotone_eps", f"largest rise of robust accuracy over eps {shown} "
                                f"(accuracies {', '.join(f'{a:.3f}' for a in accs)})", rise, tolerance)
        details["large_eps"] = large_eps

    if "black_box" in checks:
        square = SquareAttack(eps=eps, n_queries=square_queries)
        value = extra_breaks(square, at_eps.robust)
        details["square_accuracy_on_top"] = at_eps.robust_accuracy - value
        add("black_box", f"fraction broken by Square ({square_queries} queries) but not by the white-box ensemble "
                         f"(ensemble {at_eps.robust_accuracy:.3f} -> {at_eps.robust_accuracy - value:.3f})",
            value, tolerance)

    if "single_step" in checks:
        value = extra_breaks(FGSM(eps=eps, norm=norm), at_eps.robust)
        details["fgsm_accuracy_on_top"] = at_eps.robust_accuracy - value
        add("single_step", "fraction broken by one-step FGSM but not by the iterative ensemble", value, tolerance)

    if "unbounded" in checks:
        unbounded = 1.0 if norm == "linf" else math.sqrt(pixels[0].numel())
        steps = 100 if attacks == "standard" else 25
        run = robust_accuracy(objective, pixels, labels, unbounded, norm,
                              [EnsembleMember("apgd-ce", APGD(eps=unbounded, norm=norm, steps=steps))],
                              generator, batch_size=batch_size)
        details["unbounded_eps"] = unbounded
        add("unbounded", f"robust accuracy of APGD-CE at an unbounded budget ({norm} eps={unbounded:.4g})",
            run.robust_accuracy, 0.0)

    if at_eps is not None:
        details["robust_accuracy"] = at_eps.robust_accuracy
    return GradientMaskingReport(results, eps, norm, accuracy_by_eps, details)

__all__ = ["CHECKS", "PRESETS", "EnsembleMember", "GradientMaskingReport", "MaskingCheck", "RobustAccuracy",
           "gradient_masking_checks", "robust_accuracy"]
