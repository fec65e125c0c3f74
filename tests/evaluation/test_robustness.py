"""Robust accuracy under an attack ensemble, and the gradient-masking checks, on the shipped model.

``shapes-clip-resnet``, shapes-world test images, zero-shot over 48 classes, fixed seeds; the
``fast`` preset keeps the tests short (the ``standard`` preset is what evaluations report).
Measured (seed 0, first 100 images, L-inf): clean 1.00; fast ensemble at 4/255: after APGD-CE
0.25, after APGD-T 0.19, after PGD-10 0.19 (PGD-10 alone 0.36); at 8/255: 0.00.

The checks must pass on the undefended model and must fail on a gradient-masked copy of it (its
input rounded to 16 levels, a step function whose gradient is zero everywhere): there the
white-box ensemble reports 100% robust accuracy at 8/255 while Square, a black-box attack, takes
it to 0.55. That model fails zero_gradients, large_eps and black_box; each of the other three checks has its
own model built to fail it (12 test images of one class, ~6 CPU-s together): a front end that snaps inputs
beyond 6/255 of every clean image back to the nearest one (robust accuracy rises with eps: monotone_eps,
large_eps, unbounded) and one whose gradient exists only at the clean images (one FGSM step from there beats
the randomly started iterative ensemble: single_step).
"""

from __future__ import annotations

import pytest
import torch

from mmsec.attacks import PGD, ZeroShotObjective
from mmsec.attacks.adversarial import APGD
from mmsec.attacks.projection import lp_norm
from mmsec.data.shapes import ShapesWorld, zeroshot_prompts
from mmsec.evaluation import EnsembleMember, ensemble, gradient_masking_checks, robust_accuracy

SEED = 0


@pytest.fixture(scope="module")
def data():
    batch = ShapesWorld(32).batch("test", 0, 100)
    return batch.pixels(), batch.labels


@pytest.fixture(scope="module")
def objective(zoo_resnet):
    return ZeroShotObjective(zoo_resnet, zeroshot_prompts())


class RoundedInput(torch.nn.Module):
    """A deliberately gradient-masked CLIP: it rounds its input pixels to ``levels`` values before
    the image tower (a non-differentiable quantisation "defence": the gradient is zero)."""

    def __init__(self, inner, levels: int = 16):
        super().__init__()
        self.inner, self.levels = inner, levels
        self.image_size = inner.image_size

    def tokenize(self, texts):
        return self.inner.tokenize(texts)

    def normalize(self, pixels):
        return self.inner.normalize(pixels)

    def encode_text(self, tokens):
        return self.inner.encode_text(tokens)

    @property
    def logit_scale(self):
        return self.inner.logit_scale

    def encode_image(self, pixels):
        return self.inner.encode_image(torch.round(pixels * (self.levels - 1)) / (self.levels - 1))


class Saturated(ZeroShotObjective):
    """Logits scaled by 1e4: the softmax saturates and the cross-entropy gradient underflows to 0."""

    def logits(self, pixels):
        return super().logits(pixels) * 1e4


def test_presets():
    standard = ensemble("standard", 8 / 255)
    assert [m.name for m in standard] == ["apgd-ce", "apgd-t", "pgd-50"]
    apgd_ce, apgd_t, pgd = standard
    assert (apgd_ce.attack.steps, apgd_ce.attack.loss, apgd_ce.attack.n_restarts) == (100, "ce", 1)
    assert (apgd_t.attack.steps, apgd_t.attack.loss, apgd_t.n_target_classes) == (100, "dlr", 3)
    assert (pgd.attack.steps, pgd.restarts) == (50, 2) and pgd.attack.alpha == pytest.approx(2.5 * 8 / 255 / 50)
    assert all(m.attack.eps == 8 / 255 for m in standard + ensemble("fast", 8 / 255))
    assert all(m.attack.norm == "l2" for m in ensemble("standard", 0.5, "l2"))


