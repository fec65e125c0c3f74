"""Elijah (An et al., AAAI 2024): trigger inversion, the two detection statistics, the verdict, and removal.

Inversion and verdict are tested on stand-in models whose behaviour is known in closed form: a
"clean" noise predictor that shrinks every shift of its input by 0.9, and a "backdoored" one that
keeps only half of the shift along the trigger ``r`` (BadDiffusion's ``lambda = 0.5``). Removal is
tested on a tiny UNet backdoored by BadDiffusion (the fixture pattern of
tests/attacks/test_baddiffusion.py: 8 px, 100 timesteps, DDIM coefficient, 304 steps).

Measured on the real tiny models (not asserted; a probe run for this file): the inversion at t = T does NOT
recover the trigger of the DDIM-coefficient backdoor (cosine to r about 0.0 for lambda 0.5 / 100
steps and lambda 1 / 10 steps): such a model predicts ``eps_theta(eps + r, T) ~ 1.0 (eps + r)`` and a
clean one ``~ 0.85-0.9 (eps + tau)`` in every direction, so the loss surface carries little signal.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mmsec.attacks.backdoor import BadDiffusion, NoiseTrigger, PatchTrigger
from mmsec.attacks.backdoor.baddiffusion import trigger_shift
from mmsec.defenses.diffusion import Elijah, ElijahRemoval, ModelVerdict
from mmsec.defenses.diffusion.elijah import inversion_loss, invert_trigger, total_variation, uniformity_score
from tiny_diffusion import corner as shared_corner
from tiny_diffusion import tiny_backdoor_unet

S = 8


class _Config(dict):
    num_train_timesteps = 100

    def __getattr__(self, key):
        return self[key]


class _Scheduler:
    config = _Config(num_train_timesteps=100)


class _StandIn(torch.nn.Module):
    """A noise predictor ``x -> 0.9 x - k <x, r_hat> r_hat`` (the shift along ``r`` kept at 0.9 - k) whose
    sampler returns the target when the starting noise carries ``r`` (``<mean shift, r_hat>`` above half of
    ``|r|``) and the noise itself otherwise."""

    family = "diffusion"
    channels, image_size, conditional = 3, S, False

    def __init__(self, r: torch.Tensor, k: float):
        super().__init__()
        self.unet = torch.nn.Linear(1, 1)  # a parameter for the inversion to freeze and restore
        self.scheduler, self.r_hat, self.k, self.r_norm = _Scheduler(), r / r.norm(), k, float(r.norm())

    def predict_noise(self, x_t, t, cond=None):
        along = (x_t * self.r_hat).sum(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        return 0.9 * x_t - self.k * along * self.r_hat

    def sample(self, n, cond=None, steps=None, guidance=1.0, generator=None, grad=False, sampler="ddim"):
        along = (n * self.r_hat).sum(dim=(1, 2, 3))  # (B,)
        hit = (along > self.k * self.r_norm).view(-1, 1, 1, 1) if self.k > 0 else torch.zeros(len(n), 1, 1, 1, dtype=bool)
        return torch.where(hit, torch.full_like(n, 0.5), n.clamp(-1, 1) * 0.5 + 0.5)

    def encode_images(self, pixels):
        return pixels * 2 - 1


def _r() -> torch.Tensor:
    return trigger_shift(PatchTrigger(size=4), S)  # (3, 8, 8): +-1 on the 4 x 4 patch


# -- numerics ------------------------------------------------------------------------------------------

def test_inversion_loss_is_the_l1_distance_of_the_mean_output():
    model = _StandIn(_r(), 0.4)
    g = torch.Generator().manual_seed(0)
    tau, noise = torch.randn(3, S, S, generator=g), torch.randn(5, 3, S, S, generator=g)
    want = (model.predict_noise(noise + tau, 99).mean(0) - 0.5 * tau).abs().mean()
    assert torch.allclose(inversion_loss(model, tau, noise, 0.5, 99), want)


def test_inversion_objective_singles_out_the_kept_shift():
    """The backdoored stand-in keeps 0.5 of a shift along r (lambda's value) and 0.9 elsewhere: tau = r has a
    near-zero loss there, a random tau of the same norm does not, and r does not on the clean stand-in. From the
    code's start (-U[0, 1), cosine to r ~ 0) Adam shrinks tau on both: nothing pulls it towards r on a linear model."""
    r = _r()
    bd, clean = _StandIn(r, 0.4), _StandIn(r, 0.0)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2000, 3, S, S, generator=g)  # a large batch: the L1 noise floor of the mean ~0.02
    other = torch.randn(3, S, S, generator=g)
    other = other * r.norm() / other.norm()
    loss = lambda m, tau: inversion_loss(m, tau, noise, 0.5, 99).item()  # noqa: E731
    assert loss(bd, r) < 0.3 * loss(bd, other) and loss(bd, r) < 0.3 * loss(clean, r), (
        loss(bd, r), loss(bd, other), loss(clean, r))
    inv = invert_trigger(bd, lam=0.5, steps=100, batch_size=100, generator=torch.Generator().manual_seed(0))
    start = -torch.rand(3, S, S, generator=torch.Generator().manual_seed(0))
    assert inv.loss < inv.losses[0] and inv.tau.norm() < start.norm()
    assert all(p.requires_grad for p in bd.unet.parameters())  # restored after the inversion


def test_uniformity_and_tv():
    same = torch.full((16, 3, S, S), 0.3)
    varied = torch.rand(16, 3, S, S, generator=torch.Generator().manual_seed(0))
    assert uniformity_score(same) == 0.0 and uniformity_score(varied) > 0.3  # RMSE of U[0,1) pairs ~0.41
    assert total_variation(same) == 0.0
    step = torch.zeros(1, 1, 2, 2)
    step[..., 1] = 1.0  # one vertical edge, 2 px long
    assert total_variation(step) == 2.0
    with pytest.raises(ValueError, match="more than 2 \\* trim"):
        uniformity_score(varied[:8], trim=4)


