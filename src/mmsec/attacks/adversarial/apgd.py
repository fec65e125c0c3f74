"""Auto-PGD (APGD): PGD with momentum and a step size that adapts itself, returning the best point.

Paper: "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", Francesco Croce, Matthias Hein, ICML 2020 (Sec. 3: APGD; Sec. 4: the DLR loss).
Reference implementation: ``autoattack/autopgd_base.py`` in github.com/fra31/auto-attack.

Threat model: white-box, gradient access; perturbation of the image within an L-inf or L2 ball
of radius ``eps`` (pixel units), images kept in [0, 1]; untargeted or targeted.

Algorithm (per sample; S is the ball around x intersected with [0, 1], P_S the projection):
    x(0) is a random point on the boundary of the ball (L-inf: uniform noise rescaled so that its
    largest entry is eps; L2: a random direction of norm eps), clipped to [0, 1]; eta = 2 * eps.
    For k = 0 .. N-1, with d(g) = sign(g) (L-inf) or g / ||g||_2 (L2), alpha = 0.75 (1 at k = 0):

        z(k+1) = P_S( x(k) + eta * d(grad f(x(k))) )
        x(k+1) = P_S( x(k) + alpha * (z(k+1) - x(k)) + (1 - alpha) * (x(k) - x(k-1)) )

    f is the loss to maximise; x_max is the point with the highest f seen so far. At the
    checkpoints w_j = ceil(p_j * N), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
    0.06) (for N = 100: 22, 41, 57, 70, 80, 87, 93, 99) the step size is halved when

        1. f increased in fewer than rho * (w_j - w_{j-1}) of the steps since w_{j-1}, or
        2. eta was not halved at w_{j-1} and f_max has not improved since w_{j-1},

    and then the iteration continues from x_max (with its stored gradient).

Losses (``loss``), computed from the objective:
    "ce": the objective's own loss (cross-entropy of the truth; targeted, minus the cross-entropy
        of the target). Works with any objective.
    "dlr": the Difference of Logits Ratio, from the objective's logits (z sorted z_pi1 >= z_pi2 >= ...):
        untargeted  -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)                (needs >= 3 classes)
        targeted    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)                (needs >= 4 classes)
        It is invariant to shifting and rescaling the logits, so a saturated softmax (a vanishing
        cross-entropy gradient) does not stop it. Needs an objective with logits
        (:class:`~mmsec.attacks.objectives.LogitObjective`, e.g. ZeroShotObjective).
    With ``targets`` the attack is targeted: success means the objective's targeted verdict
    (e.g. the target class is predicted).

Restarts: restart r > 1 runs (from a fresh random point) only on the samples no earlier restart
made successful, as AutoAttack does.

Returned image, per sample: the best point over all iterations and restarts, where a successful
point beats an unsuccessful one and, among equals, the higher loss wins; so a sample that was
ever adversarial comes back adversarial (AutoAttack's ``x_best_adv``) and one that never was
comes back as the highest-loss point found (AutoAttack's ``x_best``).

Arguments (pixel units, images in [0, 1]):
    eps: budget, default 8/255 (AutoAttack's CIFAR-10 L-inf setting). For L2 the norm of the whole
        (3, H, W) perturbation, e.g. 0.5.
    steps: iterations N per restart, default 100 (the paper; AutoAttack).
    n_restarts: random restarts, default 1 (AutoAttack's standard version for APGD-CE and for each
        target class of APGD-T).
    norm: "linf" (default) or "l2".
    loss: "ce" (default, APGD-CE) or "dlr" (APGD-DLR; targeted: APGD-T).
    rho: the fraction of increasing steps below which the step size is halved (condition 1),
        default 0.75 (the paper).
    The momentum 0.75 and the initial step 2 * eps are fixed, as in the paper (APGD is meant to be
    parameter-free).

Shapes: pixels (B, 3, H, W) float in [0, 1]; labels (B,) long; targets (B,) long or None.
Result: adv_pixels (B, 3, H, W); success (B,) bool; loss_trace (steps, B): the loss being
maximised (CE or DLR) at each iterate before its update (row 0 is the random start), from the
restart whose image is returned; extras: ``step_size`` (steps, B) the step size of each update,
``best_loss`` (B,) the loss of the returned image, ``restart`` (B,) the restart it came from,
``checkpoints`` the w_j.

Cost: one forward and one backward per iteration (N + 1 per restart, the random start
included), plus one forward for the final verdict. With an objective without logits (only
``"ce"`` is possible then) each iteration adds one gradient-free forward for the verdict.

Example (on a shipped model)::

    from mmsec.attacks import ZeroShotObjective; from mmsec.attacks.adversarial import APGD
    from mmsec.zoo import load_model; from mmsec.data.shapes import ShapesWorld, zeroshot_prompts

    model, batch = load_model("shapes-clip-resnet"), ShapesWorld().batch("test", 0, 64)
    objective = ZeroShotObjective(model, zeroshot_prompts())
    result = APGD(eps=8/255, loss="ce")(objective, batch.pixels(), batch.labels, generator=0)

Departures from the paper and from AutoAttack's code:
    - The loss comes from the objective (CE) or its logits (DLR), not a hard-wired classifier.
    - Condition 1 uses the paper's strict "<"; AutoAttack's code uses "<=" (they differ only when
      rho * (w_j - w_{j-1}) is an integer). Condition 2 is the paper's at every checkpoint;
      AutoAttack's code never applies it at the first checkpoint. The checkpoints are the paper's
      ceil(p_j * N); AutoAttack's integer recursion gives the same ones for N = 100 but not for
      every N (e.g. N = 10).
    - After a halving the next step starts from x_max, reusing its stored gradient (AutoAttack's
      implementation of the paper's x(w_j + 1) := x_max; no extra forward pass).
    - Restart 1 attacks every sample, including those the model already gets wrong (AutoAttack
      skips them and returns them unchanged); with ``targets``, success is reaching the target
      (AutoAttack's APGD-T counts any misclassification; :func:`mmsec.evaluation.robust_accuracy`
      does that).
    - The gradient is that of the sum of per-sample losses (as AutoAttack). If the loss does not
      depend differentiably on the pixels at all, the gradient is taken as zero (with a warning)
      rather than failing: that is gradient masking, which :func:`mmsec.evaluation.gradient_masking_checks`
      reports.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ...checks import check_budget, check_int, check_norm, check_radius
from ...registry import register
from ..base import EvasionAttack, EvasionResult, check_loss
from ..objectives import Objective, has_logits, require_logits
from ..projection import ascent_direction, clamp_pixels, lp_norm, project, random_delta

logger = logging.getLogger(__name__)

LOSSES = ("ce", "dlr")
MOMENTUM = 0.75  # the paper's alpha (fixed)
INITIAL_STEP = 2.0  # eta(0) = 2 * eps (the paper, fixed)
_DLR_FLOOR = 1e-12  # AutoAttack's guard in the DLR denominator


def checkpoints(steps: int) -> list[int]:
    """The paper's checkpoints w_j = ceil(p_j * steps), j >= 1, with p_0 = 0, p_1 = 0.22 and
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), kept while p_j <= 1 (duplicates merged)."""
    p = [0.0, 0.22]
    while p[-1] <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # round() first: p_3 * 100 is 57.00000000000001 in floating point, whose ceil would be 58.
    return sorted({math.ceil(round(q * steps, 6)) for q in p[1:] if q <= 1.0} - {0})


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """The (targeted) Difference of Logits Ratio of Croce & Hein (2020), per sample, to maximise.

    logits (B, C); labels (B,); targets (B,) or None. Returns (B,).
    """
    z_sorted, order = logits.sort(dim=1)  # ascending: z_sorted[:, -1] is the largest
    z_y = logits.gather(1, labels[:, None]).squeeze(1)  # (B,)
    if targets is None:
        z_other = torch.where(order[:, -1] == labels, z_sorted[:, -2], z_sorted[:, -1])  # max_{i != y} z_i
        return -(z_y - z_other) / (z_sorted[:, -1] - z_sorted[:, -3] + _DLR_FLOOR)
    z_t = logits.gather(1, targets[:, None]).squeeze(1)  # (B,)
    return -(z_y - z_t) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + _DLR_FLOOR)


@dataclass
class _Run:
    """One restart's outcome on the samples it ran on (b of them)."""

    adv: torch.Tensor  # (b, 3, H, W) the returned point
    success: torch.Tensor  # (b,) bool
    loss: torch.Tensor  # (b,) its loss
    trace: torch.Tensor  # (steps, b)
    step_size: torch.Tensor  # (steps, b)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample select: mask (b,) between two (b, ...) tensors."""
    return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)


