"""APGD (Croce & Hein, ICML 2020) and the Square Attack (Andriushchenko et al., ECCV 2020).

Unit tests of APGD's step-size schedule on scripted toy objectives (the paper's checkpoints and
its two halving conditions, the restart from the best point), of the DLR loss, and of the
teaching errors; effect tests on the shipped ``shapes-clip-resnet`` with 100 shapes-world test
images (zero-shot over 48 classes), fixed seeds and margins. Measured values (seed 0) are in the
comments; thresholds sit between them and what a broken attack would give.

Measured on these 100 images, L-inf: at 4/255 PGD-10 (alpha eps/4) 0.36, APGD-CE-25 0.25 (seeds
0-2: 0.25 / 0.25 / 0.23; torchattacks.APGD-25 0.25 / 0.24 / 0.23), APGD-CE-100 0.22; at 8/255
PGD-10 0.04, APGD-CE-25 0.00, Square 0.60 after 300 queries and 0.17 after 1,000 (torchattacks'
Square 0.62 / 0.19; on the first 50 images 0.64 after 300), noise 1.00.
"""

from __future__ import annotations

import pytest
import torch

from mmsec.attacks import PGD, UniformNoise, ZeroShotObjective
from mmsec.attacks.adversarial import APGD, SquareAttack
from mmsec.attacks.adversarial.apgd import checkpoints, dlr_loss
from mmsec.attacks.adversarial.square import margin, p_schedule
from mmsec.attacks.projection import lp_norm
from mmsec.data.shapes import COLORS, SHAPES, ShapesWorld, zeroshot_prompts

N = 100
SEED = 0


def accuracy(result) -> float:
    return 1.0 - result.success_rate


@pytest.fixture(scope="module")
def data():
    batch = ShapesWorld(32).batch("test", 0, N)
    return batch.pixels(), batch.labels


@pytest.fixture(scope="module")
def objective(zoo_resnet):
    return ZeroShotObjective(zoo_resnet, zeroshot_prompts())


# ---------------------------------------------------------------------------------------------
# APGD's step-size schedule on toy objectives
# ---------------------------------------------------------------------------------------------


class Scripted:
    """A toy objective whose loss at the k-th call is ``values[k]`` (per sample), zero gradient."""

    threat_model = "white-box"

    def __init__(self, values: torch.Tensor):
        self.values = values  # (calls, B)
        self.calls = 0

    def loss(self, pixels, labels, targets):
        value = self.values[self.calls]
        self.calls += 1
        return pixels.flatten(1).sum(1) * 0.0 + value  # (B,), differentiable, gradient 0

    def success(self, pixels, labels, targets):
        return torch.zeros(pixels.shape[0], dtype=torch.bool)


def test_checkpoints_are_the_papers():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); w_j = ceil(p_j * N)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]


def test_step_size_halves_on_the_papers_two_conditions():
    steps, eps = 100, 8 / 255
    k = torch.arange(steps + 1, dtype=torch.float32)
    rising = k.clone()  # f rises at every step: never halve
    flat = torch.zeros(steps + 1)  # f never rises: condition 1 at every checkpoint
    below_start = k.clone()  # f rises at every step but stays below f(x0): condition 2 alone
    below_start[0] = 1000.0
    # Exactly rho * 16 = 12 rises in the interval (41, 57], f_max improving: the paper's strict "<"
    # keeps the step (AutoAttack's code, with "<=", would halve it).
    exact = k.clone()
    for i in (44, 48, 52, 56):
        exact[i:] -= 1.5  # a fall at step i, then rises again
    assert int((exact[42:58] > exact[41:57]).sum()) == 12 and exact[57] > exact[41]
    script = torch.stack([rising, flat, below_start, exact], dim=1)  # (steps + 1, 4)
    pixels = torch.full((4, 3, 4, 4), 0.5)
    result = APGD(eps=eps, steps=steps)(Scripted(script), pixels, torch.zeros(4, dtype=torch.long), generator=0)
    eta = result.extras["step_size"]  # (steps, 4): the step size of the update from x(k) to x(k+1)

    def expected(halved_at: list[int]) -> torch.Tensor:
        return torch.tensor([2 * eps / 2 ** sum(w <= i for w in halved_at) for i in range(steps)])

    marks = checkpoints(steps)
    torch.testing.assert_close(eta[:, 0], expected([]))
    torch.testing.assert_close(eta[:, 1], expected(marks))
    # Condition 2 needs "eta unchanged since the last checkpoint", so it fires every other time.
    torch.testing.assert_close(eta[:, 2], expected([22, 57, 80, 93]))
    torch.testing.assert_close(eta[:, 3], expected([]))
    assert result.extras["checkpoints"] == marks
    assert result.loss_trace.shape == (steps, 4)
    torch.testing.assert_close(result.loss_trace[:, 1], torch.zeros(steps))


