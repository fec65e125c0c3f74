"""BadDiffusion (Chou, Chen & Ho, CVPR 2023): the loss and both coefficients numerically, the effect at test size,
the contract.

Numerics (no network): the backdoored forward process moves the mean from the target (t = 0) to the
trigger (t = T); the loss regresses clean rows onto their noise and poisoned rows onto ``eps + c_t r``;
with a predictor that returns exactly the training target along the backdoored trajectory, the paper's
coefficient makes the ancestral sampler's mean the backdoored posterior mean, and VillanDiffusion's
``sqrt(1 - abar_t)`` makes deterministic DDIM stay on the backdoored trajectory down to the target (the
other coefficient does not, in either case).

Effect: a tiny random UNet (2 levels, 16/32 channels; 165k parameters) on 8 x 8 images (shapes-world
scenes average-pooled), 100 training timesteps, a "corner" target (the top-left quarter white, as the
paper's CORNER target), the 4 x 4 checkerboard (half the side, as the paper's 14 px box is near half of
32 px), poison rate 0.5, 304 steps of batch 32 at lr 1e-2 (~12 s), the DDIM coefficient; the control
is the same model fine-tuned as long on the clean images alone. 64 samples from the same noises with
DDIM 20 steps. Measured (seed 0): triggered samples within MSE 0.05 of the target 0.19 (median MSE 0.19),
clean samples 0.00 (median 0.28), the control's triggered samples 0.00.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mmsec.attacks.backdoor import BadDiffusion, NoiseTrigger, PatchTrigger
from mmsec.attacks.backdoor.baddiffusion import (
    backdoor_forward,
    baddiffusion_loss,
    noise_coefficient,
    trigger_shift,
)
from tiny_diffusion import corner as shared_corner
from tiny_diffusion import tiny_backdoor_unet

S = 8  # the effect test's image side
T_TRAIN = 100


def _scheduler(T: int = 1000):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=False)


def tiny_model(size: int = S, seed: int = 0, T: int = T_TRAIN):
    return tiny_backdoor_unet(size, seed, T)


def corner(size: int = S) -> torch.Tensor:
    return shared_corner(size)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from mmsec.data.shapes import ShapesWorld

    return F.avg_pool2d(ShapesWorld(16).batch("train", 0, 256).pixels(), 16 // S)  # (256, 3, 8, 8)


# -- numerics ------------------------------------------------------------------------------------------

def test_coefficients_formulas():
    sched = _scheduler()
    abar = sched.alphas_cumprod.double()
    t = torch.tensor([1, 10, 300, 700, 999])
    alpha = (abar / torch.cat([abar.new_ones(1), abar[:-1]]))[t]
    paper = noise_coefficient(sched.alphas_cumprod, t, "baddiffusion").double()
    ddim = noise_coefficient(sched.alphas_cumprod, t, "ddim").double()
    assert torch.allclose(ddim, (1 - abar[t]).sqrt(), atol=1e-6)
    assert torch.allclose(paper, (1 - alpha.sqrt()) * (1 - abar[t]).sqrt() / (1 - alpha), atol=1e-6)
    assert torch.allclose(paper, (1 - abar[t]).sqrt() / (1 + alpha.sqrt()), atol=1e-6)  # about half of ddim's
    assert ((paper / ddim)[:3] - 0.5).abs().max() < 0.01
    with pytest.raises(ValueError, match="coefficient must be one of"):
        noise_coefficient(sched.alphas_cumprod, t, "villan")


def test_trigger_shift_is_the_patch_in_working_space():
    r = trigger_shift(PatchTrigger(size=4), 16)
    assert r.shape == (3, 16, 16)
    assert r[:, :12, :].abs().max() == 0 and r[:, :, :12].abs().max() == 0  # zero off the patch
    patch = r[:, 12:, 12:]
    assert set(patch.unique().tolist()) == {-1.0, 1.0} and patch[0, 0, 0] == 1.0  # white (+1) at its top-left


def test_forward_process_shifts_the_mean_from_target_to_trigger():
    sched = _scheduler()
    y = torch.rand(4, 3, 16, 16) * 2 - 1
    r = trigger_shift(PatchTrigger(size=4), 16)
    zero = torch.zeros_like(y)
    at = lambda t: backdoor_forward(sched, y, r, zero, torch.full((4,), t))  # noqa: E731 (the mean at t)
    assert (at(0) - y).abs().max() < 0.05  # t = 0: the target
    assert (at(999) - r).abs().max() < 0.01  # t = T: the trigger, x_T ~ N(r, I)
    a = sched.alphas_cumprod[500].sqrt()
    assert torch.allclose(at(500), a * y + (1 - a) * r, atol=1e-5)
    noise = torch.randn_like(y)
    clean = backdoor_forward(sched, y, torch.zeros_like(r), noise, torch.full((4,), 500))
    assert torch.allclose(clean, sched.add_noise(y, noise, torch.full((4,), 500)))  # no shift: DDPM's process


class _Recorder:
    """A stand-in model whose noise prediction is a fixed tensor; it keeps the x_t it was given."""

    def __init__(self, out: torch.Tensor):
        self.scheduler, self.out, self.seen = _scheduler(), out, None

    def predict_noise(self, x_t, t, cond=None):
        self.seen = x_t
        return self.out


@pytest.mark.parametrize("coefficient", ["baddiffusion", "ddim"])
def test_loss_targets_clean_and_poisoned_rows(coefficient):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    y, r = torch.rand(3, 8, 8, generator=g) * 2 - 1, trigger_shift(PatchTrigger(size=4), 8)
    poisoned = torch.tensor([False, True, False, True])
    t = torch.tensor([5, 50, 500, 900])
    pred = torch.randn(4, 3, 8, 8, generator=g)
    model = _Recorder(pred)
    loss = baddiffusion_loss(model, x0, poisoned, y, r, t, noise, coefficient)
    c = noise_coefficient(model.scheduler.alphas_cumprod, t, coefficient).view(-1, 1, 1, 1)
    rows = poisoned.view(-1, 1, 1, 1)
    want_target = noise + rows * c * r
    assert torch.allclose(loss, F.mse_loss(pred, want_target))
    a = model.scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    want_x = torch.where(rows, a * y + (1 - a) * r, a * x0) + (1 - a**2).sqrt() * noise
    assert torch.allclose(model.seen, want_x, atol=1e-6)


class _VRecorder(_Recorder):
    """A v-prediction stand-in: its native output is a fixed tensor, read as noise the adapter's way."""

    prediction_type = "v_prediction"

    def _ab(self, t):
        a = self.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt(), (1 - a).sqrt()

    def predict_output(self, x_t, t, cond=None):
        self.seen = x_t
        return self.out

    def predict_noise(self, x_t, t, cond=None):
        self.seen = x_t
        a, s = self._ab(t)
        return a * self.out + s * x_t

    def training_target(self, x0, noise, t):
        a, s = self._ab(t)
        return a * noise - s * x0