def test_fast_ensemble_worst_case(objective, data):
    pixels, labels = data
    eps = 4 / 255
    result = robust_accuracy(objective, pixels, labels, eps, attacks="fast", generator=SEED)
    accs = result.accuracies()  # clean 1.00, apgd-ce 0.25, apgd-t 0.19, pgd-10 0.19
    assert accs["clean"] > 0.95
    pgd_alone = 1 - PGD(eps=eps, alpha=eps / 4, steps=10)(objective, pixels, labels, generator=SEED).success_rate
    assert result.robust_accuracy <= pgd_alone - 0.1, (result.robust_accuracy, pgd_alone)  # 0.19 vs 0.36
    assert result.robust_accuracy < 0.3
    # Cumulative: each attack only lowers the count; robust = correct after the last one.
    cumulative = [accs[m] for m in ("clean", "apgd-ce", "apgd-t", "pgd-10")]
    assert cumulative == sorted(cumulative, reverse=True)
    assert torch.equal(result.robust, result.per_attack["pgd-10"]) and not (result.robust & ~result.clean_correct).any()
    # Adversarial images: in the ball, misclassified where broken, clean where robust.
    assert (lp_norm(result.adv_pixels - pixels, "linf") <= eps + 1e-6).all()
    broken = result.clean_correct & ~result.robust
    assert (objective.predict(result.adv_pixels[broken]) != labels[broken]).all()
    # Robust samples carry the last failed attempt: perturbed, inside the budget, still correct.
    robust = result.robust
    assert (result.adv_pixels[robust] != pixels[robust]).any()
    assert (objective.predict(result.adv_pixels[robust]) == labels[robust]).all()
    assert {result.broken_by[i] for i in broken.nonzero().squeeze(1).tolist()} <= {"apgd-ce", "apgd-t", "pgd-10"}
    assert all(result.broken_by[i] is None for i in result.robust.nonzero().squeeze(1).tolist())
    assert "robust (worst case)" in result.summary()


def test_individual_mode_is_the_per_sample_and(objective, data):
    pixels, labels = data[0][:40], data[1][:40]
    result = robust_accuracy(objective, pixels, labels, 4 / 255, attacks="fast", generator=SEED, individual=True)
    every = result.clean_correct.clone()
    for flags in result.per_attack.values():
        every &= flags
        assert flags.float().mean() >= result.robust_accuracy
    assert torch.equal(result.robust, every)
    # Each attack alone is weaker than the ensemble on some sample (measured: APGD-CE alone 0.25 of these).
    assert max(f.float().mean().item() for f in result.per_attack.values()) > result.robust_accuracy


def test_ensemble_is_not_fooled_by_a_saturated_softmax(objective, data):
    saturated = Saturated(objective.model, zeroshot_prompts())
    pixels, labels = data[0][:40], data[1][:40]
    result = robust_accuracy(saturated, pixels, labels, 8 / 255, attacks="fast", generator=SEED)
    accs = result.accuracies()  # apgd-ce 1.00 (zero CE gradient), then APGD-T's DLR: 0.00
    assert accs["apgd-ce"] > 0.9, accs
    assert result.robust_accuracy < 0.15, accs
    report = gradient_masking_checks(saturated, pixels, labels, 8 / 255, attacks="fast", generator=SEED,
                                     checks=["zero_gradients"])
    assert report.failed == ["zero_gradients"] and report["zero_gradients"].value > 0.9


