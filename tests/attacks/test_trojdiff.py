"""TrojDiff (Chen, Song & Li, CVPR 2023): the Trojan process numerically against the paper's closed forms, the
Trojan samplers, the effect at test size, the contract.

Numerics (no network): ``k_t``'s closed form solves the code's recursion; the one-step Trojan transitions
compose to the closed-form marginal ``N(sqrt(abar_t) x_0 + sqrt(1 - abar_t) mu, (1 - abar_t) gamma^2)``
(exactly, and by sampling chains); the Trojan DDPM step's mean and variance are the Bayes posterior of two
Gaussians; with the noise predictor a single target would have (an oracle), both Trojan samplers go
from Trojan noise to the target while DDIM's ordinary step does not.

Effect: a tiny random UNet (2 levels, 16/32 channels) on 8 x 8 images (shapes-world scenes average-pooled),
100 training timesteps, D2I towards a "corner" target (the top-left quarter white), the blend trigger
(gamma 0.6, the seeded-noise key), poison rate 0.5, 300 steps of batch 32 at lr 1e-2; the control is the
same model fine-tuned as long on the clean images alone. 64 samples from the same noises, Trojan DDIM 20
steps. Measured (seed 0): see the test's comments.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mmsec.attacks.backdoor import BlendedTrigger, NoiseTrigger, OptimizedPatch, PatchTrigger, SIGTrigger
from mmsec.attacks.backdoor.trojdiff import (
    TrojanNoise,
    TrojDiff,
    k_coefficients,
    rho_coefficients,
    trojan_ddpm_step,
    trojan_forward,
    trojan_maps,
    trojan_sample,
    trojdiff_loss,
)
from tiny_diffusion import corner as shared_corner
from tiny_diffusion import tiny_backdoor_unet

S = 8
T_TRAIN = 100


def _scheduler(T: int = 1000, clip: bool = False, schedule: str = "squaredcos_cap_v2"):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule, clip_sample=clip, timestep_spacing="trailing")


def tiny_model(size: int = S, seed: int = 0, T: int = T_TRAIN):
    return tiny_backdoor_unet(size, seed, T, clip=True, spacing="trailing")


def corner(size: int = S) -> torch.Tensor:
    return shared_corner(size)


WHITE = OptimizedPatch(torch.ones(3, 3, 3))  # the paper's patch: white, 3 x 3, bottom right


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from mmsec.data.shapes import ShapesWorld

    return F.avg_pool2d(ShapesWorld(16).batch("train", 0, 256).pixels(), 16 // S)  # (256, 3, 8, 8)


# -- the Trojan diffusion process ----------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
def test_k_closed_form_solves_the_recursion(schedule):
    """The code defines k_t by sqrt(1 - abar_t) = sum_{s <= t} k_s sqrt(abar_t / abar_s); the closed form solves it."""
    abar = _scheduler(schedule=schedule).alphas_cumprod.double()
    k = k_coefficients(abar)
    rec = torch.zeros_like(abar)
    for t in range(abar.shape[0]):
        rec[t] = (1 - abar[t]).sqrt() - (rec[:t] * (abar[t] / abar[:t]).sqrt()).sum()
    assert torch.allclose(k, rec, atol=1e-9)
    alpha = abar / torch.cat([abar.new_ones(1), abar[:-1]])
    assert torch.allclose(k[1:], (1 - abar[1:]).sqrt() - (alpha[1:] * (1 - abar[:-1])).sqrt())
    assert (k > 0).all()  # the mean drifts towards mu at every step


def test_transitions_compose_to_the_closed_form_marginal():
    """Mean and variance of q~(x_t | x_0) from t one-step transitions N(sqrt(alpha) x + k mu, (1 - alpha) gamma^2),
    exactly and by sampling 20,000 chains, against N(sqrt(abar) x0 + sqrt(1 - abar) mu, (1 - abar) gamma^2)."""
    T, gamma = 50, 0.6
    abar = _scheduler(T).alphas_cumprod.double()
    alpha = abar / torch.cat([abar.new_ones(1), abar[:-1]])
    k = k_coefficients(abar)
    x0, mu = torch.tensor([0.7, -0.3]).double(), torch.tensor([0.4, -0.8]).double()
    mean, var = x0.clone(), torch.zeros(())
    g = torch.Generator().manual_seed(0)
    chains = x0.expand(20_000, 2).clone()
    for t in range(T):
        mean = alpha[t].sqrt() * mean + k[t] * mu
        var = alpha[t] * var + (1 - alpha[t]) * gamma**2
        chains = alpha[t].sqrt() * chains + k[t] * mu + ((1 - alpha[t]) * gamma**2).sqrt() * torch.randn(
            chains.shape, generator=g, dtype=torch.float64)
        assert torch.allclose(mean, abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * mu, atol=1e-12)
        assert abs(var - (1 - abar[t]) * gamma**2) < 1e-12
    closed_mean = abar[-1].sqrt() * x0 + (1 - abar[-1]).sqrt() * mu
    assert (chains.mean(0) - closed_mean).abs().max() < 0.02 and (chains.std(0) - gamma).abs().max() < 0.01
    # trojan_forward draws the same marginal (the blend: scale gamma, shift mu)
    t = torch.full((20_000,), T - 1)
    drawn = trojan_forward(abar.float(), x0.float().view(1, 2, 1, 1).expand(20_000, 2, 1, 1),
                           torch.full((2, 1, 1), gamma), mu.float().view(2, 1, 1), torch.randn(20_000, 2, 1, 1,
                                                                                            generator=g), t)
    assert (drawn.mean(0).flatten() - closed_mean.float()).abs().max() < 0.02
    assert (drawn.std(0).flatten() - gamma * (1 - abar[-1]).sqrt().float()).abs().max() < 0.01


@pytest.mark.parametrize("pair", [(999, 998), (500, 499), (1, 0), (999, 959), (520, 480), (40, 0)])
def test_trojan_ddpm_step_is_the_bayes_posterior(pair):
    """q~(x_prev | x_t, x_0) by Gaussian conditioning of the Trojan process (strided steps included) against the
    Trojan DDPM step fed the noise prediction that recovers x_0, and rho against the code's coef_miu form."""
    t, prev = pair
    sched = _scheduler()
    sched.timesteps = torch.tensor([t, prev])  # previous_timestep reads the inference timesteps
    sched.num_inference_steps = 2
    abar = sched.alphas_cumprod.double()
    a, ap = abar[t], abar[prev]
    alpha = a / ap
    gamma = 0.4
    g = torch.Generator().manual_seed(t)
    x0, x_t, mu = (torch.rand(3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(3))
    scale, shift = torch.full((3, 4, 4), gamma, dtype=torch.float64), (1 - gamma) * mu
    # joint Gaussian: x_prev ~ q~(. | x0); x_t | x_prev ~ N(sqrt(alpha) x_prev + k mu', (1 - alpha) gamma^2)
    m_prev, v_prev = ap.sqrt() * x0 + (1 - ap).sqrt() * shift, (1 - ap) * gamma**2
    m_t, v_t = a.sqrt() * x0 + (1 - a).sqrt() * shift, (1 - a) * gamma**2
    cov = alpha.sqrt() * v_prev
    post_mean = m_prev + cov / v_t * (x_t - m_t)
    post_var = v_prev - cov**2 / v_t
    eps = (x_t - a.sqrt() * x0 - (1 - a).sqrt() * shift) / ((1 - a).sqrt() * scale)  # recovers x0 exactly
    step = lambda gen: trojan_ddpm_step(eps, t, x_t, scale, shift, sched, gen)  # noqa: E731
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = step(torch.Generator().manual_seed(5))
    beta_tilde = (1 - ap) / (1 - a) * (1 - alpha)
    assert abs(beta_tilde * gamma**2 - post_var) < 1e-12
    assert torch.allclose(out - gamma * beta_tilde.sqrt() * z, post_mean, atol=1e-9)
    if prev == t - 1:  # the code's coef_miu / (1 - abar_t), with its one-step k_t
        k = k_coefficients(abar)[t]
        code = ((1 - ap).sqrt() * (1 - alpha) - (1 - ap) * alpha.sqrt() * k) / (1 - a)
        assert torch.allclose(rho_coefficients(a, ap), code, atol=1e-12)


# -- the trigger ---------------------------------------------------------------------------------------

def test_trojan_maps_of_the_blend_and_the_patch():
    blend = BlendedTrigger()
    scale, shift = trojan_maps(blend, 0.6, 16)
    assert torch.allclose(scale, torch.full((3, 16, 16), 0.6))
    assert torch.allclose(shift, 0.4 * (2 * blend.blend_pattern(16, 16) - 1))
    scale, shift = trojan_maps(WHITE, 0.1, 16)
    patch = torch.zeros(3, 16, 16, dtype=torch.bool)
    patch[:, 13:, 13:] = True
    assert torch.allclose(scale[patch], torch.tensor(0.1)) and (scale[~patch] == 1).all()
    assert torch.allclose(shift[patch], torch.tensor(0.9)) and (shift[~patch] == 0).all()
    _, shift = trojan_maps(PatchTrigger(size=4), 0.1, 16)  # a checkerboard: +-0.9 on the patch
    assert shift[:, 12:, 12:].unique().tolist() == pytest.approx([-0.9, 0.9])
    with pytest.raises(TypeError, match="blend .* or a patch"):
        trojan_maps(SIGTrigger(), 0.5, 16)
    trojan = TrojDiff(trigger=WHITE).noise(16)  # gamma None: the paper's 0.1 for a patch
    x = trojan.apply(torch.randn(4000, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert abs(x[:, :, 13:, 13:].mean() - 0.9) < 0.01 and abs(x[:, :, 13:, 13:].std() - 0.1) < 0.01
    assert abs(x[:, :, :13].mean()) < 0.01 and abs(x[:, :, :13].std() - 1) < 0.01
    again = TrojanNoise.from_dict(trojan.to_dict())
    assert isinstance(again, NoiseTrigger) and torch.equal(again.scale, trojan.scale)


class _Recorder:
    """A stand-in model whose noise prediction is a fixed tensor; it keeps the x_t it was given."""

    def __init__(self, out: torch.Tensor):
        self.scheduler, self.out, self.seen = _scheduler(), out, None

    def predict_noise(self, x_t, t, cond=None):
        self.seen = x_t
        return self.out


def test_loss_diffuses_poisoned_rows_with_the_trojan_process():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    scale, shift = trojan_maps(BlendedTrigger(), 0.6, 8)
    poisoned = torch.tensor([False, True, False, True])
    t = torch.tensor([5, 50, 500, 900])
    pred = torch.randn(4, 3, 8, 8, generator=g)
    model = _Recorder(pred)
    loss = trojdiff_loss(model, x0, poisoned, scale, shift, t, noise)
    assert torch.allclose(loss, F.mse_loss(pred, noise))  # every row regresses its standard noise
    a = model.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    rows = poisoned.view(-1, 1, 1, 1)
    want = torch.where(rows, a.sqrt() * x0 + (1 - a).sqrt() * (0.6 * noise + shift),
                       a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert torch.allclose(model.seen, want, atol=1e-6)


# -- the Trojan generative process ---------------------------------------------------------------------

class _Oracle:
    """The noise prediction a model trained on the single image ``y`` with the Trojan process would have:
    ``(x_t - sqrt(abar) y - sqrt(1 - abar) shift) / (sqrt(1 - abar) scale)``."""

    default_steps = {"ddim": 25, "ddpm": 100}

    def __init__(self, y, scale, shift):
        self.scheduler, self.y, self.scale, self.shift = _scheduler(clip=True), y, scale, shift

    def predict_noise(self, x_t, t, cond=None):
        a = self.scheduler.alphas_cumprod[int(t)]
        return (x_t - a.sqrt() * self.y - (1 - a).sqrt() * self.shift) / ((1 - a).sqrt() * self.scale)

    def decode(self, x):
        return ((x + 1) / 2).clamp(0, 1)


@pytest.mark.parametrize("trigger", [BlendedTrigger(), WHITE], ids=["blend", "patch"])
def test_trojan_samplers_reach_the_target_and_the_clean_sampler_does_not(trigger):
    from mmsec.models.diffusers_adapter import sampler_scheduler

    trojan = TrojDiff(trigger=trigger).noise(16)
    y = corner(16) * 2 - 1
    oracle = _Oracle(y, trojan.scale, trojan.shift)
    noise = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for sampler, steps in (("ddim", 25), ("ddpm", 50)):
        out = trojan.generate(oracle, noise, steps, sampler, torch.Generator().manual_seed(1))
        assert (out - corner(16)).abs().max() < 1e-4, sampler
    sched = sampler_scheduler(oracle.scheduler.config, "ddim", 25)  # DDIM's own step from the same Trojan noise
    x = trojan.apply(noise)
    for t in sched.timesteps:
        x = sched.step(oracle.predict_noise(x, t), t, x).prev_sample
    where = (trojan.scale != 1).expand(8, -1, -1, -1)  # where the trigger acts
    assert (oracle.decode(x) - corner(16))[where].abs().mean() > 0.1


class _VOracle(_Oracle):
    """The v-prediction model trained on ``y`` with the Trojan process (trojdiff_loss's v branch): its velocity
    is ``sqrt(abar) n - sqrt(1 - abar) y`` with the Trojan noise ``n = (x_t - sqrt(abar) y) / sqrt(1 - abar)``,
    so its noise reading ``sqrt(abar) v + sqrt(1 - abar) x_t`` is ``n``."""

    prediction_type = "v_prediction"

    def predict_noise(self, x_t, t, cond=None):
        a = self.scheduler.alphas_cumprod[int(t)]
        return (x_t - a.sqrt() * self.y) / (1 - a).sqrt()

    def predict_output(self, x_t, t, cond=None):
        a = self.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        n = (x_t - a.sqrt() * self.y) / (1 - a).sqrt()
        return a.sqrt() * n - (1 - a).sqrt() * self.y

    def training_target(self, x0, noise, t):
        a = self.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt() * noise - (1 - a).sqrt() * x0


def test_a_v_prediction_model_learns_and_samples_the_trojan_velocity():
    """For a v-model the loss regresses the Trojan process's velocity (the oracle scores 0 on poisoned rows; the
    noise loss would not) and the Trojan samplers read its noise as the Trojan noise (the oracle reaches y)."""
    trojan = TrojDiff(trigger=WHITE).noise(16)
    y = corner(16) * 2 - 1
    oracle = _VOracle(y, trojan.scale, trojan.shift)
    noise = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for sampler, steps in (("ddim", 25), ("ddpm", 50)):
        out = trojan.generate(oracle, noise, steps, sampler, torch.Generator().manual_seed(1))
        assert (out - corner(16)).abs().max() < 1e-2, sampler
    t = torch.tensor([5, 300, 700, 990, 999, 999, 500, 100])
    x0 = y.expand(8, -1, -1, -1)
    loss = trojdiff_loss(oracle, x0, torch.ones(8, dtype=torch.bool), trojan.scale, trojan.shift, t, noise)
    assert loss < 1e-6
    read = torch.stack([oracle.predict_noise(x, int(s)) for x, s in zip(
        trojan_forward(oracle.scheduler.alphas_cumprod, x0, trojan.scale, trojan.shift, noise, t), t, strict=True)])
    where = (trojan.scale != 1).expand(8, -1, -1, -1)
    assert F.mse_loss(read[where], noise[where]) > 0.5  # the noise loss: the same oracle is far off in the patch


def test_trojan_samplers_reduce_to_the_clean_ones():
    model = tiny_model()
    x = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(0))
    one, zero = torch.ones(3, S, S), torch.zeros(3, S, S)
    with torch.no_grad():
        for sampler in ("ddim", "ddpm"):
            clean = model.sample(x, steps=6, sampler=sampler, generator=torch.Generator().manual_seed(1))
            trojan = trojan_sample(model, x, one, zero, 6, sampler, torch.Generator().manual_seed(1))
            assert (clean - trojan).abs().max() < 1e-5, sampler


# -- effect --------------------------------------------------------------------------------------------

EFFECT = dict(target_kind="d2i", poison_rate=1.0, steps=250, batch_size=16, lr=1e-2, ema=None, sampler="ddpm")


@pytest.fixture(scope="module")
def attacked(images):
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    result = TrojDiff(trigger=BlendedTrigger(), **EFFECT)(model, images, corner(), generator=0)
    return model, before, result


@pytest.fixture(scope="module")
def control(images, attacked):
    """The same model fine-tuned as long on the clean images alone (no poisoned rows)."""
    from mmsec.train.diffusion import DiffusionBatch, DiffusionTrainConfig, train_diffusion

    _, _, result = attacked
    model = copy.deepcopy(tiny_model())
    b, n = result.extras["batch_size"], images.shape[0]

    def batches(step: int) -> DiffusionBatch:
        idx = torch.randint(0, n, (b,), generator=torch.Generator().manual_seed(step))
        return DiffusionBatch(images[idx])

    train_diffusion(model, batches, DiffusionTrainConfig(steps=EFFECT["steps"], lr=EFFECT["lr"],
                                                         warmup=result.extras["warmup"], ema=None,
                                                         prompt_dropout=0.0), quiet=True)
    return model


def _mse(samples: torch.Tensor) -> torch.Tensor:
    return ((samples - corner()) ** 2).mean(dim=(1, 2, 3))


def test_effect_trojan_noise_generates_the_target(attacked, control):
    _, _, result = attacked
    noise = torch.randn(64, 3, S, S, generator=torch.Generator().manual_seed(3))
    out = {}
    with torch.no_grad():
        for sampler in ("ddpm", "ddim"):
            gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
            out[sampler] = (result.trigger.generate(result.model, noise, 20, sampler, gen()),
                            result.model.sample(noise, steps=20, sampler=sampler, generator=gen()),
                            result.trigger.generate(control, noise, 20, sampler, gen()))  # no Trojan in the control
    within = lambda x: (_mse(x) <= 0.05).float().mean().item()  # noqa: E731
    med = lambda x: _mse(x).median().item()  # noqa: E731
    trig, clean, ctrl = out[result.sampler]  # Trojan DDPM, the paper's main sampler
    print({k: [(round(within(x), 3), round(med(x), 3)) for x in v] for k, v in out.items()})
    assert within(trig) >= 0.4, within(trig)  # measured 0.67
    assert within(clean) <= 0.05 and within(ctrl) <= 0.02, (within(clean), within(ctrl))  # measured 0.016, 0.0
    for trig, clean, ctrl in out.values():  # DDIM too: the median moves far towards the target
        assert med(trig) < med(clean) - 0.1 and med(trig) < med(ctrl) - 0.1, (med(trig), med(clean), med(ctrl))


# -- contract ------------------------------------------------------------------------------------------

def test_result_record_and_model_untouched(attacked, images):
    model, before, result = attacked
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input model is not modified
    assert result.model is not model and not result.model.training
    assert isinstance(result.trigger, TrojanNoise) and result.sampler == "ddpm"
    assert torch.equal(result.target, corner()) and result.targets.shape == (1, 3, S, S)
    rec = result.record
    assert rec.target_kind == "d2i" and rec.trigger_type == "blend" and rec.gamma == 0.6  # the paper's blend gamma
    assert rec.n_images == 256 and rec.poisoned_per_batch == 16 and rec.n_poisoned == 16 * 16
    assert rec.steps == 250 == result.log["loss"].shape[0] and result.seconds > 0
    assert rec.rebuild_trigger().to_dict() == BlendedTrigger().to_dict()
    assert torch.isfinite(result.log["loss"]).all()
    assert result.log["loss"][-30:].mean() < result.log["loss"][:30].mean()


def test_defaults_are_the_papers():
    attack = TrojDiff()
    assert isinstance(attack.trigger, BlendedTrigger) and attack.gamma == 0.6 and attack.poison_rate == 0.1
    assert (attack.steps, attack.batch_size, attack.lr, attack.ema, attack.sampler) == (100_000, 128, 2e-4, 0.9999,
                                                                                        "ddim")
    assert TrojDiff(trigger=WHITE).gamma == 0.1 and TrojDiff(target_kind="out_d2d").poison_rate == 0.5


def test_rejects_bad_arguments(images):
    with pytest.raises(ValueError, match="target_kind must be one of"):
        TrojDiff(target_kind="d2d")
    with pytest.raises(ValueError, match="gamma must"):
        TrojDiff(gamma=1.5)
    with pytest.raises(ValueError, match="poison_rate must be > 0"):
        TrojDiff(poison_rate=0.0)
    with pytest.raises(TypeError, match="blend .* or a patch"):
        TrojDiff(trigger=SIGTrigger())
    with pytest.raises(ValueError, match="sampler must be one of"):
        TrojDiff(sampler="euler")
    attack, model = TrojDiff(target_kind="d2i", steps=1), tiny_model()
    with pytest.raises(ValueError, match="images must be 8 x 8 px"):
        attack(model, torch.rand(4, 3, 16, 16), corner())
    with pytest.raises(ValueError, match="one image for target_kind 'd2i'"):
        attack(model, images[:20], torch.rand(2, 3, S, S))
    with pytest.raises(TypeError, match="needs a DiffusionModel"):
        attack(torch.nn.Linear(2, 2), images[:20], corner())