@register("attacks", "apgd")
class APGD(EvasionAttack):
    """APGD (Croce & Hein, ICML 2020): momentum PGD with a self-tuning step size, CE or DLR loss."""

    name = "apgd"
    paper = "Croce & Hein, ICML 2020"

    def __init__(self, eps: float = 8 / 255,  # AutoAttack's CIFAR-10 L-inf budget
                 steps: int = 100,  # the paper / AutoAttack
                 n_restarts: int = 1,  # AutoAttack's standard version
                 norm: str = "linf",
                 loss: str = "ce",  # "ce" (APGD-CE) or "dlr" (APGD-DLR, targeted: APGD-T)
                 rho: float = 0.75):  # the paper's condition-1 threshold
        self.norm = check_norm(norm)
        self.eps = check_radius("eps", eps, self.norm)
        self.steps = check_int("steps", steps, 1)
        self.n_restarts = check_int("n_restarts", n_restarts, 1)
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} ('ce': the objective's cross-entropy; 'dlr': the "
                             f"Difference of Logits Ratio, targeted when targets are given), got {loss!r}")
        self.loss = loss
        self.rho = check_budget("rho", rho, 0.0, 1.0, hint=" (the fraction of steps that must raise the loss "
                                "between checkpoints for the step size to be kept; the paper uses 0.75)")

    # -- the loss, its gradient and the verdict from one forward pass ---------------------------------

    def _evaluate(self, objective: Objective, x: torch.Tensor, labels: torch.Tensor,
                  targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss (b,), success (b,) bool, grad (b, 3, H, W)) at x."""
        x = x.detach().requires_grad_(True)
        if has_logits(objective):
            logits = objective.logits(x)  # (b, C)
            if self.loss == "dlr":
                loss = dlr_loss(logits, labels, targets)
            else:
                loss = objective.loss_from_logits(logits, labels, targets)
            success = objective.success_from_logits(logits.detach(), labels, targets)
        else:  # "ce" on an objective without logits: its loss, and a second (gradient-free) forward
            loss = objective.loss(x, labels, targets)
            with torch.no_grad():
                success = objective.success(x.detach(), labels, targets)
        check_loss(loss, x.shape[0])
        if loss.requires_grad:
            # Gradient w.r.t. the image only: the model's parameters never receive a .grad.
            (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
        else:
            grad = None
        if grad is None:
            logger.warning("APGD: the loss does not depend differentiably on the pixels; using a zero gradient "
                           "(gradient masking: see mmsec.evaluation.gradient_masking_checks)")
            grad = torch.zeros_like(x)
        return loss.detach(), success.bool(), grad.detach()

    def _check_classes(self, objective: Objective, pixels: torch.Tensor, targets: torch.Tensor | None) -> None:
        if self.loss != "dlr":
            return
        why = "computes its DLR loss from the logits"
        require_logits(objective, f"APGD(loss='dlr'{', targeted' if targets is not None else ''})", why)
        with torch.no_grad():
            n_classes = objective.logits(pixels[:1]).shape[1]
        needed = 3 if targets is None else 4
        if n_classes < needed:
            raise ValueError(f"APGD(loss='dlr') {'targeted ' if targets is not None else ''}needs at least {needed} "
                             f"classes (its denominator uses the {'3rd' if needed == 3 else '3rd and 4th'} largest "
                             f"logits), but the objective has {n_classes}; use loss='ce'")

    # -- the algorithm ---------------------------------------------------------------------------------

    def _start(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """AutoAttack's start: a random point on the boundary of the ball, clipped to [0, 1]."""
        if self.norm == "linf":
            delta = random_delta(clean, 1.0, "linf", generator)  # (b, 3, H, W) uniform in [-1, 1]
            scale = self.eps / lp_norm(delta, "linf").clamp_min(1e-12)  # (b,): largest entry -> eps
            delta = delta * scale.view(-1, 1, 1, 1)
        else:
            delta = random_delta(clean, self.eps, "l2", generator, radius="sphere")  # norm exactly eps
        return clamp_pixels(clean + delta)

    def _run(self, objective: Objective, clean: torch.Tensor, labels: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator) -> _Run:
        """One restart of APGD on a batch (b samples)."""
        b = clean.shape[0]
        x = self._start(clean, generator)  # x(0)
        loss, success, grad = self._evaluate(objective, x, labels, targets)
        x_prev = x  # x(k-1) for the momentum term
        eta = clean.new_full((b,), INITIAL_STEP * self.eps)  # (b,) per-sample step size
        x_max, f_max, grad_max = x, loss, grad  # highest loss so far (where a halving restarts from)
        out_x, out_success, out_loss = x, success, loss  # the point to return
        losses = [loss]  # f(x(k)), k = 0 .. steps
        trace, steps_taken = [], []
        marks = set(checkpoints(self.steps))
        last_mark, f_max_at_last_mark = 0, f_max
        halved_at_last_mark = torch.zeros(b, dtype=torch.bool, device=clean.device)
        for k in range(self.steps):
            trace.append(losses[k])
            steps_taken.append(eta)
            a = 1.0 if k == 0 else MOMENTUM
            step = eta.view(-1, 1, 1, 1) * ascent_direction(grad, self.norm)  # (b, 3, H, W)
            z = project(x + step, clean, self.eps, self.norm)  # z(k+1)
            x_next = project(x + a * (z - x) + (1.0 - a) * (x - x_prev), clean, self.eps, self.norm)  # x(k+1)
            x_prev, x = x, x_next
            loss, success, grad = self._evaluate(objective, x, labels, targets)
            losses.append(loss)

            # The point to return: successful beats unsuccessful; among equals, the higher loss.
            better = (success & ~out_success) | ((success == out_success) & (loss > out_loss))
            out_x, out_success, out_loss = _where(better, x, out_x), out_success | success, torch.where(
                better, loss, out_loss)
            # The highest-loss point, for the step-size schedule.
            improved = loss > f_max
            x_max, grad_max, f_max = _where(improved, x, x_max), _where(improved, grad, grad_max), torch.where(
                improved, loss, f_max)

            if k + 1 in marks:  # checkpoint w_j = k + 1
                mark = k + 1
                increases = sum((losses[i + 1] > losses[i]).to(clean.dtype) for i in range(last_mark, mark))  # (b,)
                condition_1 = increases < self.rho * (mark - last_mark)
                condition_2 = ~halved_at_last_mark & (f_max <= f_max_at_last_mark)
                halve = condition_1 | condition_2  # (b,)
                eta = torch.where(halve, eta / 2, eta)
                x, grad = _where(halve, x_max, x), _where(halve, grad_max, grad)  # continue from x_max
                halved_at_last_mark, f_max_at_last_mark, last_mark = halve, f_max, mark
        return _Run(out_x, out_success, out_loss, torch.stack(trace), torch.stack(steps_taken))

    def perturb(self, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None, generator: torch.Generator) -> EvasionResult:
        self._check_classes(objective, pixels, targets)
        clean = pixels.detach()  # (B, 3, H, W)
        n = clean.shape[0]
        adv, success = clean.clone(), torch.zeros(n, dtype=torch.bool, device=clean.device)
        best_loss = clean.new_full((n,), -math.inf)
        trace = clean.new_zeros(self.steps, n)
        step_size = clean.new_zeros(self.steps, n)
        restart = torch.zeros(n, dtype=torch.long, device=clean.device)
        for r in range(self.n_restarts):
            todo = (~success).nonzero().squeeze(1)  # (b,): restart r only where nothing succeeded yet
            if todo.numel() == 0:
                break
            run = self._run(objective, clean[todo], labels[todo], None if targets is None else targets[todo],
                            generator)
            loss = run.loss.to(best_loss.dtype)  # an objective may compute its loss in float32
            take = run.success | (loss > best_loss[todo])  # todo samples are all unsuccessful so far
            idx = todo[take]
            adv[idx], success[idx], best_loss[idx] = run.adv[take], run.success[take], loss[take]
            trace[:, idx] = run.trace[:, take].to(trace.dtype)
            step_size[:, idx], restart[idx] = run.step_size[:, take], r
        return self.result(objective, adv, labels, targets, trace, step_size=step_size, best_loss=best_loss,
                           restart=restart, checkpoints=checkpoints(self.steps))