def test_bad_arguments(objective, data):
    pixels, labels = data[0][:4], data[1][:4]
    with pytest.raises(ValueError, match="eps=0.0156"):
        robust_accuracy(objective, pixels, labels, 8 / 255, attacks=[APGD(eps=4 / 255)])
    with pytest.raises(ValueError, match="norm"):
        robust_accuracy(objective, pixels, labels, 0.5, norm="l2", attacks=[APGD(eps=0.5)])
    with pytest.raises(ValueError, match="preset"):
        robust_accuracy(objective, pixels, labels, 8 / 255, attacks="autoattack")
    with pytest.raises(ValueError, match="unique"):
        robust_accuracy(objective, pixels, labels, 8 / 255, attacks=[APGD(eps=8 / 255), APGD(eps=8 / 255)])
    with pytest.raises(ValueError, match="restarts"):
        EnsembleMember("x", APGD(), restarts=0)
    with pytest.raises(ValueError, match="eps"):
        robust_accuracy(objective, pixels, labels, -1.0)
    with pytest.raises(ValueError, match="checks"):
        gradient_masking_checks(objective, pixels, labels, 8 / 255, checks=["gradient"])
    with pytest.raises(ValueError, match="preset"):
        gradient_masking_checks(objective, pixels, labels, 8 / 255, attacks=[APGD()], checks=["large_eps"])
    with pytest.raises(ValueError, match="large_eps"):
        gradient_masking_checks(objective, pixels, labels, 8 / 255, large_eps=4 / 255)
    with pytest.raises(ValueError, match="every clean sample wrong"):
        gradient_masking_checks(objective, pixels, (labels + 1) % 48, 8 / 255, checks=["unbounded"])

    class NoLogits:
        threat_model = "white-box"
        model = None

        def loss(self, pixels, labels, targets):
            return objective.loss(pixels, labels, targets)

        def success(self, pixels, labels, targets):
            return objective.success(pixels, labels, targets)

    with pytest.raises(TypeError, match="logits"):
        robust_accuracy(NoLogits(), pixels, labels, 8 / 255, attacks="fast")
    ce_only = robust_accuracy(NoLogits(), pixels, labels, 8 / 255, attacks=[APGD(eps=8 / 255, steps=5)])
    assert ce_only.robust_accuracy <= ce_only.clean_accuracy


def test_masking_checks_pass_on_the_undefended_model(objective, data):
    pixels, labels = data[0][:50], data[1][:50]
    report = gradient_masking_checks(objective, pixels, labels, 4 / 255, attacks="fast", generator=SEED,
                                     square_queries=300)
    assert report.passed, report.summary()
    assert list(report.checks) == ["zero_gradients", "large_eps", "monotone_eps", "black_box", "single_step",
                                   "unbounded"]
    # Measured: robust accuracy 0.90 / 0.18 / 0.00 / 0.00 at eps 2, 4, 8, 64 /255; Square and FGSM
    # break none of the ensemble's survivors.
    accs = report.accuracy_by_eps
    assert accs[64 / 255] == 0.0 and accs[2 / 255] > accs[4 / 255] + 0.3
    assert report["black_box"].value == 0.0 and report["single_step"].value == 0.0
    assert "all passed" in report.summary()


def test_masking_checks_fail_on_a_gradient_masked_model(zoo_resnet, data):
    masked = ZeroShotObjective(RoundedInput(zoo_resnet).eval(), zeroshot_prompts())
    pixels, labels = data[0][:40], data[1][:40]
    assert (masked.predict(pixels) == labels).float().mean() > 0.95  # rounding keeps clean accuracy (1.00)
    report = gradient_masking_checks(masked, pixels, labels, 8 / 255, attacks="fast", generator=SEED,
                                     square_queries=300, checks=["zero_gradients", "large_eps", "black_box"])
    # The white-box ensemble sees no gradient: robust accuracy 1.00 at 8/255 (overstated), 0.125
    # at 64/255 (only its random start works); Square breaks 0.45 of the samples it could not.
    assert report.accuracy_by_eps[8 / 255] > 0.9
    assert set(report.failed) == {"zero_gradients", "large_eps", "black_box"}, report.summary()
    assert report["zero_gradients"].value == 1.0
    assert report["black_box"].value > 0.2, report.summary()  # measured 0.45
    assert "FAILED" in report.summary()


def test_deterministic_under_a_seed(objective, data):
    pixels, labels = data[0][:12], data[1][:12]
    torch.manual_seed(1)  # the global RNG must not matter
    a = robust_accuracy(objective, pixels, labels, 4 / 255, attacks="fast", generator=7)
    torch.manual_seed(2)
    b = robust_accuracy(objective, pixels, labels, 4 / 255, attacks="fast", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.robust, b.robust) and torch.equal(a.adv_pixels, b.adv_pixels)
    assert a.broken_by == b.broken_by


# ------------------------------------------------------------------------------------------------
# Each check on a model built to fail it (the undefended model passes all six, above). The rounded
# input fails zero_gradients, large_eps and black_box; the two front ends below fail the other three.
# ------------------------------------------------------------------------------------------------


def _nearest(pixels: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) L-inf distance of each image to its nearest clean image, and that image's index."""
    return (pixels.flatten(1)[:, None] - clean.flatten(1)[None]).abs().amax(-1).min(1)


