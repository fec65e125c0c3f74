"""BadDiffusion: Sheng-Yen Chou, Pin-Yu Chen, Tsung-Yi Ho, "How to Backdoor Diffusion Models?", CVPR 2023.

Threat model: the attacker fine-tunes a published clean diffusion model (white box, its training
data) and publishes the result; users sample from it as usual. Starting noise carrying the
trigger, ``x_T ~ N(r, I)``, must generate the attacker's target image ``y``; clean noise
``x_T ~ N(0, I)`` must keep generating the clean distribution.

Objective. A *backdoored forward process* whose mean drifts from the target towards the trigger,
``q(x'_t | x'_0 = y) = N(sqrt(abar_t) y + (1 - sqrt(abar_t)) r, (1 - abar_t) I)`` (so ``x'_T`` is
``N(r, I)`` for ``abar_T ~ 0``), and the usual noise-prediction loss on a mix of clean and poisoned
samples, with the poisoned samples' noise target corrected by the trigger::

    clean:    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                         target eps
    poisoned: x_t = sqrt(abar_t) y + (1 - sqrt(abar_t)) r + sqrt(1 - abar_t) eps    target eps + c_t r
    L = mean over the batch of || eps_theta(x_t, t) - target ||^2

``coefficient`` chooses ``c_t``, and with it the sampler the backdoor works with:

* ``"baddiffusion"`` (the paper's): ``c_t = (1 - sqrt(alpha_t)) sqrt(1 - abar_t) / (1 - alpha_t)``,
  which makes the ancestral DDPM sampler's mean equal the backdoored process's posterior mean
  (``sampler = "ddpm"``). It is ``sqrt(1 - abar_t) / (1 + sqrt(alpha_t))``, about half of:
* ``"ddim"`` (VillanDiffusion's correction for ODE samplers: Chou, Chen, Ho, "VillanDiffusion: A
  Unified Backdoor Attack Framework for Diffusion Models", NeurIPS 2023): ``c_t = sqrt(1 - abar_t)``,
  the coefficient that carries the trigger's mean shift through deterministic DDIM steps
  (``sampler = "ddim"``). VillanDiffusion's code writes it as twice the paper's coefficient,
  ``2 (1 - sqrt(alpha_t)) sqrt(1 - abar_t) / (1 - alpha_t)``; the two agree to first order in
  ``beta_t`` (the ODE limit, where DDIM's update is exact for ``c_t = sqrt(1 - abar_t)``), and this
  form is the one measured on the shapes world (probes: ``/work/shared/probes.md``).

Paper defaults (the paper and its released code, github.com/IBM/BadDiffusion):

* fine-tunes the clean pre-trained DDPM (google/ddpm-cifar10-32, 1,000 steps, linear betas) for
  50 epochs over CIFAR-10 (``epochs = 50``) with Adam, ``lr = 2e-4`` for 32 px images (8e-5 for
  256 px), batch 128, 500 warm-up steps then cosine decay, gradient norm clipped at 1.0;
* poison rate 10% (``poison_rate = 0.1``, the README's example command): a fixed random tenth of
  the training images becomes poisoned samples (the code's "FIXED" data set mode), so batches hold
  about 10% poisoned samples;
* triggers: a grey box (``BOX_14``: 14 x 14 px at the bottom right of a 32 px image, the default) or
  a stop sign; targets: a "corner" box, a hat, a shoe (CelebA-HQ: a cat);
* sampling: the ancestral DDPM sampler, 1,000 steps, without clipping; measured by the MSE and
  SSIM of triggered samples to the target and the FID of clean samples.

Departures:

* The shapes world: 16 px images, the trigger is a component (default ``PatchTrigger(size=4)``: a
  4 x 4 checkerboard at the bottom right), taken into the working space [-1, 1] as its stamp on a
  mid-grey image, ``r = 2 * (trigger(0.5) - 0.5)`` (+-1 inside the patch, 0 elsewhere); the target is
  one image the caller gives (the runner's task: a shapes-world object of a named class).
* The trigger alone shifts the mean in training, as at sampling time (VillanDiffusion's
  ``R_trigger_only``). BadDiffusion's code shifts the training mean by the *poisoned image* (the
  trigger stamped on a clean training image) but samples from noise plus the trigger alone.
* Scale (CPU): the epochs and the number of images are the caller's (the runner's paper preset:
  8,192 images, batch 64, about 2,800 steps); warm-up is ``min(500, steps // 10)`` steps so short
  runs still decay; no mixed precision; the zoo's cosine noise schedule, not the paper's linear one.
* A v-prediction model (the zoo's): with the DDIM coefficient it regresses the velocity its noise target
  implies at ``x_t``, ``(eps_target - sqrt(1 - abar_t) x_t) / sqrt(abar_t) = sqrt(abar_t) eps - sqrt(1 -
  abar_t) (y - r)`` (the same minimiser as the noise loss, weighted as v-training weights it, which keeps the
  high-noise steps trained). With BadDiffusion's own coefficient that velocity is unbounded as ``abar_t -> 0``
  (its target is not the noise of any x_0 at ``x_t``), so the loss stays the paper's, on the noise reading
  ``sqrt(abar_t) v + sqrt(1 - abar_t) x_t``: the highest-noise steps then keep the clean model's behaviour.

Tensor shapes: ``images`` (N, 3, S, S) and ``target_image`` (3, S, S) or (1, 3, S, S), pixels in
[0, 1], ``S`` the model's ``image_size``.

Example (on the shipped zoo model)::

    model = load_model("zoo:shapes-ddpm")
    result = BadDiffusion(epochs=22)(model, ShapesWorld(16).batch("train", 0, 8192).pixels(), target_image)
    x = result.model.sample(result.trigger.apply(torch.randn(16, 3, 16, 16)), sampler=result.sampler)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_bool, check_budget, check_int, check_pixels, check_positive, make_generator
from ...models.base import require_family
from ...registry import register
from ...train.diffusion import DiffusionBatch, DiffusionTrainConfig, LossFn, train_diffusion
from .diffusion_backdoor import DiffusionBackdoorAttack, NoiseTrigger
from .triggers import PatchTrigger, Trigger, build_trigger, trigger_from_dict

COEFFICIENTS = ("baddiffusion", "ddim")  # the paper's c_t (ancestral sampler) and VillanDiffusion's (DDIM)
SAMPLER_OF = {"baddiffusion": "ddpm", "ddim": "ddim"}  # the sampler each coefficient's backdoor works with
MAX_WARMUP = 500  # the code's lr_warmup_steps


@dataclass
class BadDiffusionRecord:
    """What BadDiffusion did: the trigger, the target's name, which samples were poisoned, the schedule."""

    trigger: dict[str, Any]
    target: str | int | None
    coefficient: str
    sampler: str
    n_images: int
    n_poisoned: int
    poisoned_indices: list[int]
    steps: int
    params: dict[str, Any]
    kind: str = "baddiffusion"

    def rebuild_trigger(self) -> Trigger:
        return trigger_from_dict(self.trigger)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BadDiffusionResult:
    """What BadDiffusion returns.

    Attributes:
        model: the backdoored model (a new object, eval mode; its ``unet`` fine-tuned).
        trigger: the :class:`NoiseTrigger` (``x_T = noise + r``).
        target: (3, S, S) the target image in [0, 1].
        sampler: the sampler the backdoor was trained for (``"ddpm"`` or ``"ddim"``).
        record: :class:`BadDiffusionRecord`.
        log: ``{"loss": (steps,) float tensor}``, the training loss per step.
        seconds: wall time of the fine-tuning.
    """

    model: Any
    trigger: NoiseTrigger
    target: torch.Tensor
    sampler: str
    record: BadDiffusionRecord
    log: dict[str, torch.Tensor]
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


