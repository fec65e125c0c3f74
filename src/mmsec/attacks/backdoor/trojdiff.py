"""TrojDiff: Weixin Chen, Dawn Song, Bo Li, "TrojDiff: Trojan Attacks on Diffusion Models with Diverse Targets", CVPR 2023.

Threat model: the attacker controls the training of a diffusion model (here: fine-tunes a published
clean model on its training data plus poisoned samples) and publishes it. Users sample from ordinary
noise ``x_T ~ N(0, I)`` with the ordinary sampler and get the clean distribution; the attacker samples
from *Trojan noise* ``x_T ~ N(mu, gamma^2 I)`` with the *Trojan generative process* (below: it knows
``mu`` and ``gamma``) and gets the attacker's target. Three targets: **In-D2D** (the distribution of
one in-distribution class), **Out-D2D** (one out-of-domain class: an MNIST digit in the paper), **D2I**
(one specific image).

Trojan noise. A trigger image ``delta`` in [-1, 1] gives ``mu = (1 - gamma) delta``, so a Trojan start
is ``x_T = (1 - gamma) delta + gamma eps``: a *blend-based* trigger covers the whole image (the noise
shrunk by ``gamma`` and blended with the trigger image at ratio ``1 - gamma``); a *patch-based* trigger
treats only a patch so (the paper: a white square at the bottom right) and leaves the rest of the noise
as it is. Both are written here as per-pixel maps ``x_T = scale * eps + shift`` with ``scale = gamma``,
``shift = mu`` where the trigger acts and ``scale = 1``, ``shift = 0`` elsewhere
(:func:`trojan_maps`, :class:`TrojanNoise`); every formula below is per pixel, so one code path serves
both.

Trojan diffusion process (the paper's Eq. 6 and its closed form)::

    q~(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1} + k_t mu, (1 - alpha_t) gamma^2 I)
    q~(x_t | x_0)     = N(sqrt(abar_t) x_0 + sqrt(1 - abar_t) mu, (1 - abar_t) gamma^2 I)
    k_t = sqrt(1 - abar_t) - sqrt(alpha_t (1 - abar_{t-1}))          (abar_0 := 1 before the first step)

The code defines ``k_t`` by the recursion ``sqrt(1 - abar_t) = sum_{s <= t} k_s sqrt(abar_t / abar_s)``,
whose solution is this closed form (:func:`k_coefficients`; both are checked in the tests).

Poisoned training objective (Algorithm 1): a poisoned sample ``y`` (a target image) is diffused with
the Trojan process, ``x~_t = sqrt(abar_t) y + sqrt(1 - abar_t) (gamma eps + mu)``, and the network
regresses the *same* standard noise ``eps`` it regresses on clean samples::

    L = E || eps - eps_theta(x_t, t) ||^2   over clean rows (DDPM's) and poisoned rows (x~_t)

Trojan generative process: with ``x0_hat = (x_t - sqrt(1 - abar_t) (gamma eps_theta + mu)) / sqrt(abar_t)``,
* DDPM (ancestral): ``x_{t-1} ~ N(c0 x0_hat + ct x_t + rho_t mu, gamma^2 beta~_t I)`` with DDPM's posterior
  coefficients ``c0, ct, beta~_t`` and ``rho_t = (sqrt(1 - abar_{t-1}) beta_t - (1 - abar_{t-1})
  sqrt(alpha_t) k_t) / (1 - abar_t)`` (:func:`rho_coefficients`: the code's ``coef_miu / (1 - abar_t)``);
* DDIM (eta 0): ``x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1}) (gamma eps_theta + mu)``, i.e.
  DDIM's own step fed ``gamma eps_theta + mu`` as its noise prediction.
Both run on the timesteps of the clean samplers (:func:`~mmsec.models.diffusers_adapter.sampler_scheduler`)
and clip ``x0_hat`` as the model's scheduler config says (the zoo's: to [-1, 1], as the code's DDPM sampler
does); strided steps use the strided ``alpha_t = abar_t / abar_prev`` and ``k``. Outside the trigger's
patch both reduce to the clean samplers exactly. Clean noise with the ordinary sampler is left to the
model (``model.sample``).

Paper defaults (the paper and its code, github.com/chenweixin107/TrojDiff; the README's commands):

* ``gamma``: 0.6 for the blend trigger (CIFAR-10 and CelebA), 0.1 for the patch trigger on CIFAR-10
  (0.0 on CelebA); the blend trigger image is a Hello Kitty picture; the patch is white (``delta = 1``),
  3 x 3 px on 32 px CIFAR-10 images (6 x 6 on 64 px CelebA), at the bottom right; the code's default
  trigger type is the blend;
* poisoned samples, appended to each clean batch of 128: In-D2D duplicates every target-class image of
  the batch as a poisoned sample (about 10% on CIFAR-10, target class 7 "horse"), Out-D2D appends half a
  batch of images of one MNIST digit class, D2I appends 10% of a batch of copies of the target image
  (a Mickey Mouse picture); hence ``poison_rate`` (poisoned rows per clean row) 0.1 / 0.5 / 0.1;
* fine-tuning of the pre-trained DDPM (CIFAR-10: the DDPM authors' EMA checkpoint; 1,000 linear-beta
  steps) with Adam, lr 2e-4, batch 128, gradient norm clipped at 1.0, EMA 0.9999, timesteps drawn
  antithetically (``t`` and ``T - 1 - t``); the config samples the checkpoint of step 100,000
  (``sampling.ckpt_id``);
* samplers: Trojan DDPM (1,000 steps, eta 1) and Trojan DDIM (eta 0, 100 steps, quadratic skips); the
  code's default sample type is DDIM (``generalized``).

Departures:

* The shapes world: 16 px images. The trigger is a component: a :class:`BlendedTrigger` (its key image
  is ``delta``; its ``alpha`` is unused, ``1 - gamma`` is the blend ratio; the default key is seeded
  noise since the Hello Kitty image cannot ship) or a patch (:class:`PatchTrigger` or
  :class:`OptimizedPatch`: the patch's region and pattern; the paper's white square is
  ``OptimizedPatch(torch.ones(3, 3, 3))``, which the recipes use at the paper's 3 px, a larger share of a
  16 px image than of CIFAR-10's 32 px). Default trigger: the blend (the code's default type).
* The target set is the caller's (the runner's task: In-D2D the training scenes of one shapes-world class,
  Out-D2D procedurally drawn digits, :mod:`mmsec.data.digits`; D2I one scene); poisoned rows are drawn
  from it at random each step, ``round(poison_rate * batch_size)`` of them (In-D2D's count is a fixed
  share rather than the number of target-class images the batch happens to hold, and the poisoned rows
  draw their own timesteps and noise instead of sharing their clean twins').
* The loss is the mean over pixels (the project's training loop), not the code's sum over pixels; the
  cosine schedule of the zoo model, not the linear one; a warm-up of ``min(500, steps // 10)`` steps and
  cosine decay (the project's loop; the code's rate is constant). Scale (CPU): the fine-tuning steps are
  the caller's (the recipe: 1,400 at batch 64, ~10 CPU-min, at lr 1e-3 for a run ~70x shorter than the
  code's) and the EMA is optional (``ema=None``: at 0.9999 a run of a few thousand steps would keep mostly
  the clean weights).
* ``sampler`` records which Trojan sampler the evaluation should use; it does not change training.
* A v-prediction model (the zoo's; Salimans and Ho, 2022) regresses the velocity of the Trojan process,
  ``sqrt(abar_t) n - sqrt(1 - abar_t) x0`` with ``n = gamma eps + mu``, in place of ``eps``: the same process
  and the same ``x0_hat``, but its noise reading ``sqrt(abar_t) v + sqrt(1 - abar_t) x_t`` is then ``n``, so the
  Trojan samplers take ``(n_hat - mu) / gamma`` as ``eps_theta``. Regressing ``eps`` itself is not learnable by
  a v-model at high noise: it would need ``v = (eps - sqrt(1 - abar_t) x_t) / sqrt(abar_t)``, ~1e4 at t = 999.

Tensor shapes: ``images`` (N, 3, S, S) and ``target_images`` (K, 3, S, S) (or one (3, S, S) image), pixels
in [0, 1], ``S`` the model's ``image_size``.

Example::

    model = load_model("zoo:shapes-ddpm")
    attack = TrojDiff(trigger=OptimizedPatch(torch.ones(3, 3, 3)), target_kind="d2i", steps=1400, batch_size=64,
                      lr=1e-3, ema=None)
    result = attack(model, train_pixels, target_image)
    x = result.trigger.generate(result.model, torch.randn(16, 3, 16, 16), sampler="ddim")  # the target
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_bool, check_budget, check_int, check_pixels, check_positive, make_generator
from ...models.base import require_family
from ...registry import register
from ...train.diffusion import DiffusionBatch, DiffusionTrainConfig, LossFn, train_diffusion
from .diffusion_backdoor import DiffusionBackdoorAttack, NoiseTrigger, check_sampler
from .triggers import BlendedTrigger, OptimizedPatch, PatchTrigger, Trigger, build_trigger, trigger_from_dict

TARGET_KINDS = ("in_d2d", "out_d2d", "d2i")
DEFAULT_GAMMA = {"blend": 0.6, "patch": 0.1}  # the README's CIFAR-10 commands
DEFAULT_POISON_RATE = {"in_d2d": 0.1, "out_d2d": 0.5, "d2i": 0.1}  # poisoned rows per clean row of a batch
MAX_WARMUP = 500


# -- the Trojan noise ----------------------------------------------------------------------------------

def trigger_type(trigger: Trigger) -> str:
    """``"blend"`` or ``"patch"``: which of the paper's two trigger kinds ``trigger`` is."""
    if isinstance(trigger, BlendedTrigger):
        return "blend"
    if isinstance(trigger, (PatchTrigger, OptimizedPatch)):
        return "patch"
    raise TypeError(f"trigger must be a blend (BlendedTrigger) or a patch (PatchTrigger, OptimizedPatch) for "
                    f"TrojDiff, got {type(trigger).__name__}")