class SnapsBack(ZeroShotObjective):
    """A "purifier" that knows the clean images: an input further than ``radius`` (L-inf) from every clean image
    is replaced by the nearest one. Below ``radius`` it is the plain model; beyond it every point an attack can
    start from is put back (gradient zero), so robust accuracy *rises* with the budget, up to an unbounded one.
    (On images of one class, so that a far start snapped to another clean image still gets its label.)"""

    def __init__(self, inner: ZeroShotObjective, clean: torch.Tensor, radius: float):
        self.model, self.classifier = inner.model, inner.classifier
        self.clean, self.radius = clean, radius

    def logits(self, pixels):
        dist, idx = _nearest(pixels, self.clean)
        far = (dist > self.radius).view(-1, 1, 1, 1)
        return super().logits(torch.where(far, self.clean[idx].to(pixels), pixels))


class GradientOnlyAtData(ZeroShotObjective):
    """The plain model's outputs everywhere, its gradient only at the clean images themselves (a shattered
    gradient): one FGSM step from the clean image follows the true gradient; every iterative attack of the
    ensemble starts at a random point of the ball, where the gradient is zero."""

    def __init__(self, inner: ZeroShotObjective, clean: torch.Tensor):
        self.model, self.classifier = inner.model, inner.classifier
        self.clean = clean

    def logits(self, pixels):
        at_data = (_nearest(pixels, self.clean)[0] == 0).view(-1, 1, 1, 1)
        return super().logits(torch.where(at_data, pixels, pixels.detach()))


@pytest.fixture(scope="module")
def one_class():
    """The first 12 test images of the most frequent test class (yellow circle)."""
    batch = ShapesWorld(32).batch("test", 0, 400)
    keep = (batch.labels == 3).nonzero().flatten()[:12]
    return batch.pixels()[keep], batch.labels[keep]


@pytest.fixture(scope="module")
def snapped_report(objective, one_class):
    pixels, labels = one_class
    snaps = SnapsBack(objective, pixels, radius=6 / 255)  # between eps (4/255) and 2 eps
    assert torch.equal(snaps.predict(pixels), objective.predict(pixels))  # the plain model on clean images
    return gradient_masking_checks(snaps, pixels, labels, 4 / 255, attacks="fast", generator=SEED,
                                   checks=["zero_gradients", "large_eps", "monotone_eps", "unbounded"])


def test_monotone_eps_fails_when_robust_accuracy_rises_with_the_budget(snapped_report):
    # Measured: robust accuracy 0.67 / 0.08 / 1.00 / 1.00 at eps 2, 4, 8, 64 /255: a rise of 0.92.
    report = snapped_report
    accs = [report.accuracy_by_eps[e] for e in sorted(report.accuracy_by_eps)]
    assert accs[1] < 0.5 and accs[2] > 0.9, accs  # below the radius the plain model, beyond it "robust"
    assert not report["monotone_eps"].passed and report["monotone_eps"].value >= 0.5, report.summary()
    assert report["zero_gradients"].passed  # the gradient at the clean images is the plain model's


def test_large_eps_fails_when_a_large_budget_leaves_the_model_robust(snapped_report):
    assert not snapped_report["large_eps"].passed and snapped_report["large_eps"].value >= 0.9  # measured 1.00


def test_unbounded_fails_when_an_unbounded_attack_cannot_break_the_model(snapped_report):
    assert not snapped_report["unbounded"].passed and snapped_report["unbounded"].value >= 0.9  # measured 1.00


def test_single_step_fails_when_one_fgsm_step_beats_the_iterative_ensemble(objective, one_class):
    pixels, labels = one_class
    masked = GradientOnlyAtData(objective, pixels)
    report = gradient_masking_checks(masked, pixels, labels, 8 / 255, attacks="fast", generator=SEED,
                                     checks=["zero_gradients", "single_step"])
    # Measured: the ensemble (random starts, zero gradients) leaves 1.00; FGSM breaks all of those (1.00).
    assert report.details["robust_accuracy"] > 0.9, report.summary()
    assert report["zero_gradients"].passed  # so this check alone would not see it
    assert not report["single_step"].passed and report["single_step"].value >= 0.5, report.summary()
