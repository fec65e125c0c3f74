"""TERD (Mo et al., ICML 2024): the reversal, model detection and input detection on analytic noise predictors.

Why analytic models: TERD's reversed loss is zero exactly where the predictor is ``x + const`` in the
noise around ``x_T = eps + r``; an ideal predictor at t ~ T is ``x_t`` everywhere, so the signal is how
badly a model generalises off its training region. Tiny trained UNets (the BadDiffusion test's, 304 and
960 steps) did not carry it strongly enough for the reversal to find the trigger (the report has the
numbers), so these tests pin the algorithm on predictors whose landscape is known:

* backdoored: ``F(x) = x + k (x - r*)^2`` -- closest to affine in the noise around the trigger ``r*``
  (a 4 x 4 checkerboard on 3 x 8 x 8), so the reversed loss's expectation is lowest at ``r = r*``;
* clean: ``F(x) = x + k x^2`` -- the same with ``r* = 0`` (only the benign prior is "learned").

Measured (seed 0, 150 + 10 iterations): cosine of the reversed r to r* 0.99 (clean model's r vs r*:
~0), mean KL 0.12 vs 0.00, input AUROC 1.00 vs 0.20 (the clean model's reversed r is small
and arbitrary, so the paper's LLR > 0 rule has no power there).
"""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from mmsec import registry
from mmsec.attacks.backdoor import NoiseTrigger
from mmsec.defenses.diffusion import TERD, ModelVerdict, TERDInput
from mmsec.defenses.diffusion.terd_reversal import (
    differential_loss,
    kl_per_dimension,
    log_likelihood_ratio,
    reverse_trigger,
)

S, K = 8, 0.5
FAST = dict(iterations=150, refine_iterations=10, batch_size=16, window=10, sampler_steps=4)


def checkerboard() -> torch.Tensor:
    r = torch.zeros(3, S, S)
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    r[:, S - 4:, S - 4:] = ((i + j) % 2 * 2 - 1).float()  # +-1 at the bottom right, as BadDiffusion's patch
    return r


class Quadratic(nn.Module):
    """A noise predictor ``F(x) = x + k (x - center)^2``: affine in the noise only around ``center``."""

    def __init__(self, center: torch.Tensor, T: int = 100):
        from diffusers import DDPMScheduler

        super().__init__()
        self.center, self.k = center, K
        self.scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=False)
        self.image_size, self.channels = S, 3
        self.weight = nn.Parameter(torch.ones(()))  # a parameter, so the reversal's freezing is exercised

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def predict_noise(self, x_t, t, cond=None):
        return self.weight * x_t + self.k * (x_t - self.center) ** 2

    def sample(self, n, cond=None, steps=None, guidance=1.0, generator=None, grad=False):
        raise NotImplementedError


@pytest.fixture(scope="module")
def backdoored():
    return Quadratic(checkerboard())


@pytest.fixture(scope="module")
def clean():
    return Quadratic(torch.zeros(3, S, S))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


@pytest.fixture(scope="module")
def verdicts(backdoored, clean):
    detector = TERD(**FAST)
    return detector(backdoored, generator=0), detector(clean, generator=0)


def test_reversed_loss_is_lowest_at_the_trigger(backdoored):
    """Per pixel, (F(x1) - e1) - (F(x2) - e2) = k (e1 - e2)(e1 + e2 + 2 d) with d = r - r*: its expected square
    is k^2 (4 + 8 d^2), so the loss is lowest at r = r* and grows with ||r - r*||^2 (here 4D + 8 ||d||^2)."""
    g = torch.Generator().manual_seed(0)
    e1, e2, x0 = (torch.randn(256, 3, S, S, generator=g) for _ in range(3))
    t, one = torch.full((256,), 99), torch.tensor(1.0)
    at = lambda r: differential_loss(backdoored, x0, r, one, t, e1, e2).item()  # noqa: E731
    assert backdoored.scheduler.alphas_cumprod[99].item() < 1e-4  # x_0 is negligible at the last timestep
    c, D = checkerboard(), 3 * S * S
    expect = lambda d: 0.5 * K**2 * (4 * D + 8 * d.square().sum().item())  # noqa: E731
    for r in (c, torch.zeros_like(c), -c):
        assert at(r) == pytest.approx(expect(r - c), rel=0.1), (at(r), expect(r - c))
    assert at(c) < 0.8 * at(torch.zeros_like(c)) and at(torch.zeros_like(c)) < 0.8 * at(-c)