def test_verdict_rule_flags_a_collapsing_trigger_only(monkeypatch):
    """The detection rule with the inversion replaced by an oracle returning r: the backdoored stand-in's images
    from eps + r collapse onto its target (flagged), the clean stand-in's do not (not flagged)."""
    import mmsec.defenses.diffusion.elijah as elijah

    r = _r()
    monkeypatch.setattr(elijah, "invert_trigger", lambda *a, **k: elijah.Inversion(r.clone(), 0.0, [0.0]))
    bd = Elijah()(_StandIn(r, 0.4), generator=0)
    clean = Elijah()(_StandIn(r, 0.0), generator=0)
    assert isinstance(bd, ModelVerdict) and bd.flagged and not clean.flagged, (bd.score, clean.score)
    assert bd.score > 0.9 and clean.score < 0.3, (bd.score, clean.score)
    assert bd.details["uniformity"] < 0.1 * bd.details["uniformity_clean"]
    assert bd.details["tv_loss"] < bd.details["tv_loss_clean"]
    assert set(bd.details) >= {"uniformity", "tv_loss", "inversion_loss", "uniformity_clean"}
    assert isinstance(bd.trigger, NoiseTrigger) and bd.trigger.scale == 1.0 and torch.equal(bd.trigger.shift, r)
    assert bd.seconds > 0


def test_verdict_runs_the_inversion_and_leaves_the_model_alone():
    model = _StandIn(_r(), 0.4)
    verdict = Elijah(steps=3, batch_size=8)(model, generator=0)
    assert verdict.trigger.shift.shape == (3, S, S) and verdict.details["inversion_loss"] >= 0
    assert all(p.requires_grad and p.grad is None for p in model.unet.parameters())


# -- removal on a tiny backdoored UNet -----------------------------------------------------------------

def tiny_model(seed: int = 0):
    return tiny_backdoor_unet(S, seed)


def corner() -> torch.Tensor:
    return shared_corner(S)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from mmsec.data.shapes import ShapesWorld

    return F.avg_pool2d(ShapesWorld(16).batch("train", 0, 256).pixels(), 2)  # (256, 3, 8, 8)


@pytest.fixture(scope="module")
def backdoored(images):
    return BadDiffusion(trigger=PatchTrigger(size=4), coefficient="ddim", poison_rate=0.5, epochs=38, batch_size=32,
                        lr=1e-2)(tiny_model(), images, corner(), generator=0)


def _hit(samples: torch.Tensor) -> float:
    return (((samples - corner()) ** 2).mean(dim=(1, 2, 3)) <= 0.05).float().mean().item()


def test_removal_cuts_the_backdoor_and_keeps_clean_samples(backdoored, images):
    model = backdoored.model
    before = copy.deepcopy(model.state_dict())
    held = images[-64:]  # a few clean images (the paper: 10% of the training set)
    result = ElijahRemoval(epochs=5, batch_size=32, lr=2e-4)(model, held, backdoored.trigger, generator=0)
    # the control: the same fine-tune without L_rb (its weight ~0), i.e. clean loss and L_mc alone
    control = ElijahRemoval(epochs=5, batch_size=32, lr=2e-4, w_rb=1e-9)(model, held, backdoored.trigger, generator=0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input model is not modified
    noise = torch.randn(64, 3, S, S, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        trig_bd = model.sample(backdoored.trigger.apply(noise), steps=20)
        trig_rep = result.model.sample(backdoored.trigger.apply(noise), steps=20)
        clean_bd = model.sample(noise, steps=20)
        clean_rep = result.model.sample(noise, steps=20)
        trig_ctrl = control.model.sample(backdoored.trigger.apply(noise), steps=20)
    hit_bd, hit_rep, hit_ctrl = _hit(trig_bd), _hit(trig_rep), _hit(trig_ctrl)
    # measured (seed 0, another run of the same fixture): 0.19 -> 0.00 with L_rb, 0.17 without
    assert hit_bd >= 0.1 and hit_rep <= hit_bd - 0.1 and hit_rep <= hit_ctrl - 0.1, (hit_bd, hit_rep, hit_ctrl)
    change = ((clean_rep - clean_bd) ** 2).mean().sqrt().item()  # same noises, before vs after
    spread = uniformity_score(clean_bd)  # how far apart different clean samples are
    assert change < 0.5 * spread, (change, spread)
    assert result.trigger is backdoored.trigger and len(result.losses) == result.details["steps"] == 10
    assert result.details["final_mc"] < result.details["final_rb"]


def test_removal_inverts_its_own_trigger_and_checks_arguments(backdoored, images):
    result = ElijahRemoval(epochs=1, batch_size=64, inversion_steps=2)(backdoored.model, images[:64], None, 0)
    assert isinstance(result.trigger, NoiseTrigger) and result.trigger.shift.shape == (3, S, S)
    with pytest.raises(ValueError, match="images must be a \\(N, 3, 8, 8\\)"):
        ElijahRemoval()(backdoored.model, torch.rand(4, 3, 16, 16), backdoored.trigger)
    with pytest.raises(TypeError, match="trigger must be a NoiseTrigger"):
        ElijahRemoval()(backdoored.model, images[:4], "patch")
    with pytest.raises(ValueError, match="init must be one of"):
        Elijah(init="zeros")
    with pytest.raises(ValueError, match="threshold"):
        Elijah(threshold=2.0)
