"""Square Attack (L-inf): score-based black-box random search with square-shaped updates.

Paper: "Square Attack: a query-efficient black-box adversarial attack via random search", Maksym
Andriushchenko, Francesco Croce, Nicolas Flammarion, Matthias Hein, ECCV 2020.
Reference implementation: ``square_attack_linf`` in github.com/max-andr/square-attack
(``attack.py``); AutoAttack's ``square.py`` (same authors) for the targeted loss.

Threat model: black-box (scores): the attacker queries the objective's logits on images of its
choice and never sees a gradient (the whole search runs under ``torch.no_grad()``); perturbation
within an L-inf ball of radius ``eps`` (pixel units), images kept in [0, 1]; untargeted or targeted.

Algorithm (per sample, images (3, h, w)): minimise a loss L by random search on the vertices of
the ball.
    Start: vertical stripes, x_best = clip(x + delta) with delta[c, :, j] = +-eps drawn per channel
    and column (one query).
    Then, for i = 1 .. n_queries - 1, while the sample is not yet adversarial:
        p = the schedule below; s = round(sqrt(p * h * w)) clipped to [1, h - 1] (the side of a
        square covering a fraction p of the pixels);
        draw a square position uniformly and one sign per channel; the candidate is x_best's
        perturbation with the square set to +-eps (redrawn until it changes x_best);
        query it; keep it if it lowers L or is adversarial.
    Schedule of p (the reference code's, for 10,000 queries, rescaled to ``n_queries`` when
    ``rescale_schedule``): p_init, halved after iterations 10, 50, 200, 500, 1000, 2000, 4000,
    6000 and 8000.
    Losses, from the objective's logits z: untargeted, the margin z_y - max_{k != y} z_k (the
    paper); targeted, the cross-entropy of the target, i.e. minus the objective's targeted loss
    (AutoAttack's Square; the reference code's targeted mode uses the margin to the target).
    A sample stops as soon as the objective's verdict says it is adversarial.

Arguments (pixel units, images in [0, 1]):
    eps: L-inf budget, default 8/255 (AutoAttack's CIFAR-10 setting).
    n_queries: query budget per sample, the stripe initialisation included, default 1000. The
        paper's ImageNet experiments allow 10,000 queries and AutoAttack's standard version 5,000;
        1,000 keeps a CPU evaluation of a few hundred images to minutes (our undefended zoo model
        falls in a few hundred queries, see tests/attacks/test_apgd_square.py). Raise it to 5,000
        (AutoAttack) for a final evaluation of a robust model.
    p_init: initial fraction of pixels changed per query, default 0.8: AutoAttack's value and the
        authors' choice for adversarially trained models (the paper uses 0.05 for undefended
        ImageNet models, where a smaller p is more query-efficient).
    norm: "linf" only (the paper's L2 version, with its different update shapes, is not
        implemented).
    rescale_schedule: rescale the p schedule from 10,000 queries to ``n_queries``, default True
        (the reference code; AutoAttack's standard version does not rescale its 5,000-query run).

Shapes: pixels (B, 3, H, W) float in [0, 1]; labels (B,) long; targets (B,) long or None.
Result: adv_pixels (B, 3, H, W), success (B,) bool, loss_trace (n_queries, B): the objective's
own loss (e.g. cross-entropy of the truth) at each sample's current best point after each query
(constant once the sample is done); extras: ``queries`` (B,) long, the queries each sample used.

Cost: one gradient-free forward per query, on the samples not yet adversarial only, plus one
forward for the final verdict.

Example (on a shipped model)::

    from mmsec.attacks import ZeroShotObjective; from mmsec.attacks.adversarial import SquareAttack
    from mmsec.zoo import load_model; from mmsec.data.shapes import ShapesWorld, zeroshot_prompts

    model, batch = load_model("shapes-clip-resnet"), ShapesWorld().batch("test", 0, 64)
    objective = ZeroShotObjective(model, zeroshot_prompts())
    result = SquareAttack(eps=8/255)(objective, batch.pixels(), batch.labels, generator=0)

Departures from the reference code: one random draw per sample from a torch.Generator (the
reference loops over images with numpy); the square position is uniform over all h - s + 1
positions, as in the paper's Algorithm 2 (the reference's ``randint(0, h - s)`` never reaches the
last one); images need not be square (s is capped by min(h, w) - 1); an update that is not an
improvement in loss is still kept when it is adversarial (AutoAttack's rule); the stopping verdict
is the objective's (argmax), not margin <= 0 (they differ only on exact ties); every sample is
attacked, including those the model already gets wrong (which stop after the first query).
"""

from __future__ import annotations

import math

import torch

from ...checks import check_bool, check_budget, check_int, check_norm, check_radius
from ...registry import register
from ..base import EvasionAttack, EvasionResult
from ..objectives import LogitObjective, Objective, require_logits

_MAX_REDRAWS = 100  # redraws of a square's signs that would leave x_best unchanged (the reference loops forever)
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # p halves after these (of 10,000) iterations


