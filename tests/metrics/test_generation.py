"""Generation metrics with the shipped judge: real images against noise, skewed and mislabelled sets; the
closed forms of SSIM, total variation and the Frechet distance."""

import numpy as np
import pytest
import torch

import mmsec
from mmsec.data.shapes import ShapesWorld
from mmsec.metrics.generation import (
    GENERATION_DEFINITIONS,
    class_distribution_distance,
    class_frequencies,
    frechet_distance,
    judge_frechet_distance,
    mse_to_target,
    prompt_adherence,
    recognition_rate,
    ssim,
    ssim_to_target,
    target_hit_rate,
    total_variation,
)


@pytest.fixture(scope="module")
def judge():
    return mmsec.load_model("zoo:shapes-judge", family="classifier")


@pytest.fixture(scope="module")
def real():
    return ShapesWorld(16).batch("test", 0, 256)


@pytest.fixture(scope="module")
def noise():
    return torch.rand(256, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference():
    return class_frequencies(ShapesWorld(16).batch("train", 0, 2000).labels, 48)


def test_every_metric_has_a_definition_and_fd_says_it_is_not_inception():
    for name in ("recognition_rate", "distinct_classes", "class_distribution_distance", "colour_adherence",
                 "shape_adherence", "prompt_adherence", "target_hit_rate", "mse_to_target_median",
                 "mse_to_target_within", "ssim_to_target", "judge_fd"):
        assert GENERATION_DEFINITIONS[name].description
    assert "NOT Inception FID" in GENERATION_DEFINITIONS["judge_fd"].description
    assert not GENERATION_DEFINITIONS["judge_fd"].higher_is_better
    assert "> 0.9" in GENERATION_DEFINITIONS["recognition_rate"].description


def test_real_images_are_recognised_and_noise_is_not(judge, real, noise):
    assert recognition_rate(judge, real.pixels()) >= 0.9
    assert recognition_rate(judge, noise) <= 0.05
    assert recognition_rate(judge, noise, threshold=0.0) == 1.0  # every top probability exceeds 0
    judge.train()  # the metric judges in eval mode and gives the mode back
    try:
        assert recognition_rate(judge, real.pixels()[:32]) == recognition_rate(judge, real.pixels()[:32])
        assert judge.training
    finally:
        judge.eval()
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        recognition_rate(judge, real.pixels() * 2 - 1)


def test_class_distribution_of_real_skewed_and_noise_sets(judge, noise, reference):
    # 1,000 images: sampling noise alone puts 48 near-uniform classes at a distance of ~0.09 (~0.17 at 256)
    real = ShapesWorld(16).batch("test", 0, 1000)
    full = class_distribution_distance(judge, real.pixels(), reference)
    red = real.pixels()[real.labels % 8 == 0]  # only the red objects: 6 of 48 classes
    skewed = class_distribution_distance(judge, red, reference)
    nothing = class_distribution_distance(judge, noise, reference)
    assert full.distance <= 0.15 and full.distinct_classes == 48 and full.recognised >= 950
    assert skewed.distance >= 0.8 and skewed.distinct_classes <= 6
    assert nothing.distance >= 0.9
    assert total_variation(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == 1.0
    assert total_variation(torch.tensor([1.0, 1.0]), torch.tensor([3.0, 1.0])) == pytest.approx(0.25)


def test_prompt_adherence_of_true_shuffled_and_recoloured_prompts(judge, real):
    x = real.pixels()[:96]
    scenes = real.scenes[:96]
    own = [f"a {s.color} {s.shape}" for s in scenes]
    assert prompt_adherence(judge, x, own).both >= 0.95
    rolled = prompt_adherence(judge, x, own[1:] + own[:1])  # other images' prompts
    assert rolled.both <= 0.15 and rolled.colour <= 0.35 and rolled.shape <= 0.4
    colours = ["red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple"]
    recoloured = [f"a {colours[(colours.index(s.color) + 1) % 8]} {s.shape} in the top left" for s in scenes]
    wrong_colour = prompt_adherence(judge, x, recoloured)
    assert wrong_colour.colour == 0.0 and wrong_colour.shape >= 0.95 and wrong_colour.both == 0.0
    with pytest.raises(ValueError, match="names no shape"):
        prompt_adherence(judge, x[:1], ["a red thing"])


def test_target_hit_rate_of_target_and_other_images(judge, real, noise):
    target = "red circle"
    is_target = real.labels == 0
    assert is_target.sum() >= 2
    assert target_hit_rate(judge, real.pixels()[is_target], target) >= 0.9
    assert target_hit_rate(judge, real.pixels()[~is_target], 0) <= 0.01
    assert target_hit_rate(judge, noise, target) <= 0.01
    with pytest.raises(ValueError, match="not one of the judge's classes"):
        target_hit_rate(judge, noise[:2], "red blob")


def test_mse_and_ssim_to_a_target(real):
    x = real.pixels()[:32]
    target = x[0]
    noisy = (target + 0.05 * torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    near, far = mse_to_target(noisy, target), mse_to_target(x[1:], target)
    assert near.median <= 0.003 and near.within == 1.0
    assert far.median >= 0.02 and far.within <= 0.2 and far.per_image.shape == (31,)
    assert ssim_to_target(target[None].expand(4, -1, -1, -1), target) == pytest.approx(1.0, abs=1e-6)
    assert ssim_to_target(noisy, target) >= ssim_to_target(x[1:], target) + 0.3
    # Constant images: no variance, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1).
    a, b = torch.full((1, 3, 16, 16), 0.3), torch.full((1, 3, 16, 16), 0.6)
    assert ssim(a, b).item() == pytest.approx((2 * 0.18 + 1e-4) / (0.09 + 0.36 + 1e-4), abs=1e-6)
    with pytest.raises(ValueError, match="target must be one image"):
        mse_to_target(x, torch.rand(3, 32, 32))


def test_frechet_distance_closed_form():
    mu1, mu2 = np.zeros(2), np.array([1.0, 0.0])
    cov1, cov2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    # |mu1 - mu2|^2 + sum over the diagonal of (sqrt(a) - sqrt(b))^2 = 1 + 1 + 1
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(3.0)
    assert frechet_distance(mu2, cov2, mu1, cov1) == pytest.approx(3.0)
    assert frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-9)


def test_judge_fd_of_held_out_real_images_is_far_below_noise(judge, real, noise):
    held_out = ShapesWorld(16).batch("val", 0, 256).pixels()
    same = judge_frechet_distance(judge, real.pixels(), held_out)
    to_noise = judge_frechet_distance(judge, real.pixels(), noise)
    assert same * 5 < to_noise
    assert judge_frechet_distance(judge, held_out, held_out) == pytest.approx(0.0, abs=1e-4)
