"""Effect tests of the first evasion attacks on the shipped zoo model, with margins, fixed seeds.

200 shapes-world test images, zero-shot classification over the 48 shape x colour classes
(``ZeroShotObjective``) and image-to-text retrieval over test captions (``RetrievalObjective``),
model ``shapes-clip-resnet``. Each threshold sits between the value measured with seed 0 (in
the comment; seed 1 gave the same within 2 points) and what a broken attack would give (a
wrong gradient sign, a missing projection, a step that never moves).

Measured (PGD-10, alpha = 2.5 * eps / steps, seed 0): L-inf robust accuracy 1.00 / 0.915 / 0.38
/ 0.04 at eps 1 / 2 / 4 / 8 /255 (noise of 8/255: 1.00; FGSM: 1.00 / 0.96 / 0.73 / 0.325); L2
0.745 / 0.205 / 0.025 at eps 0.25 / 0.5 / 1.0 (FGM 0.825 / 0.575 / 0.24, noise 1.00).
Targeted attacks are much harder than untargeted ones on this model: PGD-10 at 8/255 to one
fixed class reaches only 16% (torchattacks' PGD gives the same 16.3%), because recolouring the
object needs large changes; a shape change of the same colour reaches 83%, and a fixed class or
caption needs 16/255 and 30 steps (~90%).
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from mmsec.attacks import FGSM, PGD, RetrievalObjective, UniformNoise, ZeroShotObjective
from mmsec.attacks.projection import lp_norm
from mmsec.data.shapes import COLORS, SHAPES, ShapesWorld, shape_color_classes, zeroshot_prompts

N = 200
N_TARGETED = 100  # the 30-step targeted attacks run on the first 100 images (test time)
SEED = 0
LINF_EPS_255 = (1, 2, 4, 8)
L2_EPS = (0.25, 0.5, 1.0)


def pgd(eps: float, norm: str = "linf", steps: int = 10) -> PGD:
    return PGD(eps=eps, alpha=2.5 * eps / steps, steps=steps, norm=norm)  # Madry et al.'s step rule


def accuracy(result) -> float:
    """Untargeted: robust accuracy = fraction of samples the attack did not flip."""
    return 1.0 - result.success_rate


@pytest.fixture(scope="module")
def data():
    batch = ShapesWorld().batch("test", 0, N)
    return batch.pixels(), batch.labels, batch.captions


@pytest.fixture(scope="module")
def objective(zoo_resnet):
    return ZeroShotObjective(zoo_resnet, zeroshot_prompts())


@pytest.fixture(scope="module")
def clean_acc(objective, data):
    pixels, labels, _ = data
    return (objective.predict(pixels) == labels).float().mean().item()


@pytest.fixture(scope="module")
def linf_sweep(objective, data):
    """PGD-10 results at eps 1, 2, 4, 8 /255."""
    pixels, labels, _ = data
    return {e: pgd(e / 255)(objective, pixels, labels, generator=SEED) for e in LINF_EPS_255}


@pytest.fixture(scope="module")
def noise_8(objective, data):
    pixels, labels, _ = data
    return UniformNoise(eps=8 / 255)(objective, pixels, labels, generator=SEED)


def test_clean_model_is_accurate(clean_acc):
    assert clean_acc > 0.95  # measured 1.00; a weak model would make the tests below meaningless


def test_pgd_8_breaks_the_model_and_noise_does_not(clean_acc, linf_sweep, noise_8, data):
    pixels = data[0]
    pgd_acc, noise_acc = accuracy(linf_sweep[8]), accuracy(noise_8)
    assert pgd_acc < 0.15, pgd_acc  # measured 0.04
    assert abs(noise_acc - clean_acc) <= 0.05, (noise_acc, clean_acc)  # measured 1.00 vs 1.00
    for r in (linf_sweep[8], noise_8):
        assert lp_norm(r.adv_pixels - pixels, "linf").max() <= 8 / 255 + 1e-6


def test_pgd_accuracy_falls_with_eps(linf_sweep):
    accs = [accuracy(linf_sweep[e]) for e in LINF_EPS_255]  # measured 1.00, 0.915, 0.38, 0.04
    for weaker, stronger in pairwise(accs):
        assert stronger <= weaker + 0.02, accs
    assert accs[-1] < accs[0] - 0.5, accs
    assert accs[2] < 0.6, accs  # 4/255 already takes most of the accuracy


def test_pgd_loss_rises_over_the_steps(linf_sweep):
    trace = linf_sweep[4].loss_trace  # (steps, B); measured mean CE 0.004 -> 2.08
    assert trace.shape == (10, N)
    assert trace[-1].mean() > trace[0].mean() + 1.0
    assert (trace[-1] >= trace[0]).float().mean() > 0.95


def test_fgsm_beats_noise_and_pgd_beats_fgsm(objective, data, linf_sweep, noise_8):
    pixels, labels, _ = data
    fgsm = {e: accuracy(FGSM(eps=e / 255)(objective, pixels, labels)) for e in (4, 8)}  # 0.73, 0.325
    assert fgsm[8] < accuracy(noise_8) - 0.5, fgsm
    # Same eps: the iterative attack finds adversarial examples the one-step one misses.
    assert accuracy(linf_sweep[4]) < fgsm[4] - 0.2, (accuracy(linf_sweep[4]), fgsm)
    assert accuracy(linf_sweep[8]) < fgsm[8] - 0.15, (accuracy(linf_sweep[8]), fgsm)


def test_targeted_pgd_8_reaches_a_chosen_class(objective, data):
    pixels, labels, _ = data
    # The chosen class of each image: the same colour, the next shape (measured success 0.83).
    n_colors = len(COLORS)
    targets = ((labels // n_colors + 1) % len(SHAPES)) * n_colors + labels % n_colors
    attacked = pgd(8 / 255)(objective, pixels, labels, targets, generator=SEED)
    noise = UniformNoise(eps=8 / 255)(objective, pixels, labels, targets, generator=SEED)
    assert attacked.success_rate > 0.7, attacked.success_rate
    assert noise.success_rate < 0.02, noise.success_rate  # measured 0.0


def test_targeted_pgd_16_reaches_one_fixed_class(objective, data):
    pixels, labels, _ = data
    target = shape_color_classes().index("blue square")
    keep = labels[:N_TARGETED] != target
    pixels, labels = pixels[:N_TARGETED][keep], labels[:N_TARGETED][keep]
    targets = torch.full_like(labels, target)
    attacked = PGD(eps=16 / 255, alpha=2 / 255, steps=30)(objective, pixels, labels, targets, generator=SEED)
    noise = UniformNoise(eps=16 / 255)(objective, pixels, labels, targets, generator=SEED)
    assert attacked.success_rate > 0.75, attacked.success_rate  # measured 0.90
    assert noise.success_rate < 0.02, noise.success_rate  # measured 0.0


def test_targeted_pgd_16_retrieves_a_chosen_caption(zoo_resnet, data):
    pixels, _, captions = data
    gallery = sorted({c[0] for c in captions})  # "a {size} {colour} {shape} in the {position}", 155 unique
    objective = RetrievalObjective(zoo_resnet, gallery)
    labels = torch.tensor([gallery.index(c[0]) for c in captions])  # each image's own caption
    assert (objective.predict(pixels) == labels).float().mean() > 0.95  # clean i2t R@1, measured 1.00
    target = gallery.index("a large red cross in the top right")
    keep = labels[:N_TARGETED] != target
    pixels, labels = pixels[:N_TARGETED][keep], labels[:N_TARGETED][keep]
    targets = torch.full_like(labels, target)
    attacked = PGD(eps=16 / 255, alpha=2 / 255, steps=30)(objective, pixels, labels, targets, generator=SEED)
    noise = UniformNoise(eps=16 / 255)(objective, pixels, labels, targets, generator=SEED)
    # Measured 0.91 (small-object captions are harder: ~0.66 for "a small green triangle ...").
    assert attacked.success_rate > 0.75, attacked.success_rate
    assert noise.success_rate < 0.02, noise.success_rate  # measured 0.0


def test_l2_pgd_accuracy_falls_with_eps(objective, data):
    pixels, labels, _ = data
    results = [pgd(e, "l2")(objective, pixels, labels, generator=SEED) for e in L2_EPS]
    for eps, r in zip(L2_EPS, results, strict=True):
        assert lp_norm(r.adv_pixels - pixels, "l2").max() <= eps * (1 + 1e-5)
    accs = [accuracy(r) for r in results]  # measured 0.745, 0.205, 0.025
    for weaker, stronger in pairwise(accs):
        assert stronger <= weaker + 0.02, accs
    assert accs[-1] < accs[0] - 0.5, accs
    noise = accuracy(UniformNoise(eps=L2_EPS[-1], norm="l2")(objective, pixels, labels, generator=SEED))
    assert accs[-1] < noise - 0.7, (accs, noise)  # noise measured 1.00
    fgm = accuracy(FGSM(eps=0.5, norm="l2")(objective, pixels, labels))  # measured 0.575
    assert accs[1] < fgm - 0.2, (accs, fgm)