def test_restart_from_the_best_point_converges_to_the_maximiser():
    """f(x) = -||x - c||^2 with c inside the ball: halving plus restarts from x_max converge on c."""
    eps = 8 / 255
    gen = torch.Generator().manual_seed(0)
    clean = 0.25 + 0.5 * torch.rand(4, 3, 8, 8, generator=gen)
    c = clean + (2 * torch.rand(clean.shape, generator=gen) - 1) * eps / 2

    class Bowl:
        threat_model = "white-box"

        def loss(self, pixels, labels, targets):
            return -((pixels - c) ** 2).flatten(1).sum(1)

        def success(self, pixels, labels, targets):
            return torch.zeros(pixels.shape[0], dtype=torch.bool)

    labels = torch.zeros(4, dtype=torch.long)
    result = APGD(eps=eps, steps=100)(Bowl(), clean, labels, generator=0)
    distance = lp_norm(result.adv_pixels - c, "linf")  # measured 0.0002-0.0005 (eps = 0.031)
    assert (distance < eps / 20).all(), distance
    assert (result.extras["step_size"][-1] < eps / 50).all()  # the step shrank
    # The returned point is the best one seen: its loss is at least every traced loss.
    assert (result.extras["best_loss"] >= result.loss_trace.max(dim=0).values).all()
    # PGD with a fixed step of the same start size keeps bouncing around c (measured 0.047).
    pgd = PGD(eps=eps, alpha=2 * eps, steps=100)(Bowl(), clean, labels, generator=0)
    assert (lp_norm(pgd.adv_pixels - c, "linf") > eps / 2).all()


# ---------------------------------------------------------------------------------------------
# Losses and argument checks
# ---------------------------------------------------------------------------------------------


def test_dlr_loss_formula_and_invariance():
    z = torch.tensor([[5.0, 3.0, 1.0, 0.0], [1.0, 4.0, 2.0, 0.0]])
    y = torch.tensor([0, 0])
    # sample 0: y is top; -(5 - 3) / (5 - 1) = -0.5. sample 1: -(1 - 4) / (4 - 1) = 1.0
    torch.testing.assert_close(dlr_loss(z, y, None), torch.tensor([-0.5, 1.0]))
    t = torch.tensor([2, 3])
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    torch.testing.assert_close(dlr_loss(z, y, t), torch.tensor([-(5 - 1) / (5 - 0.5), -(1 - 0) / (4 - 0.5)]))
    zs = 37.0 * z - 11.0  # shift and scale: a saturated softmax does not change it
    torch.testing.assert_close(dlr_loss(zs, y, None), dlr_loss(z, y, None))
    torch.testing.assert_close(dlr_loss(zs, y, t), dlr_loss(z, y, t))
    torch.testing.assert_close(margin(z, y), torch.tensor([2.0, -3.0]))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"loss": "cw"}, ValueError, "loss"),
    ({"loss": None}, ValueError, "loss"),
    ({"rho": 1.5}, ValueError, "rho"),
    ({"rho": "0.75"}, TypeError, "rho"),
    ({"n_restarts": 0}, ValueError, "n_restarts"),
    ({"steps": 0}, ValueError, "steps"),
])
def test_apgd_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        APGD(**kwargs)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"n_queries": 0}, ValueError, "n_queries"),
    ({"p_init": 0.0}, ValueError, "p_init"),
    ({"p_init": 1.5}, ValueError, "p_init"),
    ({"norm": "l2"}, ValueError, "only the L-inf"),
    ({"rescale_schedule": 1}, TypeError, "rescale_schedule"),
])
def test_square_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SquareAttack(**kwargs)