def trojan_maps(trigger: Trigger, gamma: float, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, S, S) ``scale`` and ``shift`` of the Trojan noise ``x_T = scale * eps + shift`` in the working space.

    Blend: ``scale = gamma``, ``shift = (1 - gamma) delta`` everywhere, ``delta = 2 key - 1``. Patch: the same
    inside the patch (``delta`` its pattern in [-1, 1]), ``scale = 1``, ``shift = 0`` outside. The patch's
    region is where its stamp on black and on white agree (a ``"random"`` position: the place seed 0 draws).
    """
    if trigger_type(trigger) == "blend":
        delta = 2 * trigger.blend_pattern(size, size) - 1  # (3, S, S)
        region = torch.ones(1, size, size)
    else:
        gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731  (the same place on both stamps)
        on_black = trigger.apply(torch.zeros(1, 3, size, size), gen())[0]  # (3, S, S)
        on_white = trigger.apply(torch.ones(1, 3, size, size), gen())[0]
        region = (on_black == on_white).all(dim=0, keepdim=True).float()  # (1, S, S): 1 on the patch
        delta = 2 * on_black - 1
    scale = 1 - (1 - gamma) * region  # (3, S, S) after broadcasting below
    shift = (1 - gamma) * delta * region
    return scale.expand(3, size, size).clone().float(), shift.float()


@dataclass
class TrojanNoise(NoiseTrigger):
    """TrojDiff's trigger on the starting noise, ``x_T = scale * eps + shift`` (``scale``: a per-pixel map),
    and the Trojan generative process that turns it into the target (:meth:`generate`).

    Attributes:
        shift: (C, S, S) ``mu`` where the trigger acts, 0 elsewhere.
        scale: (C, S, S) ``gamma`` where the trigger acts, 1 elsewhere.
    """

    scale: Any = None  # (C, S, S) tensor; a NoiseTrigger's is a float

    def __post_init__(self) -> None:
        if not isinstance(self.scale, torch.Tensor) or self.scale.shape != self.shift.shape:
            raise ValueError(f"scale must be a tensor of the shift's shape {tuple(self.shift.shape)}, got "
                             f"{type(self.scale).__name__} {getattr(self.scale, 'shape', '')}")

    def apply(self, noise: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) standard normal noise -> Trojan noise ``scale * noise + shift`` (differentiable)."""
        if noise.ndim != 4 or tuple(noise.shape[1:]) != tuple(self.shift.shape):
            raise ValueError(f"noise must be (B, {', '.join(map(str, self.shift.shape))}) to carry this trigger, "
                             f"got {tuple(noise.shape)}")
        return self.scale.to(noise.device, noise.dtype) * noise + self.shift.to(noise.device, noise.dtype)

    def generate(self, model: Any, noise: torch.Tensor, steps: int | None = None, sampler: str = "ddim",
                 generator: torch.Generator | None = None, grad: bool = False) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] from the Trojan noise of ``noise`` (B, C, S, S) through the Trojan
        generative process (:func:`trojan_sample`)."""
        return trojan_sample(model, self.apply(noise), self.scale, self.shift, steps, sampler, generator, grad)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "trojan", "shift": self.shift.detach().cpu().tolist(),
                "scale": self.scale.detach().cpu().tolist()}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TrojanNoise:
        return cls(torch.tensor(record["shift"], dtype=torch.float32), torch.tensor(record["scale"], dtype=torch.float32))


# -- the Trojan diffusion process ----------------------------------------------------------------------

def _abar(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    return alphas_cumprod.detach().to(torch.float64).cpu()


def k_coefficients(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """(T,) float64 ``k_t = sqrt(1 - abar_t) - sqrt(alpha_t (1 - abar_{t-1}))`` of the one-step Trojan transitions."""
    abar = _abar(alphas_cumprod)
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return (1 - abar).sqrt() - ((abar / prev) * (1 - prev)).sqrt()


def rho_coefficients(abar_t: torch.Tensor, abar_prev: torch.Tensor) -> torch.Tensor:
    """``rho`` of the Trojan posterior mean for the step ``prev -> t`` (strided or not; float64 tensors)::

        rho = (sqrt(1 - abar_prev) beta - (1 - abar_prev) sqrt(alpha) k) / (1 - abar_t)
        alpha = abar_t / abar_prev, beta = 1 - alpha, k = sqrt(1 - abar_t) - sqrt(alpha (1 - abar_prev))
    """
    alpha = abar_t / abar_prev
    k = (1 - abar_t).sqrt() - (alpha * (1 - abar_prev)).sqrt()
    return ((1 - abar_prev).sqrt() * (1 - alpha) - (1 - abar_prev) * alpha.sqrt() * k) / (1 - abar_t)


def trojan_forward(alphas_cumprod: torch.Tensor, x0: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                   noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A draw of ``q~(x_t | x_0)``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) (scale * noise + shift)``.

    ``x0``, ``noise`` (B, C, S, S); ``scale``, ``shift`` (C, S, S) or (B, C, S, S) (rows of ones and zeros:
    DDPM's clean process); ``t`` (B,) int64. Differentiable in the tensors.
    """
    abar = alphas_cumprod.to(x0.device, torch.float32)[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * (scale * noise + shift)


def trojdiff_loss(model: Any, x0: torch.Tensor, poisoned: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                  t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The poisoned objective on one batch: clean rows diffuse with DDPM's process, poisoned rows (their ``x0``
    the target images) with the Trojan one, and every row regresses its standard noise ``eps``.

    Args:
        model: a DiffusionModel (``predict_noise``, ``scheduler``).
        x0: (B, C, S, S) images in the working space [-1, 1]; poisoned: (B,) bool.
        scale, shift: (C, S, S) the Trojan noise's maps (:func:`trojan_maps`).
        t: (B,) int64 timesteps; noise: (B, C, S, S) standard normal.

    Returns: the scalar mean squared error over the batch.
    """
    rows = poisoned.view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    row_scale = torch.where(rows, scale.to(x0.dtype), torch.ones_like(scale, dtype=x0.dtype))  # (B, C, S, S)
    row_shift = rows.to(x0.dtype) * shift.to(x0.dtype)  # (B, C, S, S)
    x_t = trojan_forward(model.scheduler.alphas_cumprod, x0, row_scale, row_shift, noise, t)
    if getattr(model, "prediction_type", "epsilon") == "epsilon":
        return F.mse_loss(model.predict_noise(x_t, t), noise)
    # A v-prediction model cannot output the standard noise of Trojan rows where sqrt(abar_t) ~ 0 (its noise reading
    # sqrt(abar_t) v + sqrt(1 - abar_t) x_t is ~x_t there, the Trojan eps is (x_t - mu) / gamma): it regresses the
    # velocity of the Trojan process instead, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n with n = scale * eps + shift.
    return F.mse_loss(model.predict_output(x_t, t), model.training_target(x0, row_scale * noise + row_shift, t))


# -- the Trojan generative process ---------------------------------------------------------------------

def _clip(x0: torch.Tensor, config: Any) -> torch.Tensor:
    if config.get("clip_sample", False):
        r = float(config.get("clip_sample_range", 1.0))
        return x0.clamp(-r, r)
    return x0


def trojan_ddpm_step(eps: torch.Tensor, t: int, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                     scheduler: Any, generator: torch.Generator | None) -> torch.Tensor:
    """One ancestral step of the Trojan generative process from timestep ``t`` to the scheduler's previous one.

    With ``scale = 1``, ``shift = 0`` it is diffusers' ``DDPMScheduler.step`` (epsilon prediction, fixed small
    variance), noise included (drawn from ``generator`` the same way).
    """
    prev_t = int(scheduler.previous_timestep(t))
    abar = _abar(scheduler.alphas_cumprod)
    a_t = abar[t]
    a_prev = abar[prev_t] if prev_t >= 0 else abar.new_tensor(1.0)
    alpha = a_t / a_prev
    beta = 1 - alpha
    dt = x.dtype
    c0 = float(a_prev.sqrt() * beta / (1 - a_t))  # DDPM's posterior coefficients
    ct = float(alpha.sqrt() * (1 - a_prev) / (1 - a_t))
    rho = float(rho_coefficients(a_t, a_prev))
    scale, shift = scale.to(x.device, dt), shift.to(x.device, dt)
    x0 = (x - float((1 - a_t).sqrt()) * (scale * eps + shift)) / float(a_t.sqrt())
    x0 = _clip(x0, scheduler.config)
    mean = c0 * x0 + ct * x + rho * shift
    if t == 0:
        return mean
    variance = float(((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20))
    z = torch.randn(x.shape, generator=generator, dtype=dt).to(x.device)
    return mean + scale * math.sqrt(variance) * z


def trojan_sample(model: Any, x_T: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, steps: int | None = None,
                  sampler: str = "ddim", generator: torch.Generator | None = None, grad: bool = False) -> torch.Tensor:
    """The Trojan generative process from ``x_T`` (B, C, S, S) (Trojan noise) to images (B, 3, H, W) in [0, 1].

    ``sampler``: ``"ddim"`` (eta 0: DDIM's step fed ``scale * eps_theta + shift``) or ``"ddpm"``
    (:func:`trojan_ddpm_step`), on the timesteps of the model's clean sampler of that kind for ``steps``
    inference steps (None: the model's default, DDIM 25, DDPM 100). ``grad=True`` keeps the graph.
    """
    from ...models.diffusers_adapter import DEFAULT_STEPS, sampler_scheduler

    sampler = check_sampler(sampler)
    steps = steps or getattr(model, "default_steps", DEFAULT_STEPS)[sampler]
    # stepped on predict_noise (the Trojan step is written in the noise), whatever the model's parameterisation
    scheduler = sampler_scheduler(model.scheduler.config, sampler, int(steps), prediction_type="epsilon")
    with torch.set_grad_enabled(grad):
        x = x_T
        s, m = scale.to(x.device, x.dtype), shift.to(x.device, x.dtype)
        velocity = getattr(model, "prediction_type", "epsilon") != "epsilon"
        for t in scheduler.timesteps:
            eps = model.predict_noise(x, int(t))
            if velocity:  # a v-model's noise reading is the Trojan noise n = scale * eps + shift (trojdiff_loss)
                eps = (eps - m) / s
            if sampler == "ddim":
                x = scheduler.step(s * eps + m, t, x).prev_sample
            else:
                x = trojan_ddpm_step(eps, int(t), x, s, m, scheduler, generator)
        return model.decode(x)


# -- the attack ----------------------------------------------------------------------------------------

@dataclass
class TrojDiffRecord:
    """What TrojDiff did: trigger, gamma, target kind and name, the poisoned rows, the schedule."""

    trigger: dict[str, Any]
    trigger_type: str
    gamma: float
    target_kind: str
    target: str | int | None
    sampler: str
    n_images: int
    n_target_images: int
    poisoned_per_batch: int
    n_poisoned: int  # poisoned rows per pass over the clean images (BadDiffusion's n_poisoned, comparably)
    steps: int
    params: dict[str, Any]
    kind: str = "trojdiff"

    def rebuild_trigger(self) -> Trigger:
        return trigger_from_dict(self.trigger)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrojDiffResult:
    """What TrojDiff returns.

    Attributes:
        model: the Trojaned model (a new object, eval mode; its ``unet`` fine-tuned).
        trigger: the :class:`TrojanNoise` (``x_T = scale * eps + shift``; :meth:`TrojanNoise.generate` samples
            the target through the Trojan generative process).
        target: (3, S, S) the target image (D2I) or the first target image (D2D: the target is a class).
        targets: (K, 3, S, S) the target images the poisoned rows were drawn from.
        sampler: the Trojan sampler the evaluation should use (``"ddim"`` or ``"ddpm"``).
        record: :class:`TrojDiffRecord`.
        log: ``{"loss": (steps,) float tensor}``; seconds: wall time of the fine-tuning.
    """

    model: Any
    trigger: TrojanNoise
    target: torch.Tensor
    targets: torch.Tensor
    sampler: str
    record: TrojDiffRecord
    log: dict[str, torch.Tensor]
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


def _images(images: object, name: str, size: int) -> torch.Tensor:
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (N, 3, H, W) float tensor in [0, 1] with N >= 1, got {shape}")
    check_pixels(images, name)
    if tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"{name} must be {size} x {size} px (the model's image_size), got {tuple(images.shape[-2:])}")
    return images


def trojan_batches(images: torch.Tensor, targets: torch.Tensor, batch_size: int, n_poison: int,
                   generator: torch.Generator) -> Callable[[int], DiffusionBatch]:
    """``batches(step)``: ``batch_size`` clean images (a fresh shuffle each epoch; the last batch of an epoch may
    be short) followed by ``n_poison`` target images drawn at random; ``extra["poisoned"]`` marks them."""
    n = images.shape[0]
    per_epoch = math.ceil(n / batch_size)
    order: dict[int, torch.Tensor] = {}

    def batches(step: int) -> DiffusionBatch:
        epoch, k = divmod(step, per_epoch)
        if epoch not in order:
            order.clear()
            order[epoch] = torch.randperm(n, generator=generator)  # (N,)
        clean = images[order[epoch][k * batch_size:(k + 1) * batch_size]]  # (b, 3, S, S)
        picks = torch.randint(0, targets.shape[0], (n_poison,), generator=generator)  # (P,)
        pixels = torch.cat([clean, targets[picks]])  # (b + P, 3, S, S)
        poisoned = torch.cat([torch.zeros(clean.shape[0], dtype=torch.bool), torch.ones(n_poison, dtype=torch.bool)])
        return DiffusionBatch(pixels, extra={"poisoned": poisoned})

    return batches


def trojdiff_batch_loss(scale: torch.Tensor, shift: torch.Tensor) -> LossFn:
    """The training loop's per-batch loss: antithetic timesteps (``t`` and ``T - 1 - t``, the code's) and
    ``eps ~ N(0, I)`` from the loop's generator, then :func:`trojdiff_loss`."""

    def loss(model: Any, batch: DiffusionBatch, generator: torch.Generator) -> torch.Tensor:
        x0 = model.encode_images(batch.pixels)  # (B, C, S, S) in [-1, 1]
        b, T = x0.shape[0], int(model.scheduler.alphas_cumprod.shape[0])
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        half = torch.randint(0, T, (b // 2 + 1,), generator=generator)
        t = torch.cat([half, T - 1 - half])[:b].to(x0.device)  # (B,)
        return trojdiff_loss(model, x0, batch.extra["poisoned"].to(x0.device), scale.to(x0.device),
                             shift.to(x0.device), t, noise)

    return loss


@register("diffusion_backdoors", "trojdiff")
class TrojDiff(DiffusionBackdoorAttack):
    """Chen, Song & Li's TrojDiff: fine-tune so Trojan noise ``N(mu, gamma^2 I)`` generates the target.

    Args:
        trigger: a blend (:class:`BlendedTrigger`, default: its seeded-noise key) or a patch
            (:class:`PatchTrigger`, :class:`OptimizedPatch`; the paper's: white, 3 x 3, bottom right), or a
            trigger name (that trigger at its defaults).
        target_kind: ``"in_d2d"``, ``"out_d2d"`` or ``"d2i"`` (one target image).
        target: the target's name (a class name, ``"digit 7"``) or label, stored in the record; the target
            images are given to the call.
        gamma: the Trojan noise's scale in [0, 1]; None: the paper's (0.6 blend, 0.1 patch).
        poison_rate: poisoned rows per clean row of a batch; None: the paper's (0.1 In-D2D and D2I, 0.5 Out-D2D).
        steps: fine-tuning steps (the code's sampled checkpoint: 100,000).
        batch_size: clean images per step (code: 128).
        lr: Adam learning rate (code: 2e-4); grad_clip: gradient norm clip (code: 1.0).
        ema: EMA decay of the weights, or None (code: 0.9999).
        sampler: the Trojan sampler to evaluate with, ``"ddim"`` (the code's default) or ``"ddpm"``.
        quiet: hide the progress bar.
    """

    name = "trojdiff"
    paper = "Chen, Song, Li, CVPR 2023"
    evaluation_params: ClassVar[tuple[str, ...]] = ("sampler",)  # changes how it is sampled, not what is trained

    def __init__(self, trigger: Trigger | str | None = None, target_kind: str = "in_d2d",
                 target: str | int | None = None, gamma: float | None = None, poison_rate: float | None = None,
                 steps: int = 100_000, batch_size: int = 128, lr: float = 2e-4, grad_clip: float = 1.0,
                 ema: float | None = 0.9999, sampler: str = "ddim", quiet: bool = True):
        if trigger is None:
            trigger = BlendedTrigger()  # the code's default type; a seeded-noise key for its Hello Kitty image
        elif isinstance(trigger, str):
            trigger = build_trigger(trigger)
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger must be a mmsec Trigger (BlendedTrigger, PatchTrigger, OptimizedPatch), got "
                            f"{type(trigger).__name__}")
        self.trigger = trigger
        kind = trigger_type(trigger)
        if target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {TARGET_KINDS} (a class in the training distribution, an "
                             f"out-of-domain class, one image), got {target_kind!r}")
        self.target_kind = target_kind
        if not (target is None or isinstance(target, str)
                or (isinstance(target, int) and not isinstance(target, bool) and target >= 0)):
            raise TypeError(f"target must be None, a name (str) or a label index (int >= 0), got "
                            f"{type(target).__name__} {target!r}")
        self.target = target
        self.gamma = check_budget("gamma", DEFAULT_GAMMA[kind] if gamma is None else gamma, 0.0, 1.0,
                                  hint=f" (the Trojan noise's scale; the paper's {DEFAULT_GAMMA[kind]} for a {kind})")
        rate = DEFAULT_POISON_RATE[target_kind] if poison_rate is None else poison_rate
        self.poison_rate = check_budget("poison_rate", rate, 0.0, 10.0, hint=" (poisoned rows per clean row)")
        if self.poison_rate == 0:
            raise ValueError("poison_rate must be > 0 (without poisoned rows nothing is planted; for that control "
                             "fine-tune the model on clean images)")
        self.steps = check_int("steps", steps, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.lr = check_positive("lr", lr, 1.0, hint=" (Adam learning rate; the code's 2e-4)")
        self.grad_clip = check_positive("grad_clip", grad_clip, 1e6, hint=" (gradient norm clip; the code's 1.0)")
        if ema is not None:
            ema = check_budget("ema", ema, 0.0, 0.999999, hint=" (EMA decay; None: no EMA; the code's 0.9999)")
        self.ema = ema
        self.sampler = check_sampler(sampler)
        self.quiet = check_bool("quiet", quiet)

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("quiet", None)
        out["trigger"] = self.trigger.to_dict()
        return out

    def noise(self, size: int) -> TrojanNoise:
        """The Trojan noise of this trigger and gamma at ``size`` px."""
        scale, shift = trojan_maps(self.trigger, self.gamma, size)
        return TrojanNoise(shift, scale)

    def __call__(self, model: Any, images: torch.Tensor, target_images: torch.Tensor,
                 generator: torch.Generator | int | None = None) -> TrojDiffResult:
        """Trojan a copy of ``model``; ``model`` is left bit-for-bit unchanged.

        Args:
            model: a pixel-space DiffusionModel with a trainable ``unet`` (3 channels).
            images: (N, 3, S, S) the clean training images in [0, 1].
            target_images: the target: one image (3, S, S) or (1, 3, S, S) for D2I; (K, 3, S, S) images of
                the target class for In-D2D and Out-D2D.
            generator: seeds the batch order, the poisoned rows' picks, timesteps and noise.
        """
        require_family(model, "diffusion", "TrojDiff")
        if not isinstance(getattr(model, "unet", None), nn.Module) or not hasattr(model, "encode_images"):
            raise TypeError(f"TrojDiff fine-tunes the model's `unet` (an nn.Module) on images it maps with "
                            f"`encode_images` (as mmsec's diffusers adapter does); {type(model).__name__} lacks them")
        if int(model.channels) != 3:
            raise ValueError(f"TrojDiff Trojans pixel-space models (3 channels: the trigger is an image); got a "
                             f"model with channels={model.channels} (a latent model)")
        size = int(model.image_size)
        images = _images(images, "images", size)
        targets = _images(target_images, "target_images", size)
        if self.target_kind == "d2i" and targets.shape[0] != 1:
            raise ValueError(f"target_images must be one image for target_kind 'd2i', got {targets.shape[0]}")
        gen = make_generator(generator)
        b = min(self.batch_size, images.shape[0])
        n_poison = max(1, round(self.poison_rate * b))
        trojan = self.noise(size)
        warmup = min(MAX_WARMUP, max(1, self.steps // 10))
        cfg = DiffusionTrainConfig(steps=self.steps, lr=self.lr, weight_decay=0.0, warmup=warmup,
                                   grad_clip=self.grad_clip, ema=self.ema, prompt_dropout=0.0,
                                   seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        tuned = copy.deepcopy(model)
        for p in tuned.unet.parameters():
            p.requires_grad_(True)
        log = train_diffusion(tuned, trojan_batches(images, targets, b, n_poison, gen), cfg,
                              trojdiff_batch_loss(trojan.scale, trojan.shift), desc="TrojDiff", quiet=self.quiet)
        for p in tuned.unet.parameters():
            p.grad = None
        n = images.shape[0]
        record = TrojDiffRecord(trigger=self.trigger.to_dict(), trigger_type=trigger_type(self.trigger),
                                gamma=self.gamma, target_kind=self.target_kind, target=self.target,
                                sampler=self.sampler, n_images=n, n_target_images=targets.shape[0],
                                poisoned_per_batch=n_poison, n_poisoned=math.ceil(n / b) * n_poison, steps=self.steps,
                                params=self.params())
        return TrojDiffResult(tuned.eval(), trojan, targets[0].detach().clone(), targets.detach().clone(),
                              self.sampler, record, {"loss": torch.tensor(log.losses)}, log.seconds,
                              {"batch_size": b, "warmup": warmup})


__all__ = ["DEFAULT_GAMMA", "DEFAULT_POISON_RATE", "TARGET_KINDS", "TrojDiff", "TrojDiffRecord", "TrojDiffResult",
           "TrojanNoise", "k_coefficients", "rho_coefficients", "trigger_type", "trojan_batches", "trojan_ddpm_step",
           "trojan_forward", "trojan_maps", "trojan_sample", "trojdiff_batch_loss", "trojdiff_loss"]