def p_schedule(p_init: float, iteration: int, n_queries: int, rescale: bool = True) -> float:
    """The reference code's piecewise-constant p at ``iteration`` (0-based, after the initial query)."""
    it = int(iteration / n_queries * 10000) if rescale else iteration
    halvings = sum(it > boundary for boundary in _SCHEDULE)
    return p_init / 2**halvings


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) z_y - max_{k != y} z_k: positive while the true class is predicted."""
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -math.inf)
    return z_y - others.amax(dim=1)


@register("attacks", "square")
class SquareAttack(EvasionAttack):
    """Square Attack (Andriushchenko et al., ECCV 2020): score-based L-inf random search with square updates."""

    name = "square"
    paper = "Andriushchenko et al., ECCV 2020"
    threat_model = "black-box (scores)"
    norms = ("linf",)

    def __init__(self, eps: float = 8 / 255,  # AutoAttack's CIFAR-10 budget
                 n_queries: int = 1000,  # paper 10,000 (ImageNet), AutoAttack 5,000; 1,000 for CPU
                 p_init: float = 0.8,  # AutoAttack / robust models (paper: 0.05 on undefended ImageNet)
                 norm: str = "linf",  # the L-inf version only
                 rescale_schedule: bool = True):  # the reference code rescales the p schedule
        if isinstance(norm, str) and norm == "l2":
            raise ValueError("norm must be 'linf': only the L-inf Square Attack is implemented (the paper's L2 "
                             "version uses different, Gaussian-like square updates), got 'l2'")
        self.norm = check_norm(norm, self.norms)
        self.eps = check_radius("eps", eps, self.norm)
        self.n_queries = check_int("n_queries", n_queries, 1)
        self.p_init = check_budget("p_init", p_init, 0.0, 1.0, hint=" (fraction of pixels changed per query)")
        if self.p_init == 0.0:
            raise ValueError("p_init must be in (0, 1] (fraction of pixels changed per query, e.g. 0.8), got 0.0")
        self.rescale_schedule = check_bool("rescale_schedule", rescale_schedule)

    def _loss(self, objective: LogitObjective, logits: torch.Tensor, labels: torch.Tensor,
              targets: torch.Tensor | None) -> torch.Tensor:
        """(b,) the loss Square minimises."""
        if targets is None:
            return margin(logits, labels)
        return -objective.loss_from_logits(logits, labels, targets)  # cross-entropy of the target

    def _signs(self, shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        """Uniform +-1 of ``shape``, drawn on the generator's device."""
        bits = torch.randint(0, 2, shape, generator=generator, device=generator.device)
        return (2 * bits - 1).to(device=like.device, dtype=like.dtype)

    def perturb(self, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None, generator: torch.Generator) -> EvasionResult:
        require_logits(objective, "SquareAttack", "scores each query by a margin of the objective's logits")
        with torch.no_grad():  # score-based: only forward queries, no gradient can be used
            adv, trace, queries = self._search(objective, pixels.detach(), labels, targets, generator)
        return self.result(objective, adv, labels, targets, trace, queries=queries)

    def _search(self, objective: LogitObjective, clean: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, c, h, w = clean.shape
        eps = self.eps
        # Vertical stripes: one sign per (sample, channel, column), the same down each column.
        x_best = (clean + eps * self._signs((n, c, 1, w), generator, clean)).clamp(0.0, 1.0)  # (B, 3, H, W)
        logits = objective.logits(x_best)  # (B, C)
        loss_best = self._loss(objective, logits, labels, targets)  # (B,)
        objective_loss = objective.loss_from_logits(logits, labels, targets)  # (B,) for the trace
        done = objective.success_from_logits(logits, labels, targets).bool()  # (B,)
        queries = torch.ones(n, dtype=torch.long, device=clean.device)
        trace = clean.new_empty(self.n_queries, n)
        trace[0] = objective_loss
        rows = torch.arange(h, device=clean.device)
        cols = torch.arange(w, device=clean.device)
        side_max = max(min(h, w) - 1, 1)
        for i in range(1, self.n_queries):
            active = (~done).nonzero().squeeze(1)  # (b,)
            if active.numel() == 0 or eps == 0.0:  # nothing left to attack (eps 0: nothing can change)
                trace[i:] = trace[i - 1]
                break
            b = active.numel()
            x, xb = clean[active], x_best[active]  # (b, 3, H, W)
            p = p_schedule(self.p_init, i - 1, self.n_queries, self.rescale_schedule)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), side_max)  # square side in pixels
            top = torch.randint(0, h - s + 1, (b,), generator=generator, device=generator.device).to(clean.device)
            left = torch.randint(0, w - s + 1, (b,), generator=generator, device=generator.device).to(clean.device)
            in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + s)  # (b, H)
            in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + s)  # (b, W)
            square = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (b, 1, H, W)
            delta = torch.where(square, eps * self._signs((b, c, 1, 1), generator, clean), xb - x)
            candidate = (x + delta).clamp(0.0, 1.0)
            for _ in range(_MAX_REDRAWS):  # a square that changes nothing would waste a query
                same = (((candidate - xb).abs() < 1e-7) | ~square).flatten(1).all(dim=1)  # (b,)
                if not same.any():
                    break
                redraw = square & same.view(-1, 1, 1, 1)
                delta = torch.where(redraw, eps * self._signs((b, c, 1, 1), generator, clean), delta)
                candidate = (x + delta).clamp(0.0, 1.0)
            logits = objective.logits(candidate)  # (b, C): one query per active sample
            queries[active] += 1
            loss = self._loss(objective, logits, labels[active], None if targets is None else targets[active])
            success = objective.success_from_logits(logits, labels[active],
                                                    None if targets is None else targets[active]).bool()
            keep = (loss < loss_best[active]) | success  # (b,)
            idx = active[keep]
            x_best[idx] = candidate[keep]
            loss_best[idx] = loss[keep]
            objective_loss[idx] = objective.loss_from_logits(
                logits[keep], labels[idx], None if targets is None else targets[idx])
            done[idx] = success[keep]
            trace[i] = objective_loss
        return x_best, trace, queries