def test_logit_losses_need_logits_and_enough_classes(objective, data):
    pixels, labels = data[0][:2], data[1][:2]
    scripted = Scripted(torch.zeros(10, 2))
    with pytest.raises(TypeError, match="logits"):
        APGD(loss="dlr", steps=2)(scripted, pixels, labels)
    with pytest.raises(TypeError, match="logits"):
        SquareAttack(n_queries=2)(scripted, pixels, labels)
    APGD(loss="ce", steps=2)(Scripted(torch.zeros(3, 2)), pixels, labels)  # CE works without logits

    class ThreeClasses(ZeroShotObjective):
        def logits(self, pixels):
            return super().logits(pixels)[:, :3]

    three = ThreeClasses(objective.model, zeroshot_prompts())
    zeros = torch.zeros(2, dtype=torch.long)
    APGD(loss="dlr", steps=2)(three, pixels, zeros)  # untargeted DLR needs 3 classes
    with pytest.raises(ValueError, match="at least 4 classes"):
        APGD(loss="dlr", steps=2)(three, pixels, zeros, torch.ones(2, dtype=torch.long))


def test_square_p_schedule():
    # The reference code's schedule, for 10,000 queries: halved after 10, 50, 200, 500, 1000, ...
    assert [p_schedule(0.8, i, 10000) for i in (0, 10, 11, 50, 51, 201, 8001)] == [
        0.8, 0.8, 0.4, 0.4, 0.2, 0.1, 0.8 / 512]
    assert p_schedule(0.8, 11, 1000) == 0.8 / 4  # rescaled: iteration 11 of 1,000 is 110 of 10,000
    assert p_schedule(0.8, 11, 1000, rescale=False) == 0.4


# ---------------------------------------------------------------------------------------------
# Effect on the shipped model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apgd_4(objective, data):
    pixels, labels = data
    return APGD(eps=4 / 255, steps=25)(objective, pixels, labels, generator=SEED)


def test_apgd_ce_beats_pgd_10_and_noise(objective, data, apgd_4):
    pixels, labels = data
    eps = 4 / 255
    pgd = PGD(eps=eps, alpha=eps / 4, steps=10)(objective, pixels, labels, generator=SEED)
    noise = UniformNoise(eps=eps)(objective, pixels, labels, generator=SEED)
    apgd_acc, pgd_acc, noise_acc = accuracy(apgd_4), accuracy(pgd), accuracy(noise)  # 0.25, 0.36, 1.00
    assert apgd_acc <= pgd_acc + 0.02, (apgd_acc, pgd_acc)
    assert apgd_acc < noise_acc - 0.6, (apgd_acc, noise_acc)
    assert (lp_norm(apgd_4.adv_pixels - pixels, "linf") <= eps + 1e-6).all()
    # Per-sample best point: a sample APGD broke comes back broken; the others at their highest loss.
    assert torch.equal(apgd_4.success, objective.predict(apgd_4.adv_pixels) != labels)
    kept = ~apgd_4.success
    assert (apgd_4.extras["best_loss"][kept] >= apgd_4.loss_trace[:, kept].max(dim=0).values).all()


def test_apgd_agrees_with_torchattacks(objective, data, apgd_4):
    torchattacks = pytest.importorskip("torchattacks")
    pixels, labels = data

    class Logits(torch.nn.Module):
        def forward(self, x):
            return objective.logits(x)

    theirs = torchattacks.APGD(Logits().eval(), norm="Linf", eps=4 / 255, steps=25, n_restarts=1, seed=SEED,
                               loss="ce", rho=0.75)(pixels, labels)
    their_acc = (objective.predict(theirs) == labels).float().mean().item()  # measured 0.25
    assert abs(accuracy(apgd_4) - their_acc) <= 0.04, (accuracy(apgd_4), their_acc)