def test_reversal_recovers_the_trigger(verdicts):
    bad, good = verdicts
    assert isinstance(bad.trigger, NoiseTrigger) and bad.trigger.scale == 1.0
    cos_bad, cos_good = _cos(bad.trigger.shift, checkerboard()), _cos(good.trigger.shift, checkerboard())
    assert cos_bad > 0.9, cos_bad  # measured 0.99
    assert abs(cos_good) < 0.3 and cos_bad > abs(cos_good) + 0.6, (cos_bad, cos_good)
    random = torch.randn(3, S, S, generator=torch.Generator().manual_seed(1))
    assert abs(_cos(random, checkerboard())) < 0.3  # the baseline a random estimate gets


def test_model_detection_flags_the_backdoored_model_only(verdicts):
    bad, good = verdicts
    assert isinstance(bad, ModelVerdict) and bad.flagged and not good.flagged, (bad.score, good.score)
    assert bad.score > 5 * good.score and bad.score > bad.threshold > good.score
    assert bad.details["kl_mean"] == bad.score and bad.details["M_r"] == pytest.approx(bad.score + 0.4)
    assert bad.details["kl_var"] > good.details["kl_var"] and bad.seconds > 0


def test_input_detection_separates_triggered_noise(backdoored, clean, verdicts):
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(128, 3, S, S, generator=g)
    x_T = torch.cat([noise[:64], NoiseTrigger(checkerboard()).apply(noise[64:])])
    labels = [0] * 64 + [1] * 64
    detector = TERDInput(**FAST)
    on_bad, on_good = detector(backdoored, x_T, generator=0), detector(clean, x_T, generator=0)
    auc_bad = roc_auc_score(labels, on_bad.scores.numpy())
    auc_good = roc_auc_score(labels, on_good.scores.numpy())
    assert auc_bad >= 0.9, auc_bad  # measured 1.00
    assert auc_good < 0.75 and auc_bad > auc_good + 0.25, auc_good  # measured 0.20: no power on the clean model
    assert on_bad.flagged[64:].float().mean() > 0.9 and on_bad.flagged[:64].float().mean() < 0.1
    # the verdict's trigger can be passed in (no reversal), and the model's reversal is cached
    given = detector(backdoored, x_T, trigger=verdicts[0].trigger)
    assert given.details["trigger_given"] and roc_auc_score(labels, given.scores.numpy()) >= 0.9
    assert detector.trigger_for(backdoored) is detector.trigger_for(backdoored)


def test_statistics_formulas():
    r = torch.tensor([[[0.0, 1.0], [2.0, -1.0]]])
    assert torch.allclose(kl_per_dimension(r, 1.0), r.flatten() ** 2 / 2)
    assert torch.allclose(kl_per_dimension(torch.zeros(1, 2, 2), 0.5), torch.full((4,), 0.5**2 / 2 - 0.5 + 0.6931),
                          atol=1e-4)
    x = torch.randn(5, 1, 2, 2)
    want = (torch.distributions.Normal(r.flatten(), 0.7).log_prob(x.flatten(1)).sum(1)
            - torch.distributions.Normal(0.0, 1.0).log_prob(x.flatten(1)).sum(1))
    assert torch.allclose(log_likelihood_ratio(x, r, 0.7), want, atol=1e-4)


def test_model_untouched_and_registered(backdoored):
    before = [p.requires_grad for p in backdoored.parameters()]
    reverse_trigger(backdoored, iterations=2, refine_iterations=1, batch_size=2, sampler_steps=2, generator=0)
    assert [p.requires_grad for p in backdoored.parameters()] == before and backdoored.weight.grad is None
    assert registry.get("diffusion_model_detectors", "terd").factory is TERD
    assert registry.get("diffusion_input_detectors", "terd_input").factory is TERDInput
    assert TERD().params()["iterations"] == 3000 and TERDInput().params()["threshold"] == 0.0


def test_rejects_bad_arguments(backdoored):
    with pytest.raises(ValueError, match="iterations \\+ refine_iterations must be >= 1"):
        TERD(iterations=0, refine_iterations=0)
    with pytest.raises(ValueError, match="lr must be"):
        TERD(lr=0.0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        TERDInput(batch_size=2.5)
    with pytest.raises(ValueError, match="x_T must be \\(B, 3, 8, 8\\)"):
        TERDInput(**FAST)(backdoored, torch.randn(2, 3, 4, 4))
    with pytest.raises(TypeError, match="trigger must be None or a NoiseTrigger"):
        TERDInput(**FAST)(backdoored, torch.randn(2, 3, S, S), trigger=torch.zeros(3, S, S))
    with pytest.raises(ValueError, match="window must be at most"):
        reverse_trigger(backdoored, window=101)