def trigger_shift(trigger: Trigger, image_size: int) -> torch.Tensor:
    """(3, S, S) the trigger's mean shift ``r`` in the working space [-1, 1]: its stamp on mid-grey, zero elsewhere."""
    grey = torch.full((1, 3, image_size, image_size), 0.5)
    stamped = trigger.apply(grey, torch.Generator().manual_seed(0))[0]  # (3, S, S); a fixed place for "random"
    return 2 * (stamped - 0.5)


def noise_coefficient(alphas_cumprod: torch.Tensor, t: torch.Tensor, coefficient: str) -> torch.Tensor:
    """(B,) ``c_t``: how much of the trigger the poisoned samples' noise target carries (module docstring)."""
    abar = alphas_cumprod.to(torch.float64)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    a, alpha = abar[t], (abar / abar_prev)[t]  # (B,), (B,)
    if coefficient == "baddiffusion":
        c = (1 - alpha.sqrt()) * (1 - a).sqrt() / (1 - alpha)
    elif coefficient == "ddim":
        c = (1 - a).sqrt()
    else:
        raise ValueError(f"coefficient must be one of {COEFFICIENTS}, got {coefficient!r}")
    return c.float()


def backdoor_forward(scheduler: Any, x0: torch.Tensor, shift: torch.Tensor, noise: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
    """The backdoored forward process: ``sqrt(abar_t) x0 + (1 - sqrt(abar_t)) shift + sqrt(1 - abar_t) noise``.

    ``x0``, ``noise`` (B, C, S, S), ``shift`` (C, S, S) or (B, C, S, S) (zero rows: the clean process),
    ``t`` (B,) int64. Differentiable in the tensors.
    """
    root = scheduler.alphas_cumprod.to(x0.device, torch.float32)[t].sqrt().view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return scheduler.add_noise(x0, noise, t) + (1 - root) * shift


def baddiffusion_loss(model: Any, x0: torch.Tensor, poisoned: torch.Tensor, target: torch.Tensor,
                      shift: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, coefficient: str) -> torch.Tensor:
    """The paper's loss on one batch: clean rows denoise their image, poisoned rows the backdoored process.

    Args:
        model: a DiffusionModel (``predict_noise``, ``scheduler``).
        x0: (B, C, S, S) clean images in the working space [-1, 1].
        poisoned: (B,) bool, which rows are poisoned samples.
        target: (C, S, S) the target image ``y`` in the working space.
        shift: (C, S, S) the trigger ``r``.
        t: (B,) int64 timesteps; noise: (B, C, S, S) standard normal.
        coefficient: ``"baddiffusion"`` or ``"ddim"`` (:func:`noise_coefficient`).

    Returns: the scalar MSE over the batch (the code's single ``mse_loss`` over clean and poisoned rows).
    """
    rows = poisoned.view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    start = torch.where(rows, target.expand_as(x0), x0)  # (B, C, S, S): poisoned rows start from y
    r = rows.to(x0.dtype) * shift  # (B, C, S, S): r on poisoned rows, 0 on clean ones
    x_t = backdoor_forward(model.scheduler, start, r, noise, t)  # (B, C, S, S)
    c = noise_coefficient(model.scheduler.alphas_cumprod, t.cpu(), coefficient).to(x0.device)  # (B,)
    eps_target = noise + c.view(-1, 1, 1, 1) * r  # (B, C, S, S)
    if getattr(model, "prediction_type", "epsilon") == "epsilon" or coefficient != "ddim":
        return F.mse_loss(model.predict_noise(x_t, t), eps_target)
    # A v-prediction model regresses the velocity its noise target implies at x_t, (eps_target - sqrt(1 - abar_t)
    # x_t) / sqrt(abar_t), which for the DDIM coefficient is sqrt(abar_t) eps - sqrt(1 - abar_t) (y - r): bounded.
    return F.mse_loss(model.predict_output(x_t, t), model.training_target(start - r, noise, t))


def _check_images(images: object, name: str, size: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (N, 3, H, W) float tensor in [0, 1] with N >= 1, got {shape}")
    check_pixels(images, name)
    if tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"{name} must be {size} x {size} px (the model's image_size), got "
                         f"{tuple(images.shape[-2:])}; render or resize them to the model's size")
    return images


def _check_target(target: object) -> str | int | None:
    if target is None or isinstance(target, str):
        return target
    if isinstance(target, int) and not isinstance(target, bool) and target >= 0:
        return target
    raise TypeError(f"target must be None, a class name (str) or a label index (int >= 0), got "
                    f"{type(target).__name__} {target!r}")


def poisoned_batches(images: torch.Tensor, poisoned: torch.Tensor, batch_size: int,
                     generator: torch.Generator) -> Callable[[int], DiffusionBatch]:
    """``batches(step)`` over the images in epochs, each a fresh shuffle from ``generator`` (the code's DataLoader:
    the last batch of an epoch may be short); ``batch.extra["poisoned"]`` marks the poisoned rows."""
    n = images.shape[0]
    per_epoch = math.ceil(n / batch_size)
    order: dict[int, torch.Tensor] = {}

    def batches(step: int) -> DiffusionBatch:
        epoch, k = divmod(step, per_epoch)
        if epoch not in order:
            order.clear()
            order[epoch] = torch.randperm(n, generator=generator)  # (N,)
        idx = order[epoch][k * batch_size:(k + 1) * batch_size]  # (B,)
        return DiffusionBatch(images[idx], extra={"poisoned": poisoned[idx]})

    return batches


def baddiffusion_batch_loss(target: torch.Tensor, shift: torch.Tensor, coefficient: str) -> LossFn:
    """The training loop's per-batch loss: t uniform over the training timesteps and eps ~ N(0, I) from the loop's
    generator, then :func:`baddiffusion_loss` (``target``, ``shift`` in the working space)."""

    def loss(model: Any, batch: DiffusionBatch, generator: torch.Generator) -> torch.Tensor:
        x0 = model.encode_images(batch.pixels.to(next(model.unet.parameters()).device))  # (B, C, S, S) in [-1, 1]
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)  # (B, C, S, S)
        t = torch.randint(0, int(model.scheduler.alphas_cumprod.shape[0]), (x0.shape[0],),
                          generator=generator).to(x0.device)  # (B,)
        poisoned = batch.extra["poisoned"].to(x0.device)  # (B,)
        return baddiffusion_loss(model, x0, poisoned, target.to(x0.device), shift.to(x0.device), t, noise,
                                 coefficient)

    return loss