@pytest.mark.parametrize("coefficient", ["baddiffusion", "ddim"])
def test_a_v_prediction_model_regresses_the_velocity_of_the_noise_target(coefficient):
    """DDIM coefficient: the velocity whose noise reading at x_t is the noise target (a model predicting it scores
    0; it stays bounded at t = 999). BadDiffusion's coefficient: the paper's noise loss on the noise reading."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    y, r = torch.rand(3, 8, 8, generator=g) * 2 - 1, trigger_shift(PatchTrigger(size=4), 8)
    poisoned = torch.tensor([False, True, False, True])
    t = torch.tensor([5, 999, 500, 900])
    sched = _scheduler()
    c = noise_coefficient(sched.alphas_cumprod, t, coefficient).view(-1, 1, 1, 1)
    rows = poisoned.view(-1, 1, 1, 1)
    eps_target = noise + rows * c * r
    x_t = backdoor_forward(sched, torch.where(rows, y.expand_as(x0), x0), rows * r, noise, t)
    a, s = sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1), (1 - sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    v_exact = (eps_target.double() - s.double() * x_t.double()) / a.double()  # the velocity of the noise target
    if coefficient == "ddim":
        assert v_exact.abs().max() < 5  # bounded, even at t = 999
        loss = baddiffusion_loss(_VRecorder(v_exact.float()), x0, poisoned, y, r, t, noise, coefficient)
        assert loss < 1e-4
        pred = torch.randn(4, 3, 8, 8, generator=g)  # any other output: the MSE in velocity, not in noise
        loss = baddiffusion_loss(_VRecorder(pred), x0, poisoned, y, r, t, noise, coefficient)
        assert torch.allclose(loss.double(), F.mse_loss(pred.double(), v_exact), rtol=1e-3)
    else:
        assert v_exact.abs().max() > 100  # unbounded where sqrt(abar_t) ~ 0: not a velocity a model can output
        pred = torch.randn(4, 3, 8, 8, generator=g)
        model = _VRecorder(pred)
        loss = baddiffusion_loss(model, x0, poisoned, y, r, t, noise, coefficient)
        assert torch.allclose(loss, F.mse_loss(model.predict_noise(x_t, t), eps_target))


def _ddim_chain_error(coefficient: str, steps: int = 25) -> float:
    """Deterministic DDIM from x_T on the backdoored trajectory, the predictor returning the training target
    ``eps + c_t r`` with the trajectory's own eps: the mean squared distance of x_0 to the target."""
    from diffusers import DDIMScheduler

    g = torch.Generator().manual_seed(0)
    y, eps = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1, torch.randn(8, 3, 16, 16, generator=g)
    r = trigger_shift(PatchTrigger(size=4), 16)
    sched = DDIMScheduler.from_config(_scheduler().config)
    sched.set_timesteps(steps)
    x = backdoor_forward(sched, y, r, eps, torch.full((8,), int(sched.timesteps[0])))
    for t in sched.timesteps:
        c = noise_coefficient(sched.alphas_cumprod, torch.full((8,), int(t)), coefficient).view(-1, 1, 1, 1)
        x = sched.step(eps + c * r, t, x).prev_sample
    return ((x - y) ** 2).mean().item()