def test_apgd_l2_and_targeted_dlr(objective, data):
    pixels, labels = data[0][:50], data[1][:50]
    l2 = APGD(eps=0.5, norm="l2", steps=25)(objective, pixels, labels, generator=SEED)
    pgd_l2 = PGD(eps=0.5, alpha=0.125, steps=10, norm="l2")(objective, pixels, labels, generator=SEED)
    assert (lp_norm(l2.adv_pixels - pixels, "l2") <= 0.5 * (1 + 1e-5)).all()
    assert accuracy(l2) <= accuracy(pgd_l2) + 0.02, (accuracy(l2), accuracy(pgd_l2))  # measured 0.10 vs 0.14
    # Targeted DLR to the same colour, next shape (PGD-10 with alpha eps/4 reaches 0.88 of these 50).
    n_colors = len(COLORS)
    targets = ((labels // n_colors + 1) % len(SHAPES)) * n_colors + labels % n_colors
    apgd_t = APGD(eps=8 / 255, loss="dlr", steps=25)(objective, pixels, labels, targets, generator=SEED)
    assert apgd_t.success_rate > 0.75, apgd_t.success_rate  # measured 0.88
    assert torch.equal(apgd_t.success, objective.predict(apgd_t.adv_pixels) == targets)


def test_dlr_breaks_a_saturated_softmax_that_stops_ce(objective, data):
    """Scaling the logits by 1e4 makes the cross-entropy gradient underflow to exactly zero
    (a classic gradient-masking artefact); DLR is scale-invariant and still finds the attack."""

    class Saturated(ZeroShotObjective):
        def logits(self, pixels):
            return super().logits(pixels) * 1e4

    saturated = Saturated(objective.model, zeroshot_prompts())
    pixels, labels = data[0][:50], data[1][:50]
    eps = 8 / 255
    pgd = PGD(eps=eps, alpha=eps / 4, steps=10)(saturated, pixels, labels, generator=SEED)
    ce = APGD(eps=eps, steps=25)(saturated, pixels, labels, generator=SEED)
    dlr = APGD(eps=eps, steps=25, loss="dlr")(saturated, pixels, labels, generator=SEED)
    assert accuracy(pgd) > 0.9 and accuracy(ce) > 0.9, (accuracy(pgd), accuracy(ce))  # measured 1.00, 1.00
    assert accuracy(dlr) < 0.15, accuracy(dlr)  # measured 0.02


def test_square_breaks_the_model_without_gradients(objective, data):
    pixels, labels = data[0][:50], data[1][:50]
    eps, budget = 8 / 255, 300

    class NoGradients(ZeroShotObjective):
        """Fails if anything asks for a gradient: Square may only read scores."""

        def logits(self, pixels):
            assert not torch.is_grad_enabled() and not pixels.requires_grad, "Square asked for a gradient"
            return super().logits(pixels)

    spy = NoGradients(objective.model, zeroshot_prompts())
    square = SquareAttack(eps=eps, n_queries=budget)(spy, pixels, labels, generator=SEED)
    noise = UniformNoise(eps=eps)(objective, pixels, labels, generator=SEED)
    assert accuracy(square) < accuracy(noise) - 0.25, (accuracy(square), accuracy(noise))  # measured 0.64 vs 1.00
    assert (lp_norm(square.adv_pixels - pixels, "linf") <= eps + 1e-6).all()
    # Every pixel of a Square perturbation sits on the boundary of the ball (or of [0, 1]).
    delta = (square.adv_pixels - pixels).abs()
    at_edge = ((delta - eps).abs() < 1e-6) | (square.adv_pixels == 0) | (square.adv_pixels == 1)
    assert at_edge.all()
    queries = square.extras["queries"]
    assert (queries >= 1).all() and (queries <= budget).all()
    assert (queries[square.success] < budget).any() and (queries[~square.success] == budget).all()
    assert square.loss_trace.shape == (budget, 50)
    assert torch.equal(square.success, objective.predict(square.adv_pixels) != labels)