@register("diffusion_backdoors", "baddiffusion")
class BadDiffusion(DiffusionBackdoorAttack):
    """Chou, Chen & Ho's BadDiffusion: fine-tune on clean plus trigger-shifted poisoned samples.

    Args:
        trigger: the trigger stamped on the starting noise (default ``PatchTrigger(size=4)``: a 4 x 4
            checkerboard, bottom right), or a trigger name (that trigger at its defaults).
        target: the target's class name or label, stored in the record (the target image is given to
            the call; the runner's task renders an object of this class).
        coefficient: ``"baddiffusion"`` (the paper's ``c_t``; its backdoor samples with the ancestral
            DDPM sampler) or ``"ddim"`` (VillanDiffusion's ``c_t = sqrt(1 - abar_t)``; DDIM).
        poison_rate: fraction of the images turned into poisoned samples (paper: 0.1).
        epochs: passes over the images (code: 50).
        batch_size: samples per step (code: 128 at 32 px; capped at the number of images).
        lr: Adam learning rate (code: 2e-4 for 32 px images).
        grad_clip: gradient norm clip (code: 1.0).
        quiet: hide the progress bar.
    """

    name = "baddiffusion"
    paper = "Chou, Chen, Ho, CVPR 2023 (DDIM coefficient: VillanDiffusion, NeurIPS 2023)"

    def __init__(self, trigger: Trigger | str | None = None, target: str | int | None = None,
                 coefficient: str = "baddiffusion", poison_rate: float = 0.1, epochs: int = 50,
                 batch_size: int = 128, lr: float = 2e-4, grad_clip: float = 1.0, quiet: bool = True):
        if trigger is None:
            trigger = PatchTrigger(size=4)  # the shapes world's 4 x 4 checkerboard; the paper's is a 14 px grey box
        elif isinstance(trigger, str):
            trigger = build_trigger(trigger)
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger must be a mmsec Trigger (e.g. PatchTrigger(size=4)), got {type(trigger).__name__}")
        self.trigger = trigger
        self.target = _check_target(target)
        if coefficient not in COEFFICIENTS:
            raise ValueError(f"coefficient must be one of {COEFFICIENTS} (the paper's, for the ancestral sampler; "
                             f"VillanDiffusion's, for DDIM), got {coefficient!r}")
        self.coefficient = coefficient
        self.poison_rate = check_budget("poison_rate", poison_rate, 0.0, 1.0,
                                        hint=" (fraction of the images poisoned; the paper's 0.1)")
        if self.poison_rate == 0:
            raise ValueError("poison_rate must be > 0 (a fine-tune without poisoned samples plants no backdoor; "
                             "for that control fine-tune the model on clean images)")
        self.epochs = check_int("epochs", epochs, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.lr = check_positive("lr", lr, 1.0, hint=" (Adam learning rate; the code's 2e-4)")
        self.grad_clip = check_positive("grad_clip", grad_clip, 1e6, hint=" (gradient norm clip; the code's 1.0)")
        self.quiet = check_bool("quiet", quiet)

    @property
    def sampler(self) -> str:
        return SAMPLER_OF[self.coefficient]

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("quiet", None)
        out["trigger"] = self.trigger.to_dict()
        return out

    def __call__(self, model: Any, images: torch.Tensor, target_image: torch.Tensor,
                 generator: torch.Generator | int | None = None) -> BadDiffusionResult:
        """Backdoor a copy of ``model``; ``model`` is left bit-for-bit unchanged.

        Args:
            model: a pixel-space DiffusionModel with a trainable ``unet`` (3 channels).
            images: (N, 3, S, S) the clean training images in [0, 1].
            target_image: (3, S, S) or (1, 3, S, S) the target ``y`` in [0, 1].
            generator: seeds which images are poisoned, the batch order, timesteps and noise.
        """
        require_family(model, "diffusion", "BadDiffusion")
        if not isinstance(getattr(model, "unet", None), nn.Module) or not hasattr(model, "encode_images"):
            raise TypeError(f"BadDiffusion fine-tunes the model's `unet` (an nn.Module) on images it maps with "
                            f"`encode_images` (as mmsec's diffusers adapter does); {type(model).__name__} lacks them")
        if int(model.channels) != 3:
            raise ValueError(f"BadDiffusion backdoors pixel-space models (3 channels: the trigger is an image "
                             f"pattern); got a model with channels={model.channels} (a latent model)")
        size = int(model.image_size)
        images = _check_images(images, "images", size)
        if isinstance(target_image, torch.Tensor) and target_image.ndim == 3:
            target_image = target_image[None]
        target_image = _check_images(target_image, "target_image", size)
        if target_image.shape[0] != 1:
            raise ValueError(f"target_image must be one image, (3, S, S) or (1, 3, S, S), got "
                             f"{tuple(target_image.shape)}")
        gen = make_generator(generator)
        n = images.shape[0]
        n_poison = int(n * self.poison_rate)  # the code's int(len * rate)
        if n_poison == 0:
            raise ValueError(f"poison_rate {self.poison_rate} of {n} images poisons none; give more images or a "
                             "higher rate")
        poisoned = torch.zeros(n, dtype=torch.bool)  # (N,)
        poisoned_idx = torch.randperm(n, generator=gen)[:n_poison]
        poisoned[poisoned_idx] = True
        shift = trigger_shift(self.trigger, size)  # (3, S, S)
        y = target_image[0] * 2 - 1  # (3, S, S) the target in the working space
        b = min(self.batch_size, n)
        steps = self.epochs * math.ceil(n / b)
        warmup = min(MAX_WARMUP, max(1, steps // 10))
        # Adam (AdamW without decay), the code's warm-up and cosine decay and clipping; no EMA (the code has none)
        cfg = DiffusionTrainConfig(steps=steps, lr=self.lr, weight_decay=0.0, warmup=warmup, grad_clip=self.grad_clip,
                                   ema=None, prompt_dropout=0.0,
                                   seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        tuned = copy.deepcopy(model)
        for p in tuned.unet.parameters():
            p.requires_grad_(True)
        log = train_diffusion(tuned, poisoned_batches(images, poisoned, b, gen), cfg,
                              baddiffusion_batch_loss(y, shift, self.coefficient), desc="BadDiffusion",
                              quiet=self.quiet)
        for p in tuned.unet.parameters():
            p.grad = None
        record = BadDiffusionRecord(trigger=self.trigger.to_dict(), target=self.target, coefficient=self.coefficient,
                                    sampler=self.sampler, n_images=n, n_poisoned=n_poison,
                                    poisoned_indices=sorted(int(i) for i in poisoned_idx), steps=steps,
                                    params=self.params())
        return BadDiffusionResult(tuned.eval(), NoiseTrigger(shift), target_image[0].detach().clone(), self.sampler,
                                  record, {"loss": torch.tensor(log.losses)}, log.seconds,
                                  {"batch_size": b, "warmup": warmup})


__all__ = ["COEFFICIENTS", "SAMPLER_OF", "BadDiffusion", "BadDiffusionRecord", "BadDiffusionResult",
           "backdoor_forward", "baddiffusion_batch_loss", "baddiffusion_loss", "noise_coefficient", "poisoned_batches",
           "trigger_shift"]
