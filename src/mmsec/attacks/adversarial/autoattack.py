"""Robust accuracy under an ensemble of attacks: the worst case per sample (AutoAttack-style).

Reference: Francesco Croce, Matthias Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020 (AutoAttack: APGD-CE, APGD-T, FAB-T, Square;
a sample is robust only if every attack fails on it).

Threat model: white-box, a perturbation within an L-inf or L2 ball of radius ``eps`` (pixel units),
images in [0, 1]; untargeted: a sample counts as robust when the objective still gets it right.

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

Shapes: pixels (B, 3, H, W) float in [0, 1]; labels (B,) long. Samples are processed in chunks of
``batch_size``; every random draw comes from ``generator``. The gradient-masking checks that audit
such an evaluation are :func:`mmsec.evaluation.robustness.gradient_masking_checks`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...checks import check_indices, check_int, check_norm, check_pixels, check_radius, make_generator
from ..base import EvasionAttack, check_objective
from ..objectives import Objective, require_logits
from .apgd import APGD
from .pgd import PGD

logger = logging.getLogger(__name__)

PRESETS = ("standard", "fast")


# ----------------------------------------------------------------------------------------------
# Ensembles
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsembleMember:
    """One attack of an ensemble.

    Attributes:
        name: its name in the results (unique within the ensemble).
        attack: an evasion attack configured with the ensemble's eps and norm.
        restarts: independent runs, each on the samples still robust (fresh random draws).
        n_target_classes: 0 for an untargeted attack; k > 0 runs the attack targeted at each of the
            k highest-scoring wrong classes of the clean image in turn (AutoAttack's APGD-T); a
            sample is broken when it is misclassified (whatever the class).
    """

    name: str
    attack: EvasionAttack
    restarts: int = 1
    n_target_classes: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"EnsembleMember name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.attack, EvasionAttack):
            raise TypeError(f"EnsembleMember {self.name!r}: attack must be an EvasionAttack (e.g. APGD(eps=...)), "
                            f"got {type(self.attack).__name__}")
        check_int("restarts", self.restarts, 1)
        check_int("n_target_classes", self.n_target_classes, 0)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "attack": self.attack.name, "params": self.attack.params(),
                "restarts": self.restarts, "n_target_classes": self.n_target_classes}


def ensemble(preset: str, eps: float, norm: str = "linf") -> list[EnsembleMember]:
    """The attacks of a preset ("standard" or "fast", see the module docstring) at ``eps``."""
    if preset == "standard":
        return [
            EnsembleMember("apgd-ce", APGD(eps=eps, norm=norm, loss="ce", steps=100)),
            EnsembleMember("apgd-t", APGD(eps=eps, norm=norm, loss="dlr", steps=100), n_target_classes=3),
            EnsembleMember("pgd-50", PGD(eps=eps, alpha=2.5 * eps / 50, steps=50, norm=norm), restarts=2),
        ]
    if preset == "fast":
        return [
            EnsembleMember("apgd-ce", APGD(eps=eps, norm=norm, loss="ce", steps=25)),
            EnsembleMember("apgd-t", APGD(eps=eps, norm=norm, loss="dlr", steps=25), n_target_classes=2),
            EnsembleMember("pgd-10", PGD(eps=eps, alpha=2.5 * eps / 10, steps=10, norm=norm)),
        ]
    raise ValueError(f"attacks must be a preset name, one of {PRESETS}, or a list of EnsembleMember / attacks, "
                     f"got {preset!r}")


def _members(attacks: str | Sequence[EnsembleMember | EvasionAttack], eps: float, norm: str) -> list[EnsembleMember]:
    if isinstance(attacks, str):
        return ensemble(attacks, eps, norm)
    if not isinstance(attacks, Sequence) or not attacks:
        raise TypeError(f"attacks must be a preset name {PRESETS} or a non-empty list of EnsembleMember / "
                        f"EvasionAttack, got {attacks!r}")
    members = [a if isinstance(a, EnsembleMember) else EnsembleMember(getattr(a, "name", "?"), a) for a in attacks]
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"ensemble member names must be unique (wrap attacks in EnsembleMember to name them), "
                         f"got {names}")
    for m in members:  # a member at another budget would make the number mean something else
        a_eps, a_norm = getattr(m.attack, "eps", None), getattr(m.attack, "norm", None)
        if a_eps is not None and not math.isclose(a_eps, eps, rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(f"ensemble member {m.name!r} has eps={a_eps}, but the evaluation is at eps={eps}; "
                             "configure every attack with the evaluation's budget")
        if a_norm is not None and a_norm != norm:
            raise ValueError(f"ensemble member {m.name!r} has norm={a_norm!r}, but the evaluation is in {norm!r}")
    return members


# ----------------------------------------------------------------------------------------------
# Robust accuracy
# ----------------------------------------------------------------------------------------------


@dataclass
class RobustAccuracy:
    """The result of :func:`robust_accuracy`.

    Attributes:
        eps, norm: the threat model.
        clean_correct: (B,) bool, correct on the clean image.
        robust: (B,) bool, correct under every attack of the ensemble (and on the clean image).
        per_attack: name -> (B,) bool; with ``individual=False`` correct after this attack and every
            earlier one (AutoAttack's cumulative log), with ``individual=True`` correct under this
            attack alone.
        adv_pixels: (B, 3, H, W) per sample the first adversarial image found; for robust samples
            the last member's failed attempt (inside the budget); the clean image for
            clean-misclassified samples.
        broken_by: per sample, the name of the attack that first broke it, "clean" if the clean
            image is already misclassified, None if robust.
        members: the ensemble (names, attack parameters, restarts, target classes).
        individual: the mode (see ``per_attack``).
        seconds: name -> wall time of each attack.
    """

    eps: float
    norm: str
    clean_correct: torch.Tensor
    robust: torch.Tensor
    per_attack: dict[str, torch.Tensor]
    adv_pixels: torch.Tensor
    broken_by: list[str | None]
    members: list[dict[str, Any]]
    individual: bool
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct.float().mean().item()

    @property
    def robust_accuracy(self) -> float:
        return self.robust.float().mean().item()

    def accuracies(self) -> dict[str, float]:
        """{"clean": ..., <attack>: ..., "robust": ...} as fractions of all samples."""
        out = {"clean": self.clean_accuracy}
        out.update({k: v.float().mean().item() for k, v in self.per_attack.items()})
        out["robust"] = self.robust_accuracy
        return out

    def summary(self) -> str:
        mode = "alone" if self.individual else "after"
        eps = f"{self.eps * 255:.3g}/255" if self.norm == "linf" else f"{self.eps:.3g}"
        lines = [f"robust accuracy, {self.norm} eps={eps}, {self.clean_correct.numel()} samples"]
        lines.append(f"  clean            {self.clean_accuracy:.3f}")
        for k, v in self.per_attack.items():
            lines.append(f"  {mode} {k:<12} {v.float().mean().item():.3f}   ({self.seconds.get(k, 0.0):.1f} s)")
        lines.append(f"  robust (worst case) {self.robust_accuracy:.3f}")
        return "\n".join(lines)


def _check_inputs(objective: Objective, pixels: torch.Tensor, labels: torch.Tensor, norm: str,
                  eps: float) -> tuple[str, float]:
    check_objective(objective)
    check_pixels(pixels)
    check_indices("labels", labels, pixels.shape[0])
    norm = check_norm(norm)
    return norm, check_radius("eps", eps, norm)


@torch.no_grad()
def _misclassified(objective: Objective, pixels: torch.Tensor, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(B,) bool: the objective's untargeted verdict, in chunks."""
    return torch.cat([objective.success(pixels[i:i + batch_size], labels[i:i + batch_size], None).bool()
                      for i in range(0, pixels.shape[0], batch_size)]) if pixels.shape[0] else labels.new_zeros(
        0, dtype=torch.bool)


@torch.no_grad()
def _top_wrong_classes(objective: Objective, pixels: torch.Tensor, labels: torch.Tensor, k: int,
                       batch_size: int) -> torch.Tensor:
    """(B, k): the k highest-scoring classes other than the label, on the clean images."""
    logits = torch.cat([objective.logits(pixels[i:i + batch_size]) for i in range(0, pixels.shape[0], batch_size)])
    if logits.shape[1] - 1 < k:
        raise ValueError(f"n_target_classes={k} needs at least {k + 1} classes, the objective has {logits.shape[1]}")
    logits = logits.float().scatter(1, labels[:, None], -math.inf)
    return logits.topk(k, dim=1).indices


def _run_member(member: EnsembleMember, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                alive: torch.Tensor, generator: torch.Generator,
                batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one member on the ``alive`` samples.

    Returns (broken (B,) bool, adv (B, 3, H, W)): which samples it misclassified, and the first
    adversarial image it found for each of them; for the alive samples it did not break, its last
    attempt (inside the budget); other rows are the clean images.
    """
    broken = torch.zeros_like(alive)
    adv_pixels = pixels.clone()
    targets_all = None
    if member.n_target_classes:
        require_logits(objective, f"ensemble member {member.name!r} (targeted at the top wrong classes)",
                       "ranks the classes by the clean logits")
        targets_all = _top_wrong_classes(objective, pixels, labels, member.n_target_classes, batch_size)
    ranks = [None] if not member.n_target_classes else list(range(member.n_target_classes))
    for _ in range(member.restarts):
        for rank in ranks:
            todo = (alive & ~broken).nonzero().squeeze(1)  # each run only on the samples still standing
            for start in range(0, todo.numel(), batch_size):
                idx = todo[start:start + batch_size]
                targets = None if rank is None else targets_all[idx, rank]
                result = member.attack(objective, pixels[idx], labels[idx], targets, generator=generator)
                hit = _misclassified(objective, result.adv_pixels, labels[idx], batch_size)  # untargeted verdict
                broken[idx[hit]] = True
                adv_pixels[idx] = result.adv_pixels.to(adv_pixels.dtype)  # misses: the last attempt
    return broken, adv_pixels


def robust_accuracy(objective: Objective, pixels: torch.Tensor, labels: torch.Tensor, eps: float,
                    norm: str = "linf", attacks: str | Sequence[EnsembleMember | EvasionAttack] = "standard",
                    generator: torch.Generator | int | None = None, individual: bool = False,
                    batch_size: int = 256) -> RobustAccuracy:
    """Worst-case robust accuracy of ``objective`` under an ensemble of attacks at budget ``eps``.

    Args:
        objective: what is attacked (e.g. ``ZeroShotObjective(model, prompts)``); its untargeted
            verdict decides whether a sample is correct.
        pixels: (B, 3, H, W) in [0, 1]; labels: (B,) long.
        eps: the budget in pixel units (L-inf, e.g. 4/255; L2 the norm of the whole perturbation).
        norm: "linf" (default) or "l2".
        attacks: a preset ("standard", default; "fast") or a list of :class:`EnsembleMember` /
            attacks configured at ``eps`` and ``norm``.
        generator: a torch.Generator or an int seed (None means seed 0); every attack draws from it.
        individual: run every attack on every clean-correct sample (see :class:`RobustAccuracy`).
        batch_size: samples per attack call.
    """
    norm, eps = _check_inputs(objective, pixels, labels, norm, eps)
    if not isinstance(individual, bool):
        raise TypeError(f"individual must be True or False, got {individual!r}")
    batch_size = check_int("batch_size", batch_size, 1)
    members = _members(attacks, eps, norm)
    generator = make_generator(generator)
    pixels = pixels.detach()
    clean_correct = ~_misclassified(objective, pixels, labels, batch_size)
    robust = clean_correct.clone()
    adv_pixels = pixels.clone()
    broken_by: list[str | None] = [None if c else "clean" for c in clean_correct.tolist()]
    per_attack, seconds = {}, {}
    for member in members:
        t0 = time.perf_counter()
        alive = clean_correct if individual else robust
        broken, adv = _run_member(member, objective, pixels, labels, alive, generator, batch_size)
        first = broken & robust  # broken by this member and by no earlier one
        adv_pixels[first] = adv[first]
        survivors = alive & ~broken & robust  # report the attempt that failed on them (inside the budget)
        adv_pixels[survivors] = adv[survivors]
        for i in first.nonzero().squeeze(1).tolist():
            broken_by[i] = member.name
        per_attack[member.name] = (clean_correct & ~broken) if individual else (robust & ~broken)
        robust = robust & ~broken
        seconds[member.name] = time.perf_counter() - t0
        logger.info("robust accuracy %s %s: %.3f (%.1f s)", "under" if individual else "after", member.name,
                    per_attack[member.name].float().mean().item(), seconds[member.name])
    return RobustAccuracy(eps, norm, clean_correct, robust, per_attack, adv_pixels, broken_by,
                          [m.describe() for m in members], individual, seconds)