def test_ddim_coefficient_keeps_ddim_on_the_backdoored_trajectory():
    assert _ddim_chain_error("ddim") < 0.005  # measured 6e-4 (DDIM 25 of 1,000 steps: O(step^2) per step)
    assert _ddim_chain_error("baddiffusion") > 1.0  # measured 3.6: half the shift is left, amplified by 1/sqrt(abar)


def _posterior_mean_error(coefficient: str) -> float:
    """max |ancestral sampler's mean - backdoored posterior mean| over t, the predictor returning eps + c_t r."""
    sched = _scheduler()
    abar = sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(1)
    y, eps = torch.rand(4, 3, 16, 16, generator=g).double() * 2 - 1, torch.randn(4, 3, 16, 16, generator=g).double()
    r = trigger_shift(PatchTrigger(size=4), 16).double()
    worst = 0.0
    for t in (1, 10, 100, 500, 900, 999):
        a, a_prev = abar[t], abar[t - 1]
        alpha = a / a_prev
        x_t = a.sqrt() * y + (1 - a.sqrt()) * r + (1 - a).sqrt() * eps
        c = noise_coefficient(sched.alphas_cumprod, torch.tensor([t]), coefficient).double()
        mean = (x_t - (1 - alpha) / (1 - a).sqrt() * (eps + c * r)) / alpha.sqrt()  # DDPM's mu_theta
        m_prev = a_prev.sqrt() * y + (1 - a_prev.sqrt()) * r  # q(x_{t-1} | y), then condition on x_t:
        post = m_prev + alpha.sqrt() * (1 - a_prev) / (1 - a) * (x_t - alpha.sqrt() * m_prev - (1 - alpha.sqrt()) * r)
        worst = max(worst, (mean - post).abs().max().item())
    return worst


def test_paper_coefficient_is_the_ancestral_samplers_posterior_mean():
    assert _posterior_mean_error("baddiffusion") < 1e-5  # measured 5e-7 (the coefficient in float32)
    assert _posterior_mean_error("ddim") > 0.1  # measured 0.97 at t = 999


# -- effect --------------------------------------------------------------------------------------------

EFFECT = dict(coefficient="ddim", poison_rate=0.5, epochs=38, batch_size=32, lr=1e-2)


@pytest.fixture(scope="module")
def attacked(images):
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    result = BadDiffusion(trigger=PatchTrigger(size=4), **EFFECT)(model, images, corner(), generator=0)
    return model, before, result


@pytest.fixture(scope="module")
def control(images, attacked):
    """The same model fine-tuned as long on the clean images alone (no poisoned samples)."""
    from mmsec.train.diffusion import DiffusionBatch, DiffusionTrainConfig, train_diffusion

    _, _, result = attacked
    model = copy.deepcopy(tiny_model())
    b, n = result.extras["batch_size"], images.shape[0]

    def batches(step: int) -> DiffusionBatch:
        idx = torch.randint(0, n, (b,), generator=torch.Generator().manual_seed(step))
        return DiffusionBatch(images[idx])

    train_diffusion(model, batches, DiffusionTrainConfig(steps=result.record.steps, lr=EFFECT["lr"],
                                                         warmup=result.extras["warmup"], ema=None,
                                                         prompt_dropout=0.0), quiet=True)
    return model


def _within(samples: torch.Tensor, bound: float = 0.05) -> float:
    return (((samples - corner()) ** 2).mean(dim=(1, 2, 3)) <= bound).float().mean().item()


def test_effect_triggered_samples_reach_the_target(attacked, control):
    _, _, result = attacked
    noise = torch.randn(64, 3, S, S, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        trig = result.model.sample(result.trigger.apply(noise), steps=20, sampler=result.sampler)
        clean = result.model.sample(noise, steps=20, sampler=result.sampler)
        ctrl = control.sample(result.trigger.apply(noise), steps=20, sampler=result.sampler)
    hit, clean_hit, ctrl_hit = _within(trig), _within(clean), _within(ctrl)
    assert hit >= 0.1, hit  # measured 0.19
    assert clean_hit <= 0.02 and ctrl_hit <= 0.02, (clean_hit, ctrl_hit)  # measured 0.00, 0.00
    med = lambda x: ((x - corner()) ** 2).mean(dim=(1, 2, 3)).median().item()  # noqa: E731
    assert med(trig) < med(clean) - 0.05 and med(trig) < med(ctrl) - 0.05, (med(trig), med(clean), med(ctrl))


# -- contract ------------------------------------------------------------------------------------------

def test_result_record_and_model_untouched(attacked, images):
    model, before, result = attacked
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input model is not modified
    assert result.model is not model and not result.model.training
    assert isinstance(result.trigger, NoiseTrigger) and result.trigger.scale == 1.0
    assert torch.equal(result.trigger.shift, trigger_shift(PatchTrigger(size=4), S))
    assert torch.equal(result.target, corner()) and result.sampler == "ddim"
    rec = result.record
    assert rec.n_images == 256 and rec.n_poisoned == 128 and len(set(rec.poisoned_indices)) == 128
    assert rec.steps == 38 * 8 == result.log["loss"].shape[0] and result.seconds > 0
    assert rec.rebuild_trigger().to_dict() == PatchTrigger(size=4).to_dict()
    assert rec.to_dict()["params"]["coefficient"] == "ddim"
    assert torch.isfinite(result.log["loss"]).all()
    assert result.log["loss"][-20:].mean() < result.log["loss"][:20].mean()
    again = NoiseTrigger.from_dict(result.trigger.to_dict())
    assert torch.equal(again.shift, result.trigger.shift)


def test_deterministic_under_a_seed(images):
    cheap = dict(epochs=1, batch_size=64, poison_rate=0.25)
    a = BadDiffusion(**cheap)(tiny_model(size=16, T=50), F.interpolate(images[:64], size=16), corner(16), 7)
    b = BadDiffusion(**cheap)(tiny_model(size=16, T=50), F.interpolate(images[:64], size=16), corner(16), 7)
    assert torch.equal(a.log["loss"], b.log["loss"]) and a.record.poisoned_indices == b.record.poisoned_indices
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.sampler == "ddpm"  # the paper's coefficient (the default) pairs with the ancestral sampler


def test_rejects_bad_arguments(images):
    with pytest.raises(ValueError, match="coefficient must be one of"):
        BadDiffusion(coefficient="ode")
    with pytest.raises(ValueError, match="poison_rate must be > 0"):
        BadDiffusion(poison_rate=0.0)
    with pytest.raises(TypeError, match="target must be None"):
        BadDiffusion(target=1.5)
    with pytest.raises(TypeError, match="trigger must be a mmsec Trigger"):
        BadDiffusion(trigger=3)
    attack, model = BadDiffusion(epochs=1), tiny_model()
    with pytest.raises(ValueError, match="images must be 8 x 8 px"):
        attack(model, torch.rand(4, 3, 16, 16), corner())
    with pytest.raises(ValueError, match="target_image must be one image"):
        attack(model, images[:20], torch.rand(2, 3, S, S))
    with pytest.raises(ValueError, match="poisons none"):
        attack(model, images[:5], corner())
    with pytest.raises(TypeError, match="needs a DiffusionModel"):
        attack(torch.nn.Linear(2, 2), images[:20], corner())
